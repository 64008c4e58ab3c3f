"""GPU study (issue 16): one run alone against the compute floor, N runs packed on one GPU, and the default
study's GPU-hours projected from both.

Data: a synthetic feature set of the real CREMA-D recipe's shapes (7,442 clips, 80/10/10; 257 x 188 float16
spectrograms; extract.cremad.num_frames frames of 224 x 224 x 3 uint8 per clip, as params.yaml says), random
content (speed does not depend on it). Model and schedule: params.yaml (ResNet18 width 64, batch 64, SGD).

(a) alone: per method, one warm-up epoch and one timed epoch of the real loop (`Trainer.train_epoch`: the
    loader, augmentation, the method's loss and gradient hooks, the optimiser step) against the compute floor
    (the same model's forward + backward + step on one batch already prepared on the device, as many steps as
    the epoch has); FLOPs of one floor step (torch.utils.flop_counter) give the achieved TFLOP/s.
(b) packed: N = 1, 2, 4, 8 training processes started together on the device, each claiming a slot
    (avbias.train.gpu: --gpu-slots N, memory bounded to 1/N) and training `--pack-epochs` epochs of the baseline with
    validation and test every epoch (what an epoch of a study run costs). Aggregate epochs per hour: from the
    wall time of the pack (start-up and warm-up included: pessimistic) and from each run's last epoch (steady
    state: what 100-epoch runs see).
(c) torch.compile: not measured. The training loop has no compile switch (resources.train_compile): the loop
    calls `self.model` directly and checkpoints its state_dict, so compiling means keeping the original
    module for state_dict/restore and a compiled callable for the steps, a change to Trainer beyond issue 16's
    scope. `--compiled-floor` (off by default) times the compute floor with a compiled model only, as an upper
    bound on what compiling could buy.

Every part is time-boxed (--budget-s in all, default 420 s): what does not fit is skipped and said so.

    bash benchmarks/study_gpu.sh OUT_DIR                        # on a GPU (about 5-7 minutes)
    python benchmarks/study_gpu.py --smoke                      # anywhere: tiny sizes, checks the script
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import random_features, timed_epoch  # noqa: E402

from avbias.config import REPO_ROOT  # noqa: E402

# Dense bf16 tensor-core peaks (no sparsity), from the vendors' data sheets; None: unknown device.
BF16_PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0),
                    ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10", 125.0)]
# The default study (params.yaml run): datasets and their epoch cost relative to CREMA-D.
STUDY_DATASETS = {"cremad": 1.0, "kinetics_sounds": 2.5}
SEEDS, EPOCHS = 3, 100
ALONE_METHODS = "baseline,unimodal_audio,unimodal_visual,ogm_ge,mla,gblending,mmpareto"


def bf16_peak(name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in name), None)


def study_params(width: int, batch: int, epochs: int) -> dict[str, Any]:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["model"]["width"] = width
    params["train"].update(batch_size=batch, epochs=epochs)
    return params


class Clock:
    def __init__(self, budget_s: float) -> None:
        self.start, self.budget_s = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()


class GpuSampler:
    """nvidia-smi every second in a thread: device utilisation and memory used (all processes)."""

    def __init__(self) -> None:
        self.util: list[float] = []
        self.mem_mib: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True) if shutil.which("nvidia-smi") else None

    def _run(self) -> None:
        while not self._stop.is_set():
            query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
            out = subprocess.run(query, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                util, mem = out.stdout.splitlines()[0].split(",")
                self.util.append(float(util))
                self.mem_mib.append(float(mem))
            self._stop.wait(1.0)

    def __enter__(self) -> GpuSampler:
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def summary(self) -> dict[str, float | None]:
        return {"gpu_util_mean_pct": sum(self.util) / len(self.util) if self.util else None,
                "gpu_mem_used_max_gib": max(self.mem_mib) / 1024 if self.mem_mib else None}


def measure_alone(name: str, features: Path, params: dict[str, Any], compiled_floor: bool) -> dict[str, Any]:
    """One method: a warm-up and a timed epoch of the real loop, then the compute floor, FLOPs per step."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from avbias.methods import create_method
    from avbias.train.loop import Trainer

    method = create_method(name, params, "cremad")
    torch.manual_seed(0)
    trainer = Trainer(method, features, params, 0, [], "auto", 0)
    cuda = trainer.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    loop_s = timed_epoch(trainer)
    batch = params["train"]["batch_size"]
    steps = -(-len(trainer.data["train"]) // batch)
    _, spec, frames, labels = next(trainer.data["train"].batches(torch.arange(batch), batch))
    inputs = trainer.inputs(spec, frames, method.modalities, train=True)
    model, optimizer = trainer.model, trainer.optimizer

    def floor_step(module: Any = model) -> None:
        with trainer.autocast():
            out = module(inputs)
            logits = out.logits if out.logits.numel() else next(iter(out.modality_logits.values()))
            loss = torch.nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        floor_step()
    flops = counter.get_total_flops()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        floor_step()
    sync()
    floor_s = time.perf_counter() - t0
    row = {"method": name, "steps": steps, "loop_s_per_epoch": loop_s, "floor_s_per_epoch": floor_s,
           "ratio": loop_s / floor_s, "gflop_per_step": flops / 1e9,
           "loop_tflops": flops * steps / loop_s / 1e12, "floor_tflops": flops * steps / floor_s / 1e12,
           "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
    if compiled_floor:
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        floor_step(compiled)                                      # compiles
        sync()
        row["compile_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            floor_step(compiled)
        sync()
        row["compiled_floor_s_per_epoch"] = time.perf_counter() - t0
    return row


def part_alone(features: Path, params: dict[str, Any], methods: list[str], clock: Clock, box_s: float,
               threads: int, compiled_floor: bool) -> list[dict[str, Any]]:
    """(a) per method: real loop vs compute floor, s/epoch; FLOPs per step; achieved TFLOP/s."""
    import torch

    from avbias.methods import create_method

    torch.set_num_threads(threads)
    started, rows = time.perf_counter(), []
    for name in methods:
        if create_method(name, params, "cremad").pretrained:
            rows.append({"method": name, "skipped": True, "why": "needs pretrained runs"})
        elif time.perf_counter() - started > box_s or clock.left() < 30:
            rows.append({"method": name, "skipped": True, "why": "time box"})
        else:
            rows.append(measure_alone(name, features, params, compiled_floor))
        print(f"(a) {json.dumps(rows[-1])}", flush=True)
        gc.collect()                                              # the trainer's split and model leave the GPU
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def child(args: argparse.Namespace) -> None:
    """One packed training process: what `avbias train --gpus 1 --gpu-slots N` does (claim, then train)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from avbias.train.gpu import claim_gpu

    claim_gpu(1, args.slots)                                      # before torch initialises CUDA
    from avbias.train.loop import train_run

    params = json.loads(Path(args.params_file).read_text())
    train_run("cremad", args.method, args.seed, args.features, args.run_out, params, threads=args.threads)


def part_packed(features: Path, params: dict[str, Any], packs: list[int], work: Path, clock: Clock,
                method: str, cores: int) -> list[dict[str, Any]]:
    """(b) N processes sharing the device through slots: aggregate epochs per hour."""
    params_file = work / "pack_params.json"
    params_file.write_text(json.dumps(params))
    env = dict(os.environ)
    if "CUDA_VISIBLE_DEVICES" in env and env["CUDA_VISIBLE_DEVICES"] not in ("", "0"):
        print(f"(b) CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} is set: kept (no slot locks, memory "
              "still bounded to 1/N)", flush=True)
    else:
        env.pop("CUDA_VISIBLE_DEVICES", None)
        env["AVBIAS_GPU_COUNT"] = "1"                            # one device (simulated on CPU): slots are claimed
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), env.get("PYTHONPATH", "")])
    rows = []
    for n in packs:
        expected = n * 40 + 40                                    # rough guard; the real limit is the budget
        if clock.left() < min(expected, 60):
            print(f"(b) N={n}: skipped, {clock.left():.0f} s of the budget left", flush=True)
            rows.append({"n": n, "skipped": True})
            continue
        pack = work / f"pack{n}"
        env_n = env | {"AVBIAS_GPU_LOCK_DIR": str(pack / "locks")}
        threads = max(1, cores // n)
        procs = []
        pack.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with GpuSampler() as sampler:
            for i in range(n):
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--slots", str(n), "--method", method,
                       "--seed", str(i), "--features", str(features), "--run-out", str(pack / f"run{i}"),
                       "--params-file", str(params_file), "--threads", str(threads)]
                log = open(pack / f"run{i}.log", "w")
                procs.append((subprocess.Popen(cmd, env=env_n, stdout=log, stderr=subprocess.STDOUT), log))
            deadline = time.perf_counter() + max(clock.left() - 5, 1)
            timed_out = False
            for proc, log in procs:
                try:
                    proc.wait(timeout=max(deadline - time.perf_counter(), 0.1))
                except subprocess.TimeoutExpired:
                    timed_out = True
                    proc.kill()
                    proc.wait()
                log.close()
        wall = time.perf_counter() - t0
        metrics = [pack / f"run{i}" / "metrics.json" for i in range(n)]
        done = [json.loads(p.read_text()) for p in metrics if p.is_file()]
        slots = sorted(line.split(" slot ")[1].split()[0] for i in range(n)
                       for line in (pack / f"run{i}.log").read_text().splitlines() if "using GPU" in line)
        row: dict[str, Any] = {"n": n, "wall_s": wall, "completed": len(done), "timed_out": timed_out,
                               "slots_claimed": slots, **sampler.summary()}
        if len(done) == n:
            import csv

            epochs = params["train"]["epochs"]
            peaks = [m["throughput"]["peak_gpu_memory_bytes"] for m in done if m["throughput"]["peak_gpu_memory_bytes"]]
            last = [float(list(csv.DictReader(open(pack / f"run{i}" / "curve.csv")))[-1]["seconds"]) for i in range(n)]
            row |= {"epochs_per_hour_wall": n * epochs * 3600 / wall,
                    "epochs_per_hour_steady": sum(3600 / s for s in last),
                    "last_epoch_s_mean": sum(last) / n,
                    "train_samples_per_s": sum(m["throughput"]["train_samples_per_s"] for m in done),
                    "peak_gpu_mem_gib_per_run": max(peaks) / 2**30 if peaks else None}
        else:
            for i in range(n):
                tail = (pack / f"run{i}.log").read_text().splitlines()[-5:]
                print(f"(b) N={n} run{i} log tail: {tail}", flush=True)
        rows.append(row)
        print(f"(b) {json.dumps(row)}", flush=True)
        if timed_out:
            print("(b) out of the time budget: larger packs skipped", flush=True)
            rows += [{"n": m, "skipped": True} for m in packs if m > n]
            break
    return rows


def projection(alone: list[dict[str, Any]], packed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """GPU-hours of the default study: 2 datasets (Kinetics-Sounds 2.5x CREMA-D per epoch) x 14 methods x 3 seeds
    x 100 epochs, at each packing level, in baseline-CREMA-D epochs per hour (measured), each method's epoch
    scaled by its alone loop time relative to the baseline's (methods not measured: 1)."""
    from avbias.methods import METHODS

    base = next((r["loop_s_per_epoch"] for r in alone if r.get("method") == "baseline" and not r.get("skipped")), None)
    factor = {r["method"]: r["loop_s_per_epoch"] / base for r in alone if base and not r.get("skipped")}
    epochs = sum(factor.get(m, 1.0) * f * SEEDS * EPOCHS for m in METHODS for f in STUDY_DATASETS.values())
    rows = []
    for r in packed:
        if r.get("epochs_per_hour_steady"):
            rows.append({"n": r["n"], "baseline_equiv_epochs": epochs,
                         "gpu_hours_steady": epochs / r["epochs_per_hour_steady"],
                         "gpu_hours_wall": epochs / r["epochs_per_hour_wall"]})
    return rows


def print_tables(alone: list[dict[str, Any]], packed: list[dict[str, Any]], proj: list[dict[str, Any]],
                 device: str, peak: float | None) -> None:
    def f(value: Any, digits: int = 2) -> str:
        return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    print(f"\n(a) one run alone on {device} (bf16 dense peak: {f(peak, 0)} TFLOP/s)")
    print("| method | loop s/epoch | floor s/epoch | loop/floor | GFLOP/step | loop TFLOP/s | % of bf16 peak "
          "| peak GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in alone:
        if r.get("skipped"):
            print(f"| {r['method']} | skipped ({r.get('why', 'time box')}) |||||||")
            continue
        pct = 100 * r["loop_tflops"] / peak if peak else None
        print(f"| {r['method']} | {f(r['loop_s_per_epoch'])} | {f(r['floor_s_per_epoch'])} | {f(r['ratio'], 3)} | "
              f"{f(r['gflop_per_step'], 1)} | {f(r['loop_tflops'], 3)} | {f(pct, 2)} | {f(r['peak_gpu_mem_gib'])} |")
    print("\n(b) N baseline runs packed on the device (slots), aggregate")
    print("| N | wall s | epochs/h (wall) | epochs/h (steady) | speed-up (steady) | last epoch s | samples/s "
          "| GPU util % | GPU mem max GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    one = next((r.get("epochs_per_hour_steady") for r in packed if r["n"] == 1), None)
    for r in packed:
        if r.get("skipped") or "epochs_per_hour_steady" not in r:
            print(f"| {r['n']} | {'skipped' if r.get('skipped') else 'failed'} ||||||||")
            continue
        speed = r["epochs_per_hour_steady"] / one if one else None
        print(f"| {r['n']} | {f(r['wall_s'], 1)} | {f(r['epochs_per_hour_wall'], 0)} | "
              f"{f(r['epochs_per_hour_steady'], 0)} | {f(speed)} | {f(r['last_epoch_s_mean'])} | "
              f"{f(r['train_samples_per_s'], 0)} | {f(r['gpu_util_mean_pct'], 0)} | {f(r['gpu_mem_used_max_gib'])} |")
    print("\n(c) torch.compile in the training loop: not measured (no resources.train_compile switch; see the "
          "docstring)")
    print("\nProjection: default study (cremad + kinetics_sounds at 2.5x, 14 methods, 3 seeds, 100 epochs) on this "
          "device")
    print("| N per GPU | baseline-equivalent CREMA-D epochs | GPU-hours (steady) | GPU-hours (wall, incl. start-up) "
          "|")
    print("|---|---|---|---|")
    for r in proj:
        print(f"| {r['n']} | {f(r['baseline_equiv_epochs'], 0)} | {f(r['gpu_hours_steady'], 1)} | "
              f"{f(r['gpu_hours_wall'], 1)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (width 8, 100 clips, 32 px), runs on CPU")
    parser.add_argument("--out", default=None, help="folder for study_gpu.json and the packed runs' logs")
    parser.add_argument("--work", default=None, help="scratch folder (features, runs); default a temporary one")
    parser.add_argument("--budget-s", type=float, default=420.0, help="time for the whole study, data included")
    parser.add_argument("--alone-s", type=float, default=None, help="time box of (a); default a third of the budget")
    parser.add_argument("--methods", default=ALONE_METHODS, help="methods of (a), comma-separated")
    parser.add_argument("--packs", default="1,2,4,8", help="N of (b), comma-separated")
    parser.add_argument("--pack-epochs", type=int, default=3, help="epochs of each packed run (the last is timed)")
    parser.add_argument("--compiled-floor", action="store_true", help="(a) also times the floor with torch.compile")
    parser.add_argument("--cores", type=int, default=None,
                        help="CPU threads in all (split between packed runs); default all cores, 1 with --smoke")
    # one packed process (internal)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--slots", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--method", default="baseline", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--features", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--params-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    clock = Clock(args.budget_s)
    if args.cores is None:      # on shared CPUs, 2 threads per process spin against each other: 1 for the smoke
        args.cores = 1 if args.smoke else os.cpu_count() or 1
    base = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    frames = base["extract"]["cremad"]["num_frames"]
    if args.smoke:
        clips, spec_shape, frame_size, width, batch = 100, (64, 48), 32, 8, 16
    else:
        clips, spec_shape, frame_size = 7442, (257, 188), 224
        width, batch = base["model"]["width"], base["train"]["batch_size"]
    work = Path(args.work or tempfile.mkdtemp(prefix="avbias-study-gpu-"))
    out = Path(args.out) if args.out else work
    out.mkdir(parents=True, exist_ok=True)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    peak = bf16_peak(device) if device != "cpu" else None
    print(f"study_gpu: {device}, torch {torch.__version__}, {'smoke' if args.smoke else 'full size'}: {clips} clips, "
          f"spectrogram {spec_shape}, {frames} frame(s) of {frame_size} px, width {width}, batch {batch}; "
          f"budget {args.budget_s:.0f} s; work in {work}", flush=True)
    t0 = time.perf_counter()
    (work / "features").mkdir(parents=True, exist_ok=True)
    features = random_features(work / "features", clips, spec_shape, frame_size, frames=frames)
    data_s = time.perf_counter() - t0
    print(f"data: {clips} clips written in {data_s:.1f} s", flush=True)

    alone_params = study_params(width, batch, 2)
    alone_box = args.alone_s if args.alone_s is not None else clock.left() / 3
    alone = part_alone(features, alone_params, args.methods.split(","), clock, alone_box, args.cores,
                       args.compiled_floor)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    packs = [int(n) for n in args.packs.split(",")]
    packed = part_packed(features, study_params(width, batch, args.pack_epochs), packs, work, clock, "baseline",
                         args.cores)
    proj = projection(alone, packed)
    print_tables(alone, packed, proj, device, peak)
    result = {"device": device, "torch": torch.__version__, "smoke": args.smoke, "clips": clips,
              "spec_shape": spec_shape, "frames": frames, "frame_size": frame_size, "width": width, "batch": batch,
              "bf16_peak_tflops": peak, "cores": args.cores,
              "data_s": data_s, "alone": alone, "packed": packed, "projection": proj,
              "compile": "not measured: no resources.train_compile switch in the training loop",
              "total_s": clock.elapsed()}
    (out / "study_gpu.json").write_text(json.dumps(result, indent=1))
    if out != work:
        for log in sorted(work.glob("pack*/run*.log")):
            shutil.copy2(log, out / f"{log.parent.name}_{log.name}")
    print(f"\nstudy_gpu: done in {clock.elapsed():.0f} s; results in {out / 'study_gpu.json'}", flush=True)
    if not args.work and out != work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
