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

from avbias.analysis import cues, planted, stats
from avbias.analysis import decision_layer as dl
from avbias.analysis import findings as fnd
from avbias.analysis.capability import cremad_human_accuracy
from avbias.analysis.metrics import accuracy, macro_f1, per_class_accuracy
from avbias.analysis.remedies import REMEDIES, combine, late_fusion
from avbias.data.datasets import DATASETS
from avbias.errors import DataError
from avbias.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

ANALYSIS_SPLIT = "test"
BASELINE = fnd.BASELINE
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


def _late_fusion_rows(seed: int, classes: list[str], reference: str, val_logits: dict[str, np.ndarray],
                      val_labels: np.ndarray, test_logits: dict[str, np.ndarray],
                      test_labels: np.ndarray) -> list[dict[str, Any]]:
    """Per-class test accuracy of a late fusion fit on validation (remedies.late_fusion), as reference rows."""
    logits = late_fusion(val_logits, val_labels, test_logits)
    acc = per_class_accuracy(logits.argmax(1), test_labels, len(classes))
    return [{"seed": seed, "class": c, "reference": reference, "acc": float(a)}
            for c, a in zip(classes, acc, strict=True)]


def late_fusion_accuracy(loaded: list[tuple[dict[str, Any], dict[str, np.ndarray]]]) -> pd.DataFrame:
    """Per seed and class, the test accuracy of the late fusion of that seed's unimodal models, fit on
    validation (remedies.late_fusion): the reachable reference the baseline's per-class accuracy is held
    against (claim 3 by cost). Empty when a seed lacks a unimodal model, a validation split, or the runs'
    test clips differ."""
    unimodal: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    classes: list[str] = []
    for metrics, outputs in loaded:
        modalities = [str(m) for m in outputs["modalities"]]
        if len(modalities) == 1 and "val_logits" in outputs and "val_labels" in outputs:
            unimodal.setdefault(int(metrics["seed"]), {})[modalities[0]] = outputs
            classes = metrics["classes"]
    rows = []
    for seed, runs in sorted(unimodal.items()):
        if len(runs) < 2:
            continue
        first = next(iter(runs.values()))
        if any(not np.array_equal(o["test_labels"], first["test_labels"])
               or not np.array_equal(o["val_labels"], first["val_labels"]) for o in runs.values()):
            continue                                    # not the same clips: no paired fusion
        rows += _late_fusion_rows(seed, classes, "late_fusion", {m: o["val_logits"] for m, o in runs.items()},
                                  first["val_labels"], {m: o["test_logits"] for m, o in runs.items()},
                                  first["test_labels"])
    return pd.DataFrame(rows, columns=["seed", "class", "reference", "acc"])


def branch_fusion_accuracy(loaded: list[tuple[dict[str, Any], dict[str, np.ndarray]]]) -> pd.DataFrame:
    """Per seed and class, the test accuracy of the baseline's own branches (each modality's logits through
    the fused head) fused by remedies.late_fusion, fit on validation: what the baseline's own encoders reach
    with a re-fit allocation. Empty without a baseline with per-branch validation logits."""
    rows = []
    for metrics, outputs in loaded:
        modalities = [str(m) for m in outputs["modalities"]]
        if metrics["method"] != BASELINE or len(modalities) < 2 or "val_labels" not in outputs \
                or any(f"val_logits_{m}" not in outputs for m in modalities):
            continue
        rows += _late_fusion_rows(int(metrics["seed"]), metrics["classes"], "branch_fusion",
                                  {m: outputs[f"val_logits_{m}"] for m in modalities}, outputs["val_labels"],
                                  {m: outputs[f"test_logits_{m}"] for m in modalities}, outputs["test_labels"])
    return pd.DataFrame(rows, columns=["seed", "class", "reference", "acc"])


def bayes_reference(loaded: list[tuple[dict[str, Any], dict[str, np.ndarray]]], synth: dict[str, Any]) -> pd.DataFrame:
    """Per seed and class, the Bayes-optimal fused accuracy realised on the baseline's test clips of a cue plan:
    each clip's cues are re-drawn exactly as the generator drew them (cues.drawn_cue, deterministic in the
    seed and clip id), so the reference is exact on the very clips the models are tested on, not an
    expectation over clips. Empty without a cue plan or without the baseline's test clip ids."""
    if not cues.is_cue_plan(synth):
        return pd.DataFrame(columns=["seed", "class", "reference", "acc"])
    rows = []
    for metrics, outputs in loaded:
        if metrics["method"] != BASELINE or "test_clip_ids" not in outputs:
            continue
        classes = metrics["classes"]
        probs = {m: cues.cue_probs(synth, m, len(classes)) for m in cues.MODALITIES}
        liks = [cues.cue_likelihood(np.ones(len(classes)) if q is None else q) for q in probs.values()]
        labels = outputs["test_labels"]
        drawn = [np.array([cues.drawn_cue(synth["seed"], str(i), m, int(y), probs[m])
                           for i, y in zip(outputs["test_clip_ids"], labels, strict=True)]) for m in cues.MODALITIES]
        correct = cues.bayes_correct(liks, drawn, labels)
        rows += [{"seed": int(metrics["seed"]), "class": c, "reference": "bayes",
                  "acc": float(correct[labels == i].mean()) if (labels == i).any() else np.nan}
                 for i, c in enumerate(classes)]
    return pd.DataFrame(rows, columns=["seed", "class", "reference", "acc"])


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
    joint = runs[fnd.is_joint(runs["modalities"])]
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
    joint = runs[fnd.is_joint(runs["modalities"])]
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
    found = dominance(runs[fnd.is_joint(runs["modalities"])], margin, modalities) if modalities else {}
    references = pd.concat([late_fusion_accuracy(loaded), branch_fusion_accuracy(loaded)]
                           + ([bayes_reference(loaded, params["synth"])] if DATASETS[dataset].synthetic else []),
                           ignore_index=True)
    claims = findings(dataset, runs, per_class_frame, remedies, converged, modalities, weak if modalities else None,
                      first_metrics["classes"], test_counts, params, references)
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
        "references.csv": references,
    }
    for name, frame in tables.items():
        with atomic_path(out_dir / name) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    write_json(out_dir / "bias.json", result)
    log.info("dominance: %s; capability: %s", result["dominance"], result["capability"])
    return result


def findings(dataset: str, runs: pd.DataFrame, per_class: pd.DataFrame, remedies: pd.DataFrame,
             converged: pd.DataFrame, modalities: list[str], weak: str | None, classes: list[str],
             test_counts: dict[str, int], params: dict[str, Any],
             references: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's claims with verdicts (analysis.findings) and, on synthetic data, the planted truths.
    references: per seed and class, the late fusion's test accuracy (late_fusion_accuracy), for claim 3 by
    cost; Holm's correction is applied across the claim-3 comparisons."""
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
        rows += cost_findings(dataset, per_class, remedies, references, classes, ok, test_counts, params)
    spec = DATASETS[dataset]
    uni = {m: per_class[per_class["method"] == f"unimodal_{m}"] for m in ("audio", "visual")}
    if spec.synthetic and spec.family == "cremad" and all(len(u) for u in uni.values()):
        measured = {m: u.groupby("class", sort=False)["acc"].mean().reindex(classes).to_numpy() for m, u in uni.items()}
        rec = planted.recovery(params["synth"], measured)
        rows += fnd.planted_findings(planted_truths(rec, per_class, classes))
        if cues.is_cue_plan(params["synth"]):
            rows += fnd.planted_findings(cue_truths(params["synth"], per_class, references, classes))
    return pd.DataFrame(fnd.holm_claim3(rows))


def cue_plan_classes(synth: dict[str, Any], classes: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """A cue plan's exact Bayes-optimal accuracies, and the classes where following the modality more capable
    overall costs more than planted.TIE_MARGIN against the Bayes-optimal fusion (the planted failure classes)."""
    bayes = cues.bayes_accuracies(synth, len(classes))
    dominant = max(("audio", "visual"), key=lambda m: float(np.mean(bayes[m])))
    return bayes, [classes[i] for i in cues.at_risk_classes(bayes, dominant, planted.TIE_MARGIN)]


def cost_findings(dataset: str, per_class: pd.DataFrame, remedies: pd.DataFrame, references: pd.DataFrame | None,
                  classes: list[str], ok: dict[str, bool], test_counts: dict[str, int],
                  params: dict[str, Any]) -> list[dict[str, Any]]:
    """Claim 3 by cost (issue 20): where the baseline loses against the late fusion of the unimodal models
    (and, on a cue plan, the exact Bayes-optimal fusion), the baseline's accuracy there, and each remedy's
    and method's change against the baseline, overall and on those classes."""
    base_rows = per_class[per_class["method"] == BASELINE]
    if base_rows.empty:
        return []
    base = base_rows.pivot_table(index="seed", columns="class", values="acc").reindex(columns=classes)
    uni = {m: per_class[per_class["method"] == f"unimodal_{m}"] for m in ("audio", "visual")}
    capable, capable_share = None, None
    if all(len(u) for u in uni.values()) and "reliance_share_audio" in base_rows:
        diff = (uni["audio"].groupby("class")["acc"].mean() - uni["visual"].groupby("class")["acc"].mean())
        capable = planted.more_capable(diff.reindex(classes).to_numpy(), planted.TIE_MARGIN).tolist()
        share = base_rows.groupby("class")["reliance_share_audio"].mean().reindex(classes).to_numpy()
        capable_share = np.where(np.array(capable) == "visual", 1 - share, share)
    rows, measured_on, selection, where = [], [], "", "where the baseline loses against the late fusion"
    cost = late_fusion_cost(per_class, references, classes)
    if cost is not None:
        rows.append(fnd.failure_mode_finding(classes, cost, "late fusion of the unimodal models (fit on validation)",
                                             capable_share, capable))
        measured_on = [classes[i] for i in cost["under_used"]]
        selection = "classes where the baseline loses against the late fusion, selected on the same test clips"
    own = (references[references["reference"] == "branch_fusion"] if references is not None and len(references)
           else pd.DataFrame())
    if len(own):                # the baseline's own encoders with a re-fit allocation: the decision layer's cost
        reference = own.pivot_table(index="seed", columns="class", values="acc").reindex(index=base.index,
                                                                                         columns=classes)
        rows.append(fnd.failure_mode_finding(
            classes, fnd.under_use_by_cost(base.to_numpy(), reference.to_numpy()),
            "its own branches fused with temperatures fit on validation", capable_share, capable))
    spec = DATASETS[dataset]
    if spec.synthetic and cues.is_cue_plan(params["synth"]):
        _, planted_classes = cue_plan_classes(params["synth"], classes)
        cost, label = bayes_cost(params["synth"], per_class, references, classes)
        rows.append(fnd.failure_mode_finding(classes, cost, label, capable_share, capable))
        measured_on, selection = planted_classes, "the planted failure classes (exact, chosen before any run)"
        where = "the planted failure classes"
    if measured_on:
        values = base[measured_on].mean(axis=1).to_numpy(float)
        result = fnd._test(values) | {"p": float("nan"), "verdict": "-",
                                      "reason": f"the ceiling a remedy can win against; {selection}"}
        clips = sum(test_counts.get(c, 0) for c in measured_on)
        rows.append(fnd._row("3. the baseline where claim 3 is measured", BASELINE,
                             f"accuracy on {', '.join(measured_on)} ({clips} test clips); overall "
                             f"{float(base.mean(axis=1).mean()):.3f}", result))
    candidates: dict[str, pd.DataFrame] = {}
    converged: dict[str, bool] = {}
    if len(remedies):
        rem = remedies[(remedies["method"] == BASELINE) & (remedies["remedy"] != "none")]
        for name, group in rem.groupby("remedy", sort=True):
            table = group.set_index("seed")[[f"class_acc_{i}" for i in range(len(classes))]]
            table.columns = classes
            candidates[f"remedy: {name}"] = table
            converged[f"remedy: {name}"] = ok.get(BASELINE, False)
    joint = per_class[(per_class["method"] != BASELINE) & ~per_class["method"].str.startswith("unimodal_")]
    for method, group in joint.groupby("method", sort=True):
        candidates[f"method: {method}"] = group.pivot_table(index="seed", columns="class",
                                                            values="acc").reindex(columns=classes)
        converged[f"method: {method}"] = ok.get(str(method), False) and ok.get(BASELINE, False)
    return rows + fnd.recovery_findings(base, candidates, classes, measured_on, converged, test_counts, where)


def late_fusion_cost(per_class: pd.DataFrame, references: pd.DataFrame | None,
                     classes: list[str]) -> dict[str, np.ndarray] | None:
    """findings.under_use_by_cost of the baseline against the late fusion, same seeds; None without both."""
    base_rows = per_class[per_class["method"] == BASELINE]
    if references is None or references.empty or base_rows.empty:
        return None
    base = base_rows.pivot_table(index="seed", columns="class", values="acc").reindex(columns=classes)
    lf = references[references["reference"] == "late_fusion"]
    if lf.empty:                # no pair of unimodal models to fuse
        return None
    lf = lf.pivot_table(index="seed", columns="class", values="acc").reindex(index=base.index, columns=classes)
    return fnd.under_use_by_cost(base.to_numpy(), lf.to_numpy())


def bayes_cost(synth: dict[str, Any], per_class: pd.DataFrame, references: pd.DataFrame | None,
               classes: list[str]) -> tuple[dict[str, np.ndarray], str] | None:
    """findings.under_use_by_cost of the baseline against a cue plan's Bayes-optimal fusion: realised on the
    same test clips when references holds it (bayes_reference), else its expectation over clips."""
    base_rows = per_class[per_class["method"] == BASELINE]
    if base_rows.empty:
        return None
    base = base_rows.pivot_table(index="seed", columns="class", values="acc").reindex(columns=classes)
    realised = (references[references["reference"] == "bayes"] if references is not None and len(references)
                else pd.DataFrame())
    if len(realised):
        reference = realised.pivot_table(index="seed", columns="class", values="acc").reindex(
            index=base.index, columns=classes).to_numpy()
        label = "the Bayes-optimal fusion on the same test clips (exact)"
    else:
        reference = cues.bayes_accuracies(synth, len(classes))["fused"]
        label = "the Bayes-optimal fusion (exact expectation over clips)"
    return fnd.under_use_by_cost(base.to_numpy(), reference), label


def cue_truths(synth: dict[str, Any], per_class: pd.DataFrame, references: pd.DataFrame | None,
               classes: list[str]) -> dict[str, dict[str, Any]]:
    """A cue plan's planted failure classes against the classes where the baseline loses against the
    Bayes-optimal fusion (the planted reference): recovered when it loses significantly on every planted
    class and on no other."""
    _, planted_classes = cue_plan_classes(synth, classes)
    found_cost = bayes_cost(synth, per_class, references, classes)
    if found_cost is None:
        return {}
    cost, _ = found_cost
    found = [classes[i] for i in cost["under_used"]]
    return {"failure classes (exact plan)": {
        "recovered": set(found) == set(planted_classes),
        "evidence": f"planted {', '.join(planted_classes) or 'none'}; baseline loses on {', '.join(found) or 'none'}",
        "reason": "classes where the Bayes-optimal fusion beats the overall more capable modality alone by more "
                  f"than {planted.TIE_MARGIN} (analysis.cues), against those the baseline loses to the Bayes-optimal "
                  "fusion (Holm over classes, p < 0.05)"}}


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
