"""The analyse stage: decision-layer measures for every run of a dataset, remedies, persistence across
methods, and per-class capability; aggregated over seeds. The measures themselves are pure functions
(analysis.decision_layer, .remedies, .stats); this module reads runs and writes tables."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avbias.analysis import decision_layer as dl
from avbias.analysis import findings as fnd
from avbias.analysis import planted, stats
from avbias.analysis.capability import cremad_human_accuracy
from avbias.analysis.metrics import accuracy, macro_f1, per_class_accuracy
from avbias.analysis.remedies import REMEDIES, combine
from avbias.data.datasets import DATASETS
from avbias.errors import DataError
from avbias.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

ANALYSIS_SPLIT = "test"
BASELINE = "baseline"
# Bias measures compared across methods (the first modality's share, or a ratio first/second).
PERSISTENCE_MEASURES = ("weight_share", "logit_share", "centred_logit_share", "decides_share", "shapley_feature_share",
                        "shapley_input_share", "feature_norm_ratio")


def initialisation_label(record: dict[str, Any] | None) -> str:
    """A run's encoder initialisation (metrics.json `initialisation`, avbias.models.weights) in words: 'random',
    or e.g. 'visual torchvision:resnet18 (finetune)'."""
    external = {m: Path(v["source"]).name for m, v in (record or {}).items() if isinstance(v, dict)}
    if not external:
        return "random"
    return ", ".join(f"{m} {s}" for m, s in sorted(external.items())) + f" ({record.get('encoders')})"


def load_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    metrics_path, outputs_path = run_dir / "metrics.json", run_dir / "outputs.npz"
    for path in (metrics_path, outputs_path):
        if not path.is_file():
            raise DataError(f"{path}: missing; re-run the train stage for this run")
    with np.load(outputs_path) as npz:
        outputs = {key: npz[key] for key in npz.files}
    return read_json(metrics_path), outputs


def contributions(metrics: dict[str, Any], outputs: dict[str, np.ndarray], split: str
                  ) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Each modality's contribution C_m (N, C) to the fused logits z = sum_m C_m + b, and b; None where the
    head does not decompose (FiLM, gated). Linear heads: C_m = W_m f_m; the shared MLA head: its weighted
    per-modality logits (bias included, b = 0)."""
    modalities = [str(m) for m in outputs["modalities"]]
    if not metrics.get("additive", True):
        return None
    if "head_weight" in outputs and metrics.get("fusion") != "shared":
        blocks = dl.weight_blocks(outputs["head_weight"], outputs["feature_dims"].tolist(), modalities)
        return ({m: dl.logit_contributions(outputs[f"{split}_features_{m}"], blocks[m]) for m in modalities},
                outputs["head_bias"])
    return {m: outputs[f"{split}_logits_{m}"] for m in modalities}, np.zeros(outputs[f"{split}_logits"].shape[1])


def measure_run(metrics: dict[str, Any], outputs: dict[str, np.ndarray], split: str = ANALYSIS_SPLIT
                ) -> tuple[dict[str, Any], list[dict[str, Any]], pd.DataFrame]:
    """Run-level measures (one row), per-class measures (one row per class), per-sample measures."""
    modalities = [str(m) for m in outputs["modalities"]]
    key = {"method": metrics["method"], "seed": metrics["seed"]}
    row: dict[str, Any] = {
        **key, "modalities": "+".join(modalities), "fusion": metrics.get("fusion", "concat"),
        "test_acc": metrics["test"]["acc"], "test_macro_f1": metrics["test"]["macro_f1"],
        "val_acc": metrics["val"]["acc"] if metrics.get("val") else np.nan, "best_epoch": metrics["best_epoch"],
        # The literature's figure (best test accuracy over epochs): selected on test, optimistic.
        "literature_best_test_acc": metrics.get("literature", {}).get("best_test_acc", np.nan),
        "initialisation": initialisation_label(metrics.get("initialisation")),
    }
    classes = metrics["classes"]
    num_classes = len(classes)
    labels = outputs[f"{split}_labels"]
    fused = outputs[f"{split}_logits"]
    per_class: dict[str, np.ndarray] = {"acc": per_class_accuracy(fused.argmax(1), labels, num_classes)}
    samples = pd.DataFrame({**key, "label": labels})
    if len(modalities) < 2:
        return row, _class_rows(key, classes, per_class), pd.DataFrame()
    a, v = modalities
    feats = {m: dl.feature_norms(outputs[f"{split}_features_{m}"]) for m in modalities}
    for m in modalities:
        branch = outputs[f"{split}_logits_{m}"]
        row[f"branch_acc_{m}"] = dl.branch_accuracy(branch, labels)
        row[f"feature_norm_{m}"] = float(feats[m].mean())
        per_class[f"branch_acc_{m}"] = per_class_accuracy(branch.argmax(1), labels, num_classes)
        per_class[f"feature_norm_{m}"] = dl.per_class_mean(feats[m], labels, num_classes)
        samples[f"feature_norm_{m}"] = feats[m]
    row["feature_norm_ratio"] = row[f"feature_norm_{a}"] / max(row[f"feature_norm_{v}"], 1e-12)
    decides = dl.who_decides(fused, {m: outputs[f"{split}_logits_{m}"] for m in modalities})
    row.update({f"decides_{m}": decides[m] for m in modalities} | {"n_disagree": decides["n_disagree"]})
    followed = decides[a] + decides[v] if decides["n_disagree"] else 0.0    # the fused model may follow neither
    row["decides_share"] = decides[a] / followed if followed > 0 else np.nan
    # A shared head (MLA) has one block for every modality: weight-based measures do not apply (no number).
    if "head_weight" in outputs and metrics.get("fusion") != "shared":
        blocks = dl.weight_blocks(outputs["head_weight"], outputs["feature_dims"].tolist(), modalities)
        norms = dl.decision_weight_norms(blocks)
        ratio, class_ratio = dl.weight_norm_ratio(norms, a, v)
        row.update({f"weight_norm_{m}": norms[m]["overall"] for m in modalities})
        row.update({f"weight_share_{m}": s for m, s in dl.shares({m: norms[m]["overall"] for m in modalities}).items()})
        row["weight_share"], row["weight_ratio"] = row[f"weight_share_{a}"], ratio
        row["class_weight_ratio_median"] = float(np.median(class_ratio))
        per_class["weight_ratio"] = class_ratio
        for m in modalities:
            per_class[f"weight_norm_{m}"] = norms[m]["per_class"]
            per_class[f"logit_scale_{m}"] = dl.logit_scale(norms[m]["per_class"], per_class[f"feature_norm_{m}"])
    decomposed = contributions(metrics, outputs, split)
    if decomposed is not None:
        contrib, bias = decomposed
        predicted = fused.argmax(1)
        for m in modalities:
            c = contrib[m]
            row[f"logit_contrib_{m}"] = dl.mean_abs_contribution(c)
            samples[f"true_contrib_{m}"] = dl.contribution_at(c, labels)
            samples[f"pred_contrib_{m}"] = dl.contribution_at(c, predicted)
            samples[f"margin_contrib_{m}"] = dl.margin_contribution(c, fused, labels)
            row[f"true_contrib_{m}"] = float(samples[f"true_contrib_{m}"].mean())
            row[f"margin_contrib_{m}"] = float(samples[f"margin_contrib_{m}"].mean())
            per_class[f"true_contrib_{m}"] = dl.per_class_mean(samples[f"true_contrib_{m}"].to_numpy(), labels,
                                                               num_classes)
            per_class[f"reliance_{m}"] = dl.per_class_mean(np.abs(c).mean(1), labels, num_classes)
            row[f"centred_contrib_{m}"] = dl.mean_abs_contribution(dl.centred(c))
        row.update({f"logit_share_{m}": s
                    for m, s in dl.shares({m: row[f"logit_contrib_{m}"] for m in modalities}).items()})
        row["logit_share"] = row[f"logit_share_{a}"]
        row["centred_logit_share"] = dl.shares({m: row[f"centred_contrib_{m}"] for m in modalities})[a]
        _shapley_measures(row, "feature", dl.shapley_accuracy(contrib, bias, labels), a)
        per_class[f"reliance_share_{a}"] = (per_class[f"reliance_{a}"]
                                            / (per_class[f"reliance_{a}"] + per_class[f"reliance_{v}"]))
    zeroed = {tuple(k[len(f"{split}_logits_zero_"):].split("_")): v for k, v in outputs.items()
              if k.startswith(f"{split}_logits_zero_")}
    if zeroed:
        _shapley_measures(row, "input", dl.shapley_input_accuracy({(): fused, **zeroed}, labels, modalities), a)
    return row, _class_rows(key, classes, per_class), samples


def _shapley_measures(row: dict[str, Any], kind: str, shapley: dict[str, float], first: str) -> None:
    """Shapley values of accuracy with absent modalities' features zeroed (`feature`, avbias) or their inputs
    zeroed (`input`, BalanceBenchmark's measure), and the first modality's share of their magnitudes."""
    row.update({f"shapley_{kind}_{m}": v for m, v in shapley.items()})
    total = sum(abs(v) for v in shapley.values())
    row[f"shapley_{kind}_share"] = abs(shapley[first]) / total if total > 0 else np.nan


def _class_rows(key: dict[str, Any], classes: list[str], per_class: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [{**key, "class": name, **{k: float(v[c]) for k, v in per_class.items()}} for c, name in enumerate(classes)]


def apply_remedies(metrics: dict[str, Any], outputs: dict[str, np.ndarray], weak: str) -> list[dict[str, Any]]:
    """Each decision-layer remedy fitted on validation and evaluated on test (models with linear heads)."""
    modalities = [str(m) for m in outputs["modalities"]]
    if len(modalities) < 2 or "head_weight" not in outputs or metrics.get("fusion") == "shared" \
            or not metrics.get("additive", True) or "val_labels" not in outputs:   # fit on validation only
        return []
    blocks = dl.weight_blocks(outputs["head_weight"], outputs["feature_dims"].tolist(), modalities)
    norms = {m: n["per_class"] for m, n in dl.decision_weight_norms(blocks).items()}
    val, bias = contributions(metrics, outputs, "val")
    test, _ = contributions(metrics, outputs, "test")
    labels, num_classes = outputs["test_labels"], len(metrics["classes"])
    rows = []
    for name, remedy in {"none": lambda *args: {m: 1.0 for m in modalities}, **REMEDIES}.items():
        alpha = remedy(val, bias, outputs["val_labels"], norms)
        logits = combine(test, bias, alpha)
        pred = logits.argmax(1)
        decides = dl.who_decides(logits, {m: test[m] + bias / len(modalities) for m in modalities})
        row = {"method": metrics["method"], "seed": metrics["seed"], "remedy": name,
               "test_acc": accuracy(pred, labels), "test_macro_f1": macro_f1(pred, labels, num_classes),
               "weak": weak, "weak_decides": decides[weak]}
        row.update({f"class_acc_{c}": float(x) for c, x in enumerate(per_class_accuracy(pred, labels, num_classes))})
        rows.append(row)
    return rows


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
    joint = runs[runs["modalities"].str.contains(r"\+")]
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
    verdict (analysis.findings.dominance_verdict on each seed's share), so that a near-tie that a different
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
    uni = runs[runs["modalities"].str.count(r"\+") == 0]
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
    uni = runs[runs["modalities"].str.count(r"\+") == 0][["method", "modalities"]].drop_duplicates()
    for method, modality in uni.itertuples(index=False):
        acc = per_class[per_class["method"] == method].groupby("class", sort=False)["acc"].mean()
        rows += [{"class": c, "source": "unimodal model", "modality": modality, "value": float(x)}
                 for c, x in acc.items()]
    return pd.DataFrame(rows, columns=["class", "source", "modality", "value"])


def analyse_dataset(dataset: str, run_dirs: list[Path], out_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    loaded = [load_run(d) for d in sorted(run_dirs)]
    rows, class_rows, sample_frames, curves = [], [], [], []
    for run_dir, (metrics, outputs) in zip(sorted(run_dirs), loaded, strict=True):
        row, per_class, samples = measure_run(metrics, outputs)
        rows.append(row)
        class_rows.extend(per_class)
        sample_frames.append(samples)
        curve = pd.read_csv(run_dir / "curve.csv")
        curves.append(curve.assign(method=metrics["method"], seed=metrics["seed"]))
    runs = pd.DataFrame(rows)
    margin = params["analysis"]["dominance_margin"]
    cap = capability(runs, margin)
    joint = runs[runs["modalities"].str.contains(r"\+")]
    modalities = joint["modalities"].iloc[0].split("+") if len(joint) else []
    if cap["stronger"] in modalities:
        weak = next(m for m in modalities if m != cap["stronger"])
    elif modalities:     # no unimodal runs: the weaker branch of the baseline
        branch = {m: joint[f"branch_acc_{m}"].mean() for m in modalities}
        weak = min(branch, key=branch.get)
    remedy_rows = ([r for metrics, outputs in loaded for r in apply_remedies(metrics, outputs, weak)] if modalities
                   else [])
    summary = aggregate(runs.drop(columns=["modalities", "fusion"]))
    remedies = pd.DataFrame(remedy_rows)
    per_class_frame = pd.DataFrame(class_rows)
    curves_frame = pd.concat(curves, ignore_index=True)
    converged = fnd.convergence(curves_frame)
    first_metrics = loaded[0][0]
    test_counts = dict(zip(first_metrics["classes"],
                           np.bincount(loaded[0][1]["test_labels"], minlength=len(first_metrics["classes"])).tolist(),
                           strict=True))
    found = dominance(runs[runs["modalities"].str.contains(r"\+")], margin, modalities) if modalities else {}
    claims = findings(dataset, runs, per_class_frame, remedies, converged, modalities, weak if modalities else None,
                      first_metrics["classes"], test_counts, params)
    result = {
        "dataset": dataset, "split": ANALYSIS_SPLIT, "dominance": verdicts(found), "dominance_detail": found,
        "capability": cap,
        "weak_modality": weak if modalities else None,
        "selection": sorted({m["selection"] for m, _ in loaded if "selection" in m}),
        "test_clips": int(sum(test_counts.values())), "seeds": sorted({int(m["seed"]) for m, _ in loaded}),
        "environment": sorted({json.dumps(m.get("environment", {}), sort_keys=True) for m, _ in loaded}),
        "initialisation": sorted({initialisation_label(m.get("initialisation")) for m, _ in loaded}),
        "findings": claims.to_dict("records"),
    }
    tables = {
        "findings.csv": claims, "convergence.csv": converged,
        "runs.csv": runs, "summary.csv": summary, "per_class.csv": per_class_frame,
        "samples.csv": pd.concat(sample_frames, ignore_index=True), "curves.csv": curves_frame,
        "persistence.csv": persistence(runs) if len(joint) else pd.DataFrame(),
        "remedies.csv": remedies,
        "remedies_summary.csv": (aggregate(remedies.drop(columns=["weak"]), by=("method", "remedy")) if len(remedies)
                                 else pd.DataFrame()),
        "capability.csv": capability_per_class(dataset, per_class_frame, runs, params),
    }
    for name, frame in tables.items():
        with atomic_path(out_dir / name) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    write_json(out_dir / "bias.json", result)
    log.info("dominance: %s; capability: %s", result["dominance"], result["capability"])
    return result


def findings(dataset: str, runs: pd.DataFrame, per_class: pd.DataFrame, remedies: pd.DataFrame,
             converged: pd.DataFrame, modalities: list[str], weak: str | None, classes: list[str],
             test_counts: dict[str, int], params: dict[str, Any]) -> pd.DataFrame:
    """The paper's claims with verdicts (analysis.findings) and, on synthetic data, the planted truths."""
    ok = dict(zip(converged["method"], converged["converged"], strict=True))
    rows: list[dict[str, Any]] = []
    if modalities and weak is not None:
        strong = next(m for m in modalities if m != weak)
        base = runs[runs["method"] == BASELINE]
        share = base["centred_logit_share"].mean() if "centred_logit_share" in base else np.nan
        dominant = (modalities[0] if share >= 0.5 else modalities[1]) if not np.isnan(share) else strong
        rows += fnd.persistence_findings(runs, dominant, weak if dominant == strong else strong, ok)
        rows += fnd.source_findings(runs, dominant, ok)
        rows += fnd.allocation_findings(per_class, remedies, classes, weak, strong, ok, test_counts)
    spec = DATASETS[dataset]
    uni = {m: per_class[per_class["method"] == f"unimodal_{m}"] for m in ("audio", "visual")}
    if spec.synthetic and spec.family == "cremad" and all(len(u) for u in uni.values()):
        measured = {m: u.groupby("class", sort=False)["acc"].mean().reindex(classes).to_numpy() for m, u in uni.items()}
        rec = planted.recovery(params["synth"], measured)
        rows += fnd.planted_findings(planted_truths(rec, per_class, classes))
    return pd.DataFrame(rows)


def planted_truths(rec: planted.Recovery, per_class: pd.DataFrame, classes: list[str]) -> dict[str, dict[str, Any]]:
    """Recovered / not recovered per planted truth, and the classes where the fused baseline under-uses the
    more capable modality (the paper's failure mode), from the unimodal models' per-class accuracy."""
    truths = {"overall dominance": {
        "recovered": rec.dominant_recovered,
        "evidence": f"planted {rec.planted_dominant}; unimodal models: {rec.measured_dominant}",
        "reason": "mean per-class accuracy difference of the unimodal models (tie within "
                  f"{rec.tie_margin:.2f})"}}
    if rec.ordering_recovered is not None:
        truths["per-class capability ordering"] = {
            "recovered": rec.ordering_recovered,
            "evidence": f"Spearman {rec.rank_correlation:.2f} of planted vs measured (audio - visual) per class",
            "reason": f"threshold {rec.rank_threshold} (docs/synthetic.md)"}
    base = per_class[per_class["method"] == BASELINE]
    if "reliance_share_audio" in base and len(base):
        by_seed = base.pivot_table(index="seed", columns="class", values="reliance_share_audio")
        by_seed = by_seed.reindex(columns=classes)
        share = by_seed.mean().to_numpy()
        under = planted.under_used_classes(np.array(rec.measured_more_capable), by_seed.to_numpy(),
                                           fnd.ALPHA, fnd.MIN_SEEDS)
        truths["failure mode: the baseline under-uses the more capable modality"] = {
            "recovered": len(under) > 0,
            "evidence": ", ".join(f"{classes[i]} ({rec.measured_more_capable[i]} more capable, "
                                  f"audio share {share[i]:.2f})" for i in under) or "no class",
            "reason": (f"classes where the more capable modality's share of |W_m f_m| is below 0.5 over "
                       f"{len(by_seed)} seeds (t-test, p < {fnd.ALPHA}; at least {fnd.MIN_SEEDS} seeds)"),
            "labels": ("found", "not found")}
    return truths
