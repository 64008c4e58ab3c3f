"""The paper's claims and, on synthetic data, the planted truths, with their verdicts, for one dataset: the
findings table. The tests behind each verdict are in findings.py; this module picks what they compare
(which modality is dominant, the baseline's per-class accuracy against which reference, on which classes)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from avbias.analyse import cues, planted
from avbias.analyse import findings as fnd
from avbias.analyse.findings import BASELINE
from avbias.datasets import DATASETS


def findings(dataset: str, runs: pd.DataFrame, per_class: pd.DataFrame, remedies: pd.DataFrame,
             converged: pd.DataFrame, modalities: list[str], weak: str | None, classes: list[str],
             test_counts: dict[str, int], params: dict[str, Any],
             references: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's claims with verdicts (analyse.findings) and, on synthetic data, the planted truths.
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
                  f"than {planted.TIE_MARGIN} (analyse.cues), against those the baseline loses to the Bayes-optimal "
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
