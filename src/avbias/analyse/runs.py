"""A dataset's runs together: every run's measures (measures.py), aggregated over seeds, the bias measures'
persistence across methods and tested dominance, per-class capability, the remedies, each branch's
calibration and the findings (claims.py), as one DatasetAnalysis (contract.py). Pure functions but for
load_run, which reads a run; the analyse stage's entry (avbias.analyse.analyse) reads the runs and saves
what analyse_runs returns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from avbias.analyse import decision_layer as dl
from avbias.analyse import findings as fnd
from avbias.analyse import planted, stats
from avbias.analyse.capability import cremad_human_accuracy
from avbias.analyse.claims import findings
from avbias.analyse.contract import DatasetAnalysis, is_joint
from avbias.analyse.measures import (
    ANALYSIS_SPLIT,
    apply_remedies,
    calibrate_run,
    initialisation_label,
    measure_run,
)
from avbias.analyse.references import bayes_reference, branch_fusion_accuracy, late_fusion_accuracy
from avbias.datasets import DATASETS
from avbias.errors import DataError
from avbias.io import read_json

BASELINE = fnd.BASELINE
# Bias measures compared across methods (the first modality's share, or a ratio first/second).
PERSISTENCE_MEASURES = ("weight_share", "logit_share", "centred_logit_share", "decides_share", "shapley_feature_share",
                        "shapley_input_share", "feature_norm_ratio")


class Run(NamedTuple):
    """What the analysis reads of one run: metrics.json, outputs.npz and curve.csv."""

    metrics: dict[str, Any]
    outputs: dict[str, np.ndarray]
    curve: pd.DataFrame


def load_run(run_dir: Path) -> Run:
    metrics_path, outputs_path = run_dir / "metrics.json", run_dir / "outputs.npz"
    for path in (metrics_path, outputs_path):
        if not path.is_file():
            raise DataError(f"{path}: missing; re-run the train stage for this run")
    with np.load(outputs_path) as npz:
        outputs = {key: npz[key] for key in npz.files}
    return Run(read_json(metrics_path), outputs, pd.read_csv(run_dir / "curve.csv"))


def aggregate(runs: pd.DataFrame, by: tuple[str, ...] = ("method",)) -> pd.DataFrame:
    """Mean, std, count and 95% bootstrap CI over seeds of every numeric measure (long format)."""
    skip = {"seed", *by}
    numeric = [c for c in runs.columns if c not in skip and pd.api.types.is_numeric_dtype(runs[c])]
    long = runs.melt(id_vars=list(by), value_vars=numeric, var_name="measure").dropna(subset=["value"])
    rows = []
    for keys, group in long.groupby([*by, "measure"], sort=True):
        values = group["value"].to_numpy(float)
        low, high = stats.bootstrap_ci(values)
        rows.append({**dict(zip([*by, "measure"], keys, strict=True)), "mean": values.mean(),
                     "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "n": len(values),
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def persistence(runs: pd.DataFrame) -> pd.DataFrame:
    """Each bias measure by joint method: mean, std, CI over seeds, and the paired (same seeds) exact
    sign-flip test against the baseline."""
    joint = runs[is_joint(runs["modalities"])]
    base = joint[joint["method"] == BASELINE].set_index("seed")
    rows = []
    for measure in PERSISTENCE_MEASURES:
        if measure not in joint:
            continue
        for method, group in joint.groupby("method", sort=False):
            values = group.set_index("seed")[measure]
            if values.isna().all():
                continue
            low, high = stats.bootstrap_ci(values.to_numpy(float))
            seeds = values.index.intersection(base.index)
            paired = method != BASELINE and measure in base and len(seeds)
            diff = values[seeds].to_numpy(float) - base.loc[seeds, measure].to_numpy(float) if paired else np.array([])
            rows.append({"measure": measure, "method": method, "mean": float(values.mean()),
                         "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0, "n": int(values.notna().sum()),
                         "ci_low": low, "ci_high": high,
                         "p_vs_baseline": stats.paired_permutation_p(diff, np.zeros_like(diff)) if paired else np.nan,
                         "p_t_vs_baseline": stats.t_test_p(diff) if paired else np.nan, "n_paired": len(seeds)})
    return pd.DataFrame(rows)


DOMINANCE_MEASURES = ("weight_norm", "logit_contrib", "centred_contrib", "branch_acc", "feature_norm", "decides",
                      "shapley_feature", "shapley_input", "true_contrib")


def dominance(runs: pd.DataFrame, margin: float, modalities: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per joint method and per-modality bias measure: the modality the seed means lean to, and the tested
    verdict (analyse.findings.dominance_verdict on each seed's share), so that a near-tie that a different
    thread count could tip either way reads "inconclusive" rather than a winner."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for method, group in runs.groupby("method", sort=True):
        found = {}
        for prefix in DOMINANCE_MEASURES:
            columns = [f"{prefix}_{m}" for m in modalities if f"{prefix}_{m}" in group]
            values = group[columns].dropna()            # seeds where the measure applies to every modality
            if len(columns) < 2 or values.empty:
                continue
            named = [c.removeprefix(f"{prefix}_") for c in columns]
            found[prefix] = fnd.dominance_verdict(values.to_numpy(float), named, margin)
        if found:
            out[str(method)] = found
    return out


def verdicts(found: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, str]]:
    """The tested verdict alone, per method and measure."""
    return {method: {measure: r["verdict"] for measure, r in measures.items()} for method, measures in found.items()}


def capability(runs: pd.DataFrame, margin: float) -> dict[str, Any]:
    """Unimodal test accuracy per modality (mean over seeds) and which modality is more capable."""
    uni = runs[~is_joint(runs["modalities"])]
    acc = {str(m): float(g["test_acc"].mean()) for m, g in uni.groupby("modalities")}
    return {"unimodal_test_acc": acc, "stronger": dl.dominant_modality(acc, margin) if len(acc) > 1 else None}


def capability_per_class(dataset: str, per_class: pd.DataFrame, runs: pd.DataFrame,
                         params: dict[str, Any]) -> pd.DataFrame:
    """Per class: the external capability of each modality (human raters on CREMA-D, the generator's SNRs on
    synthetic data) and the unimodal models' accuracy, as rows (class, source, modality, value)."""
    rows = []
    spec = DATASETS[dataset]
    classes = list(dict.fromkeys(per_class["class"]))
    if spec.family == "cremad" and not spec.synthetic:
        for r in cremad_human_accuracy().to_dict("records"):
            rows.append({"class": r["class"], "source": "human raters", "modality": r["modality"],
                         "value": r["accuracy"]})
    elif spec.synthetic and spec.family == "cremad":   # planted per-class SNR (dB: not comparable across modalities)
        snr = planted.planted_snr(params["synth"], len(classes))
        for i, c in enumerate(classes):
            rows += [{"class": c, "source": "generator SNR (dB)", "modality": m, "value": float(snr[m][i])}
                     for m in ("audio", "visual")]
    uni = runs[~is_joint(runs["modalities"])][["method", "modalities"]].drop_duplicates()
    for method, modality in uni.itertuples(index=False):
        acc = per_class[per_class["method"] == method].groupby("class", sort=False)["acc"].mean()
        rows += [{"class": c, "source": "unimodal model", "modality": modality, "value": float(x)}
                 for c, x in acc.items()]
    return pd.DataFrame(rows, columns=["class", "source", "modality", "value"])




def joint_modalities(runs: pd.DataFrame) -> list[str]:
    """The joint models' modalities (e.g. ["audio", "visual"]); none without a joint run."""
    joint = runs[is_joint(runs["modalities"])]
    return joint["modalities"].iloc[0].split("+") if len(joint) else []


def weak_modality(runs: pd.DataFrame, modalities: list[str], stronger: str | None) -> str | None:
    """The modality the remedies are scored for: the less capable one by the unimodal runs (capability), else,
    without them, the one whose branch is weaker on average over the joint runs; None without a joint run."""
    if stronger in modalities:
        return next(m for m in modalities if m != stronger)
    if not modalities:
        return None
    joint = runs[is_joint(runs["modalities"])]
    branch = {m: joint[f"branch_acc_{m}"].mean() for m in modalities}
    return min(branch, key=branch.get)


def analyse_runs(dataset: str, loaded_runs: list[Run], params: dict[str, Any]) -> DatasetAnalysis:
    """Everything the report reads of one dataset, from its runs (sorted by folder)."""
    loaded = [(run.metrics, run.outputs) for run in loaded_runs]
    rows, class_rows, sample_frames = [], [], []
    for metrics, outputs in loaded:
        row, per_class, samples = measure_run(metrics, outputs)
        rows.append(row)
        class_rows.extend(per_class)
        sample_frames.append(samples)
    runs = pd.DataFrame(rows)
    curves = pd.concat([run.curve.assign(method=run.metrics["method"], seed=run.metrics["seed"])
                        for run in loaded_runs], ignore_index=True)
    margin = params["analysis"]["dominance_margin"]
    cap = capability(runs, margin)
    modalities = joint_modalities(runs)
    weak = weak_modality(runs, modalities, cap["stronger"])
    remedies = pd.DataFrame([r for metrics, outputs in loaded for r in apply_remedies(metrics, outputs, weak)]
                            if modalities else [])
    per_class_frame = pd.DataFrame(class_rows)
    converged = fnd.convergence(curves)
    first_metrics = loaded[0][0]
    test_counts = dict(zip(first_metrics["classes"],
                           np.bincount(loaded[0][1]["test_labels"], minlength=len(first_metrics["classes"])).tolist(),
                           strict=True))
    found = dominance(runs[is_joint(runs["modalities"])], margin, modalities) if modalities else {}
    references = pd.concat([late_fusion_accuracy(loaded), branch_fusion_accuracy(loaded)]
                           + ([bayes_reference(loaded, params["synth"])] if DATASETS[dataset].synthetic else []),
                           ignore_index=True)
    claims = findings(dataset, runs, per_class_frame, remedies, converged, modalities, weak,
                      first_metrics["classes"], test_counts, params, references)
    bias = {
        "dataset": dataset, "split": ANALYSIS_SPLIT, "dominance": verdicts(found), "dominance_detail": found,
        "capability": cap,
        "weak_modality": weak,
        "selection": sorted({m["selection"] for m, _ in loaded if "selection" in m}),
        "test_clips": int(sum(test_counts.values())), "seeds": sorted({int(m["seed"]) for m, _ in loaded}),
        "environment": sorted({json.dumps(m.get("environment", {}), sort_keys=True) for m, _ in loaded}),
        "initialisation": sorted({initialisation_label(m.get("initialisation")) for m, _ in loaded}),
        "findings": claims.to_dict("records"),
    }
    return DatasetAnalysis(
        bias=bias, runs=runs, summary=aggregate(runs.drop(columns=["modalities", "fusion"])),
        per_class=per_class_frame, samples=pd.concat(sample_frames, ignore_index=True), curves=curves,
        convergence=converged, persistence=persistence(runs) if modalities else pd.DataFrame(),
        remedies=remedies,
        remedies_summary=(aggregate(remedies.drop(columns=["weak"]), by=("method", "remedy")) if len(remedies)
                          else pd.DataFrame()),
        calibration=pd.DataFrame([r for metrics, outputs in loaded for r in calibrate_run(metrics, outputs)]),
        capability=capability_per_class(dataset, per_class_frame, runs, params), references=references,
        findings=claims)
