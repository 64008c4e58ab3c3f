"""The one training loop. Methods hook in (loss, gradients, schedule); everything else is shared.

Selection (train.selection) is on the validation split by default, and the selected checkpoint's test
accuracy is the headline figure. Because the literature picks its best epoch on test, every run also
records the best test accuracy over epochs, labelled as that optimistic protocol wherever it is shown. Each
epoch ends with a checkpoint (model, optimiser, schedule, random states, method state), so an interrupted
run resumes where it stopped and ends with the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import ctypes
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avbias.errors import ParamsError
from avbias.io import atomic_path, read_json, write_json
from avbias.methods import Method, create_method, run_params
from avbias.metrics import accuracy, macro_f1, per_class_accuracy
from avbias.models.fusion import AVClassifier
from avbias.models.weights import arch_of, load_encoder, pretrained_cfg, read_state_dict, weights_files
from avbias.shards import read_manifest
from avbias.train.loader import Augment, BatchStream, visual_inputs

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3     # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> None:
    """Keep freed heap memory in the process (glibc). By default glibc hands each step's large convolution
    buffers back to the OS and page-faults them in again at the next step: 5-10% of a CPU epoch in system time
    (docs/benchmarks.md, issue 22). Where memory comes from changes no number."""
    if platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL("libc.so.6")
    # Both: either call alone also fixes the mmap threshold at 128 KiB, which faults more (measured).
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)    # glibc's largest: buffers up to 32 MiB come from the heap
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)     # and the heap is not shrunk when they are freed


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def cnn14_args(state: dict[str, Any]) -> dict[str, Any]:
    """A CNN14 encoder of the checkpoint's size: its width and mel bins (PANNs': 64 and 64)."""
    key = next(k for k in state if k.endswith("conv_block1.conv1.weight"))
    bins = next(k for k in state if k.endswith("bn0.running_mean"))
    return {"arch": "cnn14", "width": state[key].shape[0], "mel_bins": state[bins].shape[0]}


def encoder_lr_groups(model: AVClassifier, modalities: tuple[str, ...], encoder_lr: float) -> list[dict[str, Any]]:
    """The trainable parameters as optimiser groups: those modalities' encoders at encoder_lr (pretrained
    encoders fine-tuned with a lower lr), the rest at train.lr."""
    slow = {id(p) for m in modalities for p in model.encoders[m].parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in slow]}]
    if slow_params := [p for p in trainable if id(p) in slow]:
        groups.append({"params": slow_params, "lr": encoder_lr})
    return groups


def make_optimizer(params: list[Any], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    optimizer = torch.optim.AdamW if cfg["optimizer"] == "adamw" else torch.optim.Adam
    return optimizer(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def environment(device: torch.device) -> dict[str, Any]:
    """What a run was computed on: conclusions must not depend on it, the last digits may."""
    return {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
            "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
            "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "python": platform.python_version(), "machine": platform.machine()}


def summarise(pred: dict[str, np.ndarray], modalities: tuple[str, ...], num_classes: int) -> dict[str, Any]:
    labels = pred["labels"]
    fused = pred["logits"].argmax(1)
    logits = torch.from_numpy(pred["logits"])
    out: dict[str, Any] = {
        "acc": accuracy(fused, labels),
        "macro_f1": macro_f1(fused, labels, num_classes),
        "loss": float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))),
        "per_class_acc": per_class_accuracy(fused, labels, num_classes).tolist(),
    }
    if len(modalities) > 1:
        for m in modalities:
            out[f"acc_{m}"] = accuracy(pred[f"logits_{m}"].argmax(1), labels)
    return out


class Trainer:
    """One (dataset, method, seed) run: data, model, optimiser and the loop."""

    def __init__(self, method: Method, features_dir: Path, params: dict[str, Any], seed: int,
                 pretrained: list[Path], in_memory: str = "auto", num_workers: int = 0) -> None:
        cfg, model_cfg = params["train"], params["model"]
        self.cfg, self.method, self.seed = cfg, method, seed
        self.device = resolve_device(cfg["device"])
        self.classes = read_json(features_dir / "extract.json")["classes"]
        self.num_classes = len(self.classes)
        self.augment = Augment(cfg["frame_augment"], tuple(cfg["crop_scale"]), cfg["frame_augment_scope"])
        counts = read_manifest(features_dir)["split"].value_counts()
        self.splits = tuple(s for s in ("train", "val", "test") if counts.get(s, 0) > 0)   # val may be absent
        self.data = {s: BatchStream(features_dir, s, self.device, in_memory, num_workers) for s in self.splits}
        # External weights (ImageNet, AudioSet) first; a pretrain-then-fuse method's unimodal runs override them.
        external = weights_files(model_cfg, method.modalities)
        states = {m: read_state_dict(w.path) for m, w in external.items()}
        encoder_args = {m: cnn14_args(state) for m, state in states.items() if arch_of(state, m) == "cnn14"}
        self.model = AVClassifier(method.modalities, self.num_classes, model_cfg["width"],
                                  method.fusion or model_cfg["fusion"], method.aux_heads,
                                  frame_pooling=cfg["frame_pooling"], head_init=model_cfg["head_init"],
                                  encoder_args=encoder_args)
        self.initialisation = {m: load_encoder(self.model.encoders[m], w, states[m]) for m, w in external.items()}
        self.model.to(self.device)
        load_pretrained_encoders(self.model, pretrained, method)
        encoders_mode = pretrained_cfg(model_cfg).get("encoders", "finetune")
        self.frozen = (method.modalities if method.freeze_encoders
                       else tuple(external) if encoders_mode == "frozen" else ())
        for m in self.frozen:
            self.model.encoders[m].requires_grad_(False)
        self.cuda = self.device.type == "cuda"
        if self.cuda:   # channels_last + bf16 autocast: tensor-core convolutions; no loss scaling needed
            self.model = self.model.to(memory_format=torch.channels_last)
        slow = tuple(external) if encoders_mode == "lower_lr" else ()
        lr_scale = pretrained_cfg(model_cfg).get("encoder_lr_scale", 1.0)
        self.optimizer = make_optimizer(encoder_lr_groups(self.model, slow, cfg["lr"] * lr_scale), cfg)
        self.initialisation |= {"encoders": encoders_mode if external else "random"}
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=cfg["lr_step"],
                                                         gamma=cfg["lr_gamma"])
        self.generator = torch.Generator().manual_seed(seed)
        self.train_samples, self.train_seconds = 0, 0.0     # throughput: training steps only
        self.utilisation = [] if self.cuda and gpu_utilisation(self.device) is not None else None
        method.setup(self.model, self)

    @property
    def train_batches(self) -> int:
        """Optimiser steps per epoch, as len(train_loader) with the run's drop_last."""
        n, size = len(self.data["train"]), self.cfg["batch_size"]
        return n // size if self.cfg["drop_last"] else -(-n // size)

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else contextlib.nullcontext()

    def inputs(self, spec: torch.Tensor, frames: torch.Tensor, modalities: tuple[str, ...],
               train: bool) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if "audio" in modalities:
            out["audio"] = spec.float().unsqueeze(1)
            if self.cuda:
                out["audio"] = out["audio"].contiguous(memory_format=torch.channels_last)
        if "visual" in modalities:
            count = self.cfg["frames_per_sample"] if train else self.cfg["eval_frames"]
            count = frames.shape[1] if count == "all" else count
            out["visual"] = visual_inputs(frames, count, self.generator if train else None, self.augment,
                                          random_window=self.cfg["frame_window"] == "random")
        return out

    def set_train_mode(self) -> None:
        self.model.train()
        for m in self.frozen:
            self.model.encoders[m].eval()      # a frozen encoder keeps its pretrained BatchNorm statistics

    @torch.no_grad()
    def predict(self, split: str, fraction: float = 1.0, zeroed: tuple[str, ...] = (),
                train_inputs: bool = False) -> dict[str, np.ndarray]:
        """Fused and per-modality logits and features of a split (eval mode, no augmentation); with
        fraction < 1, of a random subset (drawn from the run's generator, so runs stay reproducible); with
        `zeroed`, those modalities' inputs replaced by zeros and still encoded (BalanceBenchmark's Shapley);
        with `train_inputs`, the inputs as training sees them (frame choice and augmentation; PMR)."""
        was_training = self.model.training
        self.model.eval()
        data = self.data[split]
        order = torch.arange(len(data))
        if fraction < 1:
            order = (torch.randperm(len(data), generator=self.generator)[: max(1, int(len(data) * fraction))]
                     .sort().values)
        parts: dict[str, list[np.ndarray]] = {}
        for _idx, spec, frames, labels in data.batches(order, self.cfg["batch_size"]):
            inputs = self.inputs(spec, frames, self.method.modalities, train=train_inputs)
            inputs.update({m: torch.zeros_like(inputs[m]) for m in zeroed})
            with self.autocast():
                out = self.model(inputs)
            arrays = {"logits": out.logits, "labels": labels}
            arrays.update({f"features_{m}": f for m, f in out.features.items()})
            arrays.update({f"logits_{m}": z for m, z in out.modality_logits.items()})
            arrays.update({f"aux_logits_{m}": z for m, z in out.aux_logits.items()})
            for key, value in arrays.items():
                parts.setdefault(key, []).append(value.cpu().numpy() if key == "labels"
                                                 else value.float().cpu().numpy())
        if was_training:
            self.set_train_mode()
        return {key: np.concatenate(value) for key, value in parts.items()}

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.set_train_mode()
        train, method = self.data["train"], self.method
        order = torch.randperm(len(train), generator=self.generator)
        # Running sums stay on the device: no host synchronisation per step.
        loss_sum, correct, seen, steps, extras = (torch.zeros((), device=self.device),
                                                  torch.zeros((), device=self.device), 0, 0, {})
        branch_correct = {m: torch.zeros((), device=self.device) for m in method.modalities}
        size = self.cfg["batch_size"]
        for step, (idx, spec, frames, labels) in enumerate(train.batches(order, size)):
            if len(idx) < 2 or (self.cfg["drop_last"] and len(idx) < size):   # BatchNorm cannot train on one sample
                continue
            if self.utilisation is not None and step % 50 == 0:    # None on CPU: nothing sampled
                self.utilisation.append(gpu_utilisation(self.device))
            # One optimiser step per pass; MLA makes one pass per modality on every batch.
            for pass_index, modalities in enumerate(method.step_modalities(step)):
                with self.autocast():
                    output = self.model(self.inputs(spec, frames, modalities, train=True))
                    loss = method.loss(output, labels, epoch)
                method.zero_grad(self.optimizer, pass_index)
                for key, value in method.backward(self.model, output, labels, epoch, loss).items():
                    extras.setdefault(key, []).append(value)
                self.optimizer.step()
                loss_sum += loss.detach().float()
                seen, steps = seen + len(idx), steps + 1
                if output.logits.numel():
                    correct += (output.logits.argmax(1) == labels).sum()
                for m, z in output.modality_logits.items():
                    branch_correct[m] += (z.argmax(1) == labels).sum()
        self.scheduler.step()
        row = {"train_loss": float(loss_sum) / max(steps, 1), "train_acc": float(correct) / max(seen, 1)}
        self.train_samples += seen          # float() above synchronised with the device: the steps are done
        if len(method.modalities) > 1:
            row.update({f"train_acc_{m}": float(c) / max(seen, 1) for m, c in branch_correct.items()})
        return row | {key: float(np.mean(v)) for key, v in extras.items()}

    def checkpoint_state(self, epoch: int, curve: list[dict[str, Any]], best: dict[str, Any]) -> dict[str, Any]:
        return {
            "epoch": epoch, "curve": curve, "best": best, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.cuda else None, "method": self.method.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if self.cuda and state["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.method.load_state(state["method"])


def apply_memory_fraction(device: torch.device) -> float | None:
    """Bound this process's share of GPU memory when several training jobs share the GPU (avbias.train.gpu exports
    AVBIAS_GPU_MEMORY_FRACTION = 1 / resources.train_gpu_slots); nothing on CPU."""
    value = os.environ.get("AVBIAS_GPU_MEMORY_FRACTION")
    if device.type != "cuda" or not value:
        return None
    torch.cuda.set_per_process_memory_fraction(float(value), device)
    log.info("GPU memory bounded to %.3g of the device (shared by training jobs)", float(value))
    return float(value)


def gpu_utilisation(device: torch.device) -> int | None:
    """Percent of the last sample period the GPU ran kernels (all processes on it; NVML), None where unknown."""
    try:
        return int(torch.cuda.utilization(device))
    except Exception:   # no pynvml/amdsmi, or the driver refuses: not worth failing a run for
        return None


def throughput(trainer: Trainer, curve: list[dict[str, Any]], memory_fraction: float | None) -> dict[str, Any]:
    """Training speed (samples/s: training steps of this process's epochs, so after a resume only the epochs
    it ran; seconds per epoch: whole epochs, validation and test included, of the run) and GPU footprint."""
    cuda = trainer.device.type == "cuda"
    samples = trainer.utilisation or []
    return {
        "train_samples_per_s": trainer.train_samples / trainer.train_seconds if trainer.train_seconds else None,
        "train_seconds": trainer.train_seconds, "train_samples": trainer.train_samples,
        "seconds_per_epoch": float(np.mean([row["seconds"] for row in curve])) if curve else None,
        "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated(trainer.device) if cuda else None,
        "gpu_memory_fraction": memory_fraction,
        "gpu_utilisation_pct": float(np.mean(samples)) if samples else None,
        "gpu_utilisation_samples": len(samples),
        "device": str(trainer.device),
        "device_name": torch.cuda.get_device_name(trainer.device) if cuda else (platform.processor() or
                                                                                platform.machine()),
    }


def best_test_over_epochs(curve: list[dict[str, Any]]) -> dict[str, Any]:
    """The figure most papers report: the best test accuracy over all epochs (selected on test)."""
    best = max(curve, key=lambda row: row["test_acc"])
    return {"best_test_acc": best["test_acc"], "epoch": best["epoch"],
            "label": "literature protocol: selected on test, optimistic"}


def load_pretrained_encoders(model: AVClassifier, checkpoints: list[Path], method: Method) -> None:
    """Copy each pretrained run's encoder into the model (the method's `pretrained` runs, via the DAG)."""
    if len(checkpoints) != len(method.pretrained):
        raise ValueError(f"method {method.name!r} needs the model.pt of runs {list(method.pretrained)} "
                         f"(--pretrained), got {len(checkpoints)}")
    for path in checkpoints:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        for m in saved["modalities"]:
            prefix = f"encoders.{m}."
            model.encoders[m].load_state_dict({k[len(prefix):]: v for k, v in saved["state_dict"].items()
                                               if k.startswith(prefix)})
            log.info("encoder %s initialised from %s", m, path)


def train_run(dataset: str, method_name: str, seed: int, features_dir: str | Path, out_dir: str | Path,
              params: dict[str, Any], threads: int = 1, pretrained: list[Path] | None = None,
              in_memory: str = "auto", num_workers: int = 0) -> dict[str, Any]:
    """Train one (dataset, method, seed) run; write model.pt, metrics.json, curve.csv, outputs.npz."""
    out_dir = Path(out_dir)
    keep_freed_memory()
    torch.set_num_threads(threads)
    # AVBIAS_ONEDNN=0 turns oneDNN off: the verdict-stability check compares conclusions with and without it.
    torch.backends.mkldnn.enabled = os.environ.get("AVBIAS_ONEDNN", "1") != "0"
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    method = create_method(method_name, params, dataset)
    memory_fraction = apply_memory_fraction(resolve_device(params["train"]["device"]))   # before data is on the GPU
    trainer = Trainer(method, Path(features_dir), params, seed, [Path(p) for p in pretrained or []], in_memory,
                      num_workers)
    recorded = run_params(params, method_name, dataset)
    has_val = "val" in trainer.splits
    if trainer.cfg["selection"] == "val" and not has_val:
        raise ParamsError(f"{features_dir}: no validation split (splits.val_fraction 0), so train.selection must be "
                          "'last' (or carve a validation split out of train)")
    curve: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val_acc": -1.0, "epoch": -1, "state": None}
    start_epoch = 0
    checkpoint_path = out_dir / CHECKPOINT
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=trainer.device, weights_only=False)
        if state.get("params") == recorded:
            trainer.restore(state)
            curve, best, start_epoch = state["curve"], state["best"], state["epoch"] + 1
            log.info("resuming %s from its checkpoint after epoch %d", out_dir, state["epoch"])
        else:
            log.info("ignoring %s: trained with other params", checkpoint_path)

    for epoch in range(start_epoch, trainer.cfg["epochs"]):
        started = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch}
        row.update(method.epoch_start(trainer.model, epoch, trainer))
        train_started = time.perf_counter()
        row.update(trainer.train_epoch(epoch))
        trainer.train_seconds += time.perf_counter() - train_started
        val = summarise(trainer.predict("val"), method.modalities, trainer.num_classes) if has_val else {}
        test_acc = summarise(trainer.predict("test"), method.modalities, trainer.num_classes)["acc"]
        if has_val:
            row.update({"val_loss": val["loss"], "val_acc": val["acc"]})
            row.update({f"val_acc_{m}": val[f"acc_{m}"] for m in method.modalities if f"acc_{m}" in val})
        row.update({"test_acc": test_acc, "lr": trainer.scheduler.get_last_lr()[0],
                    "seconds": time.perf_counter() - started})
        curve.append(row)
        log.info("epoch %d: %s", epoch, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        if trainer.cfg["selection"] == "last" or val["acc"] > best["val_acc"]:
            best = {"val_acc": val.get("acc", float("nan")), "epoch": epoch,
                    "state": copy.deepcopy(trainer.model.state_dict())}
        with atomic_path(checkpoint_path) as tmp:
            torch.save(trainer.checkpoint_state(epoch, curve, best) | {"params": recorded}, tmp)

    trainer.model.load_state_dict(best["state"])
    outputs = {s: trainer.predict(s) for s in trainer.splits if s != "train"}
    if len(method.modalities) > 1:   # coalitions of BalanceBenchmark's Shapley value: absent inputs zeroed
        for absent in [*((m,) for m in method.modalities), method.modalities]:
            zeroed = trainer.predict("test", zeroed=absent)
            outputs["test"][f"logits_zero_{'_'.join(absent)}"] = zeroed["logits"]
    val, test = (summarise(outputs[s], method.modalities, trainer.num_classes) if s in outputs else None
                 for s in ("val", "test"))
    metrics = {
        "dataset": dataset, "method": method_name, "seed": seed, "modalities": list(method.modalities),
        "fusion": trainer.model.fusion, "additive": trainer.model.head.additive,
        "classes": list(trainer.classes), "best_epoch": best["epoch"], "epochs": trainer.cfg["epochs"],
        "selection": trainer.cfg["selection"], "val": val, "test": test,
        "literature": best_test_over_epochs(curve),
        "environment": environment(trainer.device),
        "initialisation": trainer.initialisation,   # external encoder weights: source, file, sha256
        "throughput": throughput(trainer, curve, memory_fraction),
        "params": recorded,   # what this run was trained with (see share.prune_stale_runs)
    }
    _write_outputs(out_dir, trainer, outputs, metrics, curve)
    checkpoint_path.unlink(missing_ok=True)
    return metrics


def _write_outputs(out_dir: Path, trainer: Trainer, outputs: dict[str, dict[str, np.ndarray]],
                   metrics: dict[str, Any], curve: list[dict[str, Any]]) -> None:
    model = trainer.model
    arrays: dict[str, np.ndarray] = {"modalities": np.array(model.modalities)}
    weights, bias = model.head.decision_weights(), model.head.decision_bias()
    if weights is not None:     # linear per modality: the decision layer z = sum_m W_m f_m + b
        arrays["head_weight"] = torch.cat([weights[m] for m in model.modalities], 1).detach().float().cpu().numpy()
        arrays["head_bias"] = bias.detach().float().cpu().numpy()
        arrays["feature_dims"] = np.array([weights[m].shape[1] for m in model.modalities])
    for split, pred in outputs.items():
        arrays.update({f"{split}_{key}": value for key, value in pred.items()})
        arrays[f"{split}_clip_ids"] = np.array(trainer.data[split].clip_ids)
    with atomic_path(out_dir / "outputs.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    with atomic_path(out_dir / "model.pt") as tmp:
        torch.save({"state_dict": model.state_dict(), "modalities": model.modalities, "fusion": model.fusion,
                    "metrics": metrics}, tmp)
    with atomic_path(out_dir / "curve.csv") as tmp:
        fields = list(dict.fromkeys(k for row in curve for k in row))
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(curve)
    # metrics.json last: it is the rule's declared output, so it marks the run complete.
    write_json(out_dir / "metrics.json", metrics)
