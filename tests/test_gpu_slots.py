"""Several training runs sharing a GPU through slots (avbias.train.gpu), and the throughput block of metrics.json.

No GPU is needed: AVBIAS_GPU_COUNT simulates the devices, the slot locks live in a temporary folder
(AVBIAS_GPU_LOCK_DIR), and the runs train on the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from avbias.methods import run_params_json
from avbias.train.gpu import MEMORY_FRACTION_ENV, GpuSlotsError, claim_gpu, release_all

SHIPPED = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
PARAMS = {
    "model": SHIPPED["model"] | {"width": 8},
    "train": SHIPPED["train"] | {"epochs": 2, "batch_size": 8, "lr": 0.05, "lr_step": 2, "device": "cpu"},
    "methods": SHIPPED["methods"],
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch):
    for name in ("CUDA_VISIBLE_DEVICES", MEMORY_FRACTION_ENV, "AVBIAS_GPU_COUNT", "AVBIAS_GPU_LOCK_DIR"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    release_all()


def test_claims_fill_devices_evenly_then_fail_clearly(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """2 GPUs x 2 slots: claims go to devices 0, 1, 0, 1 (least loaded first); the fifth names the knobs.
    Each claim opens its own lock files, and flock locks belong to the open file, so claims made by one
    process exclude each other exactly as claims of separate jobs do."""
    devices = []
    for _ in range(4):
        clean_env.delenv("CUDA_VISIBLE_DEVICES", raising=False)     # each claim stands for a fresh job
        devices.append(claim_gpu(1, 2, count=2, lock_dir=tmp_path))
        assert os.environ["CUDA_VISIBLE_DEVICES"] == devices[-1] and os.environ[MEMORY_FRACTION_ENV] == "0.5"
    assert devices == ["0", "1", "0", "1"]
    clean_env.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(GpuSlotsError, match=r"resources\.train_gpu_slots.*--resources gpu=4"):
        claim_gpu(1, 2, count=2, lock_dir=tmp_path)
    release_all()                                                   # the jobs exit: their slots are free again
    assert claim_gpu(1, 2, count=2, lock_dir=tmp_path) == "0"


def test_one_device_with_slots_still_claims(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    assert claim_gpu(1, 1, count=1, lock_dir=tmp_path) is None      # one GPU, one slot: nothing to choose
    assert claim_gpu(0, 2, count=1, lock_dir=tmp_path) is None      # a CPU job claims nothing
    assert claim_gpu(1, 2, count=0, lock_dir=tmp_path) is None      # no GPU
    assert claim_gpu(1, 2, count=1, lock_dir=tmp_path) == "0"
    clean_env.delenv("CUDA_VISIBLE_DEVICES")
    assert claim_gpu(1, 2, count=1, lock_dir=tmp_path) == "0"
    clean_env.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(GpuSlotsError):
        claim_gpu(1, 2, count=1, lock_dir=tmp_path)
    clean_env.setenv("CUDA_VISIBLE_DEVICES", "3")                   # a scheduler's choice stands
    clean_env.delenv(MEMORY_FRACTION_ENV)
    assert claim_gpu(1, 4, count=1, lock_dir=tmp_path) == "3" and os.environ[MEMORY_FRACTION_ENV] == "0.25"


def _train_cmd(features: Path, method: str, seed: int, out: Path, *gpu_args: str) -> list[str]:
    return [sys.executable, "-m", "avbias", "train", "--params", run_params_json(PARAMS, method, "synth_cremad"),
            "--dataset", "synth_cremad", "--method", method, "--seed", str(seed), "--features", str(features),
            "--out", str(out), "--threads", "1", *gpu_args]


def _env(lock_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", MEMORY_FRACTION_ENV)}
    return env | {"AVBIAS_GPU_COUNT": "1", "AVBIAS_GPU_LOCK_DIR": str(lock_dir)}


@pytest.mark.slow
def test_two_runs_share_one_device_and_match_runs_made_alone(tmp_path: Path, features: Path) -> None:
    """Two `avbias train` processes on one (simulated) device with 2 slots: both finish, each in its own
    slot, with the metrics of the same runs made one at a time; a third finds no slot and says why."""
    runs = [("baseline", 0), ("unimodal_audio", 1)]
    procs = [subprocess.Popen(_train_cmd(features, m, s, tmp_path / "shared" / m, "--gpus", "1", "--gpu-slots", "2"),
                              env=_env(tmp_path / "locks"), stderr=subprocess.PIPE, text=True) for m, s in runs]
    logs = [proc.communicate(timeout=600)[1] for proc in procs]
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log[-3000:]
    claimed = [[line.split("using GPU 0 slot ")[1][0] for line in log.splitlines() if "using GPU 0 slot" in line]
               for log in logs]
    slots = sorted(s for per_run in claimed for s in per_run)
    assert slots == ["0", "1"], logs                                 # held at the same time: one slot each
    for method, seed in runs:                                        # the same runs, one at a time, no GPU claim
        subprocess.run(_train_cmd(features, method, seed, tmp_path / "alone" / method), env=_env(tmp_path / "locks"),
                       check=True, capture_output=True, timeout=600)
        shared, alone = (json.loads((tmp_path / d / method / "metrics.json").read_text()) for d in ("shared", "alone"))
        assert shared["val"] == alone["val"] and shared["test"] == alone["test"], method
        assert shared["best_epoch"] == alone["best_epoch"], method
        assert shared["throughput"]["train_samples_per_s"] > 0 and shared["throughput"]["device"] == "cpu"

    # Both slots held (here, by this test's process): a third job fails at once, naming the knobs.
    import avbias.train.gpu as gpu

    env = _env(tmp_path / "locks2")
    try:
        for _ in range(2):
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            gpu.claim_gpu(1, 2, count=1, lock_dir=tmp_path / "locks2")
        cmd = _train_cmd(features, "baseline", 0, tmp_path / "third", "--gpus", "1", "--gpu-slots", "2")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    finally:
        release_all()
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        os.environ.pop(MEMORY_FRACTION_ENV, None)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "avbias: error: all 2 GPU slots" in proc.stderr and "--resources gpu=2" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_metrics_record_throughput(tmp_path: Path, features: Path) -> None:
    from avbias.train.loop import train_run

    params = {**PARAMS, "train": {**PARAMS["train"], "epochs": 1}}
    metrics = train_run("synth_cremad", "baseline", 0, features, tmp_path, params)
    speed = metrics["throughput"]
    assert set(speed) >= {"train_samples_per_s", "seconds_per_epoch", "peak_gpu_memory_bytes", "gpu_utilisation_pct",
                          "device_name", "gpu_memory_fraction"}
    assert speed["train_samples_per_s"] > 0 and speed["train_samples"] == 32 and speed["seconds_per_epoch"] > 0
    assert speed["peak_gpu_memory_bytes"] is None and speed["gpu_utilisation_pct"] is None     # CPU
    assert json.loads((tmp_path / "metrics.json").read_text())["throughput"] == speed
