"""The analyse stage: decision-layer measures for every run of a dataset, aggregated over seeds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avbias.analysis import decision_layer as dl
from avbias.errors import DataError
from avbias.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

ANALYSIS_SPLIT = "test"


def load_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    metrics_path, outputs_path = run_dir / "metrics.json", run_dir / "outputs.npz"
    for path in (metrics_path, outputs_path):
        if not path.is_file():
            raise DataError(f"{path}: missing; re-run the train stage for this run")
    with np.load(outputs_path) as npz:
        outputs = {key: npz[key] for key in npz.files}
    return read_json(metrics_path), outputs


def measure_run(metrics: dict[str, Any], outputs: dict[str, np.ndarray], split: str = ANALYSIS_SPLIT) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One row of run-level measures, and one row per class (joint models only)."""
    modalities = [str(m) for m in outputs["modalities"]]
    row: dict[str, Any] = {
        "method": metrics["method"], "seed": metrics["seed"], "modalities": "+".join(modalities),
        "test_acc": metrics["test"]["acc"], "test_macro_f1": metrics["test"]["macro_f1"],
        "val_acc": metrics["val"]["acc"], "best_epoch": metrics["best_epoch"],
    }
    if len(modalities) < 2:
        return row, []
    labels = outputs[f"{split}_labels"]
    blocks = dl.weight_blocks(outputs["head_weight"], outputs["feature_dims"].tolist(), modalities)
    norms = dl.decision_weight_norms(blocks)
    contrib = {m: dl.mean_abs_contribution(dl.logit_contributions(outputs[f"{split}_features_{m}"], blocks[m]))
               for m in modalities}
    feat = {m: float(dl.feature_norms(outputs[f"{split}_features_{m}"]).mean()) for m in modalities}
    branch = {m: dl.branch_accuracy(outputs[f"{split}_logits_{m}"], labels) for m in modalities}
    weight = {m: norms[m]["overall"] for m in modalities}
    for m in modalities:
        row[f"branch_acc_{m}"] = branch[m]
        row[f"weight_norm_{m}"] = weight[m]
        row[f"weight_share_{m}"] = dl.shares(weight)[m]
        row[f"logit_contrib_{m}"] = contrib[m]
        row[f"logit_share_{m}"] = dl.shares(contrib)[m]
        row[f"feature_norm_{m}"] = feat[m]
    classes = metrics["classes"]
    per_class = [
        {"method": metrics["method"], "seed": metrics["seed"], "class": classes[c],
         **{f"weight_norm_{m}": float(norms[m]["per_class"][c]) for m in modalities}}
        for c in range(len(classes))
    ]
    return row, per_class


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds of every numeric measure, per method (long format)."""
    numeric = [c for c in runs.columns if c not in ("method", "seed", "modalities") and pd.api.types.is_numeric_dtype(runs[c])]
    long = runs.melt(id_vars=["method"], value_vars=numeric, var_name="measure").dropna(subset=["value"])
    grouped = long.groupby(["method", "measure"], sort=True)["value"]
    return grouped.agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, n="count").reset_index()


def dominance(summary: pd.DataFrame, margin: float) -> dict[str, dict[str, str]]:
    """Per joint method, which modality each bias measure favours (from the seed means)."""
    out: dict[str, dict[str, str]] = {}
    for method, group in summary.groupby("method"):
        means = dict(zip(group["measure"], group["mean"]))
        verdict = {}
        for prefix in ("weight_norm", "logit_contrib", "branch_acc", "feature_norm"):
            values = {k.removeprefix(prefix + "_"): v for k, v in means.items() if k.startswith(prefix + "_")}
            if len(values) > 1:
                verdict[prefix] = dl.dominant_modality(values, margin)
        if verdict:
            out[str(method)] = verdict
    return out


def capability(runs: pd.DataFrame, margin: float) -> dict[str, Any]:
    """Unimodal test accuracy per modality (mean over seeds) and which modality is more capable."""
    uni = runs[runs["modalities"].str.count(r"\+") == 0]
    acc = {str(m): float(g["test_acc"].mean()) for m, g in uni.groupby("modalities")}
    return {"unimodal_test_acc": acc, "stronger": dl.dominant_modality(acc, margin) if len(acc) > 1 else None}


def analyse_dataset(dataset: str, run_dirs: list[Path], out_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    rows, class_rows, curves = [], [], []
    for run_dir in sorted(run_dirs):
        metrics, outputs = load_run(run_dir)
        row, per_class = measure_run(metrics, outputs)
        rows.append(row)
        class_rows.extend(per_class)
        curve = pd.read_csv(run_dir / "curve.csv")
        curves.append(curve.assign(method=metrics["method"], seed=metrics["seed"]))
    runs = pd.DataFrame(rows)
    summary = aggregate(runs)
    margin = params["analysis"]["dominance_margin"]
    result = {
        "dataset": dataset, "split": ANALYSIS_SPLIT,
        "dominance": dominance(summary, margin), "capability": capability(runs, margin),
    }
    tables = {"runs.csv": runs, "summary.csv": summary, "per_class.csv": pd.DataFrame(class_rows),
              "curves.csv": pd.concat(curves, ignore_index=True)}
    for name, frame in tables.items():
        with atomic_path(out_dir / name) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    write_json(out_dir / "bias.json", result)
    log.info("dominance: %s; capability: %s", result["dominance"], result["capability"])
    return result
