"""The one training loop. Methods hook in (loss, gradient changes); everything else is shared.

Selection is on the validation split; the selected checkpoint is evaluated on test exactly once.
"""

from __future__ import annotations

import copy
import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avbias.analysis.metrics import accuracy, macro_f1, per_class_accuracy
from avbias.config import stage_params
from avbias.features.shards import SplitArrays, load_split
from avbias.io import atomic_path, read_json, write_json
from avbias.methods import create_method
from avbias.models.fusion import AVClassifier

log = logging.getLogger(__name__)

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)


@dataclass
class SplitTensors:
    """A split held in memory as tensors (uint8 frames stay uint8 until batched)."""

    labels: torch.Tensor
    spec: torch.Tensor      # (N, F, T)
    frames: torch.Tensor    # (N, K, S, S, 3) uint8
    clip_ids: list[str]

    @classmethod
    def from_arrays(cls, arrays: SplitArrays, device: torch.device) -> "SplitTensors":
        return cls(
            labels=torch.from_numpy(arrays.labels).to(device),
            spec=torch.from_numpy(np.ascontiguousarray(arrays.spec)).to(device),
            frames=torch.from_numpy(np.ascontiguousarray(arrays.frames)).to(device),
            clip_ids=arrays.clip_ids,
        )

    def __len__(self) -> int:
        return len(self.labels)


def batch_inputs(data: SplitTensors, idx: torch.Tensor, modalities: tuple[str, ...], frames_per_sample: int,
                 generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Model inputs for rows idx. With a generator (training): random frame window and horizontal flip."""
    inputs: dict[str, torch.Tensor] = {}
    if "audio" in modalities:
        inputs["audio"] = data.spec[idx].float().unsqueeze(1)
    if "visual" in modalities:
        frames = data.frames[idx]                                  # (B, K, S, S, 3)
        k, t = frames.shape[1], min(frames_per_sample, frames.shape[1])
        if generator is None:
            start = torch.full((len(idx),), (k - t) // 2, dtype=torch.long)
        else:
            start = torch.randint(0, k - t + 1, (len(idx),), generator=generator)
        window = start[:, None] + torch.arange(t)[None, :]
        frames = frames[torch.arange(len(idx))[:, None], window.to(frames.device)]
        x = frames.permute(0, 1, 4, 2, 3).float().div_(255)       # (B, T, 3, S, S)
        if generator is not None:
            flip = torch.rand(len(idx), generator=generator) < 0.5
            x[flip.to(x.device)] = x[flip.to(x.device)].flip(-1)
        inputs["visual"] = (x - IMAGENET_MEAN.to(x.device)) / IMAGENET_STD.to(x.device)
    return inputs


@torch.no_grad()
def predict(model: AVClassifier, data: SplitTensors, batch_size: int, frames_per_sample: int) -> dict[str, np.ndarray]:
    """Fused and per-modality logits and features for a whole split (eval mode)."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)))
        out = model(batch_inputs(data, idx, model.modalities, frames_per_sample, None))
        arrays = {"logits": out.logits}
        for m in model.modalities:
            arrays[f"features_{m}"] = out.features[m]
            arrays[f"logits_{m}"] = out.modality_logits[m]
        for key, value in arrays.items():
            parts.setdefault(key, []).append(value.float().cpu().numpy())
    result = {key: np.concatenate(value) for key, value in parts.items()}
    result["labels"] = data.labels.cpu().numpy()
    return result


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    return torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def train_run(dataset: str, method_name: str, seed: int, features_dir: str | Path, out_dir: str | Path,
              params: dict[str, Any], threads: int = 1) -> dict[str, Any]:
    """Train one (dataset, method, seed) run; write model.pt, metrics.json, curve.csv, outputs.npz."""
    cfg, model_cfg = params["train"], params["model"]
    out_dir = Path(out_dir)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = resolve_device(cfg["device"])
    classes = read_json(Path(features_dir) / "extract.json")["classes"]
    method = create_method(method_name, params)
    splits = {s: SplitTensors.from_arrays(load_split(features_dir, s), device) for s in ("train", "val", "test")}

    model = AVClassifier(method.modalities, len(classes), model_cfg["width"], model_cfg["fusion"]).to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg["lr_step"], gamma=cfg["lr_gamma"])
    generator = torch.Generator().manual_seed(seed)
    train, fps = splits["train"], cfg["frames_per_sample"]

    curve: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    for epoch in range(cfg["epochs"]):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(len(train), generator=generator)
        losses, correct, extras = [], 0, {}
        for start in range(0, len(train), cfg["batch_size"]):
            idx = order[start : start + cfg["batch_size"]]
            if len(idx) < 2:        # BatchNorm cannot train on one sample
                continue
            labels = train.labels[idx]
            output = model(batch_inputs(train, idx, method.modalities, fps, generator))
            loss = method.loss(output, labels, epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for key, value in method.after_backward(model, output, labels, epoch).items():
                extras.setdefault(key, []).append(value)
            optimizer.step()
            losses.append(loss.item())
            correct += int((output.logits.argmax(1) == labels).sum())
        scheduler.step()
        val = summarise(predict(model, splits["val"], cfg["batch_size"], fps), method.modalities, len(classes))
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "train_acc": correct / len(train),
               "val_loss": val["loss"], "val_acc": val["acc"], "lr": scheduler.get_last_lr()[0],
               "seconds": time.perf_counter() - started}
        row.update({f"val_acc_{m}": val[f"acc_{m}"] for m in method.modalities if f"acc_{m}" in val})
        row.update({key: float(np.mean(v)) for key, v in extras.items()})
        curve.append(row)
        log.info("epoch %d: %s", epoch, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        if best is None or val["acc"] > best[0]:
            best = (val["acc"], epoch, copy.deepcopy(model.state_dict()))

    assert best is not None
    model.load_state_dict(best[2])
    outputs = {s: predict(model, splits[s], cfg["batch_size"], fps) for s in ("val", "test")}
    val, test = (summarise(outputs[s], method.modalities, len(classes)) for s in ("val", "test"))
    metrics = {
        "dataset": dataset, "method": method_name, "seed": seed, "modalities": list(method.modalities),
        "classes": list(classes), "best_epoch": best[1], "epochs": cfg["epochs"],
        "val": val, "test": test,
        "params": stage_params(params, "train"),   # what this run was trained with (see share.prune_stale_runs)
    }
    _write_outputs(out_dir, model, outputs, splits, metrics, curve)
    return metrics


def _write_outputs(out_dir: Path, model: AVClassifier, outputs: dict[str, dict[str, np.ndarray]],
                   splits: dict[str, SplitTensors], metrics: dict[str, Any], curve: list[dict[str, Any]]) -> None:
    arrays: dict[str, np.ndarray] = {
        "head_weight": model.head.fc.weight.detach().cpu().numpy(),
        "head_bias": model.head.fc.bias.detach().cpu().numpy(),
        "modalities": np.array(model.modalities),
        "feature_dims": np.array([model.head.dims[m] for m in model.modalities]),
    }
    for split, pred in outputs.items():
        arrays.update({f"{split}_{key}": value for key, value in pred.items()})
        arrays[f"{split}_clip_ids"] = np.array(splits[split].clip_ids)
    with atomic_path(out_dir / "outputs.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    with atomic_path(out_dir / "model.pt") as tmp:
        torch.save({"state_dict": model.state_dict(), "modalities": model.modalities, "metrics": metrics}, tmp)
    with atomic_path(out_dir / "curve.csv") as tmp:
        fields = list(dict.fromkeys(k for row in curve for k in row))
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(curve)
    # metrics.json last: it is the rule's declared output, so it marks the run complete.
    write_json(out_dir / "metrics.json", metrics)
