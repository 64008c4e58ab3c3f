"""The paper's claims as verdicts: each with its evidence, effect size, CI over seeds, test, seed count and a
verdict (supported / not supported / inconclusive, with the reason). Pure functions on the analyse stage's
tables (runs, per-class accuracy, remedies, curves).

Claims (arXiv 2510.14411):
1. the bias persists under each balancing method and under pretraining;
2. the bias comes from feature-norm and decision-weight disparities;
3. per-class capability-aware allocation beats the baseline on the classes where the weaker modality is
   the more capable one.
A verdict needs converged runs, at least MIN_SEEDS seeds and p < ALPHA (two-sided t-test over seeds, paired
where two methods are compared); otherwise it is inconclusive and says why.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from avbias.analyse import stats
from avbias.analyse.contract import BASELINE, is_joint

ALPHA = 0.05
MIN_SEEDS = 3
CONVERGED_RISE = 0.02          # accuracy may rise by less than 2 points over the last quarter of the epochs


ALLOCATIONS = {"class_weights": "remedy: per-class modality weights fit on validation",
               "adaptive_fusion": "method: adaptive_fusion (allocation learnt in training)"}


def late_rise(values: np.ndarray, fraction: float = 0.25) -> float:
    """How much a curve still rises over its last `fraction` of epochs: the least-squares slope over those
    epochs (at least 3) times their span, robust to one noisy epoch; NaN for curves under 3 epochs."""
    values = np.asarray(values, float)
    tail = values[len(values) - max(int(round(len(values) * fraction)), 3):]
    if len(tail) < 3:
        return float("nan")
    x = np.arange(len(tail), dtype=float)
    slope = np.polyfit(x, tail, 1)[0]
    return float(slope * (len(tail) - 1))


def convergence(curves: pd.DataFrame) -> pd.DataFrame:
    """Per method: the late rise of the seed-mean validation accuracy (train accuracy for protocols without
    a validation split), the largest per-run rise, and whether the method converged."""
    metric = "val_acc" if "val_acc" in curves and curves["val_acc"].notna().any() else "train_acc"
    rows = []
    for method, group in curves.groupby("method", sort=True):
        mean_curve = group.groupby("epoch")[metric].mean().to_numpy()
        per_run = [late_rise(g.sort_values("epoch")[metric].to_numpy()) for _, g in group.groupby("seed")]
        rise = late_rise(mean_curve)
        rows.append({"method": method, "metric": metric, "epochs": len(mean_curve), "late_rise": rise,
                     "max_run_late_rise": float(np.nanmax(per_run)) if per_run else float("nan"),
                     "converged": bool(rise < CONVERGED_RISE) if not np.isnan(rise) else False})
    return pd.DataFrame(rows)


def _test(values: np.ndarray, null: float = 0.0) -> dict[str, Any]:
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    low, high = stats.t_interval(values) if len(values) else (float("nan"), float("nan"))
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return {"effect": float(values.mean() - null) if len(values) else float("nan"), "ci_low": low - null,
            "ci_high": high - null, "se": se, "p": stats.t_test_p(values - null), "n_seeds": len(values)}


def _verdict(result: dict[str, Any], converged: bool, positive: str, negative: str,
             labels: tuple[str, str] = ("supported", "not supported")) -> dict[str, Any]:
    """labels[0] (supported) when the effect is positive and significant; labels[1] (not supported) when
    significant the other way; inconclusive otherwise, with the reason."""
    if not converged:
        return result | {"verdict": "inconclusive", "reason": "a run did not converge (see Convergence)"}
    if result["n_seeds"] < MIN_SEEDS:
        return result | {"verdict": "inconclusive",
                         "reason": f"{result['n_seeds']} seeds (a verdict needs {MIN_SEEDS})"}
    if np.isnan(result["p"]) or result["p"] >= ALPHA:
        return result | {"verdict": "inconclusive", "reason": f"p = {result['p']:.3g} >= {ALPHA}"}
    if result["effect"] > 0:
        return result | {"verdict": labels[0], "reason": positive}
    return result | {"verdict": labels[1], "reason": negative}


def dominance_verdict(values: np.ndarray, modalities: list[str], margin: float = 0.0) -> dict[str, Any]:
    """Which modality a non-negative per-modality measure favours, over seeds (rows: seeds, columns: modalities).
    `leans`: the modality with the largest mean share; `verdict`: that modality when its share exceeds
    1/M + margin with p < ALPHA (one-sample t-test of share - 1/M over seeds) and at least MIN_SEEDS seeds,
    otherwise "inconclusive"."""
    values = np.asarray(values, float).clip(min=0.0)     # a negative contribution counts as none
    totals = values.sum(1, keepdims=True)
    shares = np.divide(values, totals, out=np.full_like(values, 1.0 / values.shape[1]), where=totals > 0)
    top = int(np.argmax(shares.mean(0)))
    even = 1.0 / values.shape[1]
    result = _test(shares[:, top], null=even)
    share, p = result["effect"] + even, result["p"]
    wins = result["n_seeds"] >= MIN_SEEDS and not np.isnan(p) and p < ALPHA and share > even + margin
    return {"leans": modalities[top] if share > even else "balanced", "share": share, "p": p,
            "n_seeds": result["n_seeds"], "se": result["se"], "verdict": modalities[top] if wins else "inconclusive",
            "shares": {m: float(x) for m, x in zip(modalities, shares.mean(0), strict=True)}}


def _row(claim: str, subject: str, evidence: str, result: dict[str, Any]) -> dict[str, Any]:
    return {"claim": claim, "subject": subject, "evidence": evidence, **result}


def decision_share(group: pd.DataFrame, dominant: str, measure: str) -> pd.Series:
    """The dominant modality's share of the decision per seed, by `measure` (a first-modality share)."""
    values = group.set_index("seed")[measure].astype(float)
    return values if dominant == group["modalities"].iloc[0].split("+")[0] else 1 - values


def persistence_findings(runs: pd.DataFrame, dominant: str, weak: str,
                         converged: dict[str, bool]) -> list[dict[str, Any]]:
    """Claim 1: under each balancing method and pretraining, the dominant modality still takes more than half
    of the decision (its share of the class-centred logit contributions; of the decisions where the
    branches disagree, for heads that do not decompose); one-sample t-test of share - 0.5 over seeds.
    Beside it, each method's shift from the baseline: the same share minus the baseline's, paired over seeds
    (towards the weak modality, towards the dominant one, or inconclusive)."""
    rows = []
    joint = runs[is_joint(runs["modalities"])]
    base = joint[joint["method"] == BASELINE]
    for method, group in joint.groupby("method", sort=True):
        measure = ("centred_logit_share" if group["centred_logit_share"].notna().any() else "decides_share")
        label = {"centred_logit_share": "centred logit share", "decides_share": "share of decisions"}[measure]
        share = decision_share(group, dominant, measure)
        ok = converged.get(method, False) and converged.get(BASELINE, False)
        verdict = _verdict(_test(share.to_numpy(), null=0.5), ok,
                           f"{dominant} keeps more than half of the decision", f"{dominant} no longer dominates")
        rows.append(_row("1. the bias persists", method, f"{dominant}'s {label} - 0.5", verdict))
        inits = set(group.get("initialisation", pd.Series(["random"])))
        if method == BASELINE and inits and "random" not in inits:   # the paper's "even after pretraining"
            rows.append(_row("1. the bias persists after external pretraining", f"{method}: {'; '.join(sorted(inits))}",
                             f"{dominant}'s {label} - 0.5", verdict))
        if method == BASELINE or base.empty:
            continue
        paired = measure if base[measure].notna().any() else "decides_share"
        share = decision_share(group, dominant, paired)
        base_share = decision_share(base, dominant, paired)
        seeds = share.index.intersection(base_share.index)
        shift = _verdict(_test((share[seeds] - base_share[seeds]).to_numpy()), ok,
                         f"{dominant}'s share is larger than under the baseline",
                         f"{dominant}'s share is smaller than under the baseline",
                         labels=(f"towards {dominant}", f"towards {weak}"))
        rows.append(_row("1. shift from the baseline", method,
                         f"{dominant}'s {label if paired == measure else 'share of decisions'} minus the "
                         "baseline's, same seeds", shift))
    return rows


def source_findings(runs: pd.DataFrame, dominant: str, converged: dict[str, bool]) -> list[dict[str, Any]]:
    """Claim 2, on the baseline: the dominant modality has the larger features (log feature-norm ratio > 0)
    and the larger decision weights (weight share > 0.5)."""
    base = runs[runs["method"] == BASELINE]
    if base.empty:
        return []
    a = base["modalities"].iloc[0].split("+")[0]
    sign = 1.0 if dominant == a else -1.0
    ok = converged.get(BASELINE, False)
    rows = [_row("2. from feature-norm disparity", BASELINE,
                 f"log(||f_{dominant}|| / ||f_other||), mean over test clips",
                 _verdict(_test(sign * np.log(base["feature_norm_ratio"].to_numpy(float))), ok,
                          f"{dominant}'s features are larger", f"{dominant}'s features are smaller"))]
    if base["weight_share"].notna().any():
        shares = base["weight_share"].to_numpy(float)
        shares = shares if dominant == a else 1 - shares
        rows.append(_row("2. from decision-weight disparity", BASELINE, f"{dominant}'s share of ||W|| - 0.5",
                         _verdict(_test(shares, 0.5), ok, f"{dominant}'s decision weights are larger",
                                  f"{dominant}'s decision weights are smaller")))
    return rows


def weak_favoured_classes(per_class: pd.DataFrame, weak: str, strong: str) -> list[str]:
    """Classes where the unimodal model of the weaker modality (overall) beats the stronger one (seed means)."""
    acc = per_class[per_class["method"].isin([f"unimodal_{weak}", f"unimodal_{strong}"])]
    if acc.empty:
        return []
    table = acc.groupby(["class", "method"], sort=False)["acc"].mean().unstack("method")
    if f"unimodal_{weak}" not in table or f"unimodal_{strong}" not in table:
        return []
    return [str(c) for c, r in table.iterrows() if r[f"unimodal_{weak}"] > r[f"unimodal_{strong}"]]


def allocation_findings(per_class: pd.DataFrame, remedies: pd.DataFrame, classes: list[str], weak: str,
                        strong: str, converged: dict[str, bool], test_counts: dict[str, int]) -> list[dict[str, Any]]:
    """Claim 3: accuracy on the weak-favoured classes, allocation minus baseline, paired over seeds."""
    favoured = weak_favoured_classes(per_class, weak, strong)
    claim = "3. capability-aware allocation helps where the weak modality is more capable"
    if not favoured:
        return [_row(claim, "-", "no class where the weaker modality's unimodal model is more accurate",
                     {"verdict": "inconclusive", "reason": "nothing to test: no weak-favoured class",
                      "n_seeds": 0})]
    index = [classes.index(c) for c in favoured]
    clips = sum(test_counts.get(c, 0) for c in favoured)
    base = per_class[(per_class["method"] == BASELINE) & per_class["class"].isin(favoured)]
    base_acc = base.groupby("seed")["acc"].mean()      # unweighted mean over the classes
    rows = []
    for name, label in ALLOCATIONS.items():
        if name == "adaptive_fusion":
            other = per_class[(per_class["method"] == name) & per_class["class"].isin(favoured)]
            acc = other.groupby("seed")["acc"].mean()
            ok = converged.get(name, False) and converged.get(BASELINE, False)
        else:
            rem = (remedies[(remedies["method"] == BASELINE) & (remedies["remedy"] == name)] if len(remedies)
                   else remedies)
            if rem is None or rem.empty:
                continue
            acc = rem.set_index("seed")[[f"class_acc_{i}" for i in index]].mean(axis=1)
            ok = converged.get(BASELINE, False)
        if acc.empty:
            continue
        seeds = acc.index.intersection(base_acc.index)
        result = _test((acc[seeds] - base_acc[seeds]).to_numpy(float))
        verdict = _verdict(result, ok, f"higher accuracy on {', '.join(favoured)}",
                           f"lower accuracy on {', '.join(favoured)}")
        rows.append(_row(claim, label, f"accuracy on {', '.join(favoured)} ({clips} test clips) minus the "
                                       "baseline's, same seeds", verdict))
    return rows


def planted_findings(recovered: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per planted truth of a synthetic dataset: recovered or not."""
    rows = []
    for truth, value in recovered.items():
        found, missed = value.get("labels", ("recovered", "not recovered"))
        rows.append({"claim": "planted truth", "subject": truth, "evidence": value["evidence"],
                     "verdict": found if value["recovered"] else missed, "reason": value["reason"]})
    return rows


# Claim 3 measured by what under-use costs (issue 20): the failure mode is accuracy the baseline loses on a
# class against a reachable reference, and every allocation is scored on those classes.
FAILURE_CLAIM = "3. failure mode: the baseline loses accuracy on a class"
RECOVERY_CLAIM = "3. allocation recovers what the baseline loses"
OVERALL_CLAIM = "3. overall accuracy under each allocation (secondary)"


def under_use_by_cost(base: np.ndarray, reference: np.ndarray, alpha: float = ALPHA,
                      min_seeds: int = MIN_SEEDS) -> dict[str, np.ndarray]:
    """Per class, the accuracy the fused baseline loses against a reachable reference (reference - baseline),
    paired over seeds, and the classes where it loses significantly: mean loss > 0 with a Holm-adjusted
    (across classes) t-test p < alpha over at least min_seeds seeds.

    base: seeds x classes, the baseline's per-class test accuracy. reference: seeds x classes (e.g. the late
    fusion of the same seeds' unimodal models) or one value per class (e.g. the Bayes-optimal fusion)."""
    base = np.atleast_2d(np.asarray(base, float))
    ref = np.broadcast_to(np.asarray(reference, float), base.shape)
    loss = ref - base
    n = np.sum(~np.isnan(loss), 0)
    mean = np.array([np.nanmean(col) if k else np.nan for col, k in zip(loss.T, n, strict=True)])
    p = np.array([stats.t_test_p(col) for col in loss.T])
    p_holm = stats.holm(p)
    under = np.flatnonzero((mean > 0) & (p_holm < alpha) & (n >= min_seeds))
    return {"loss": mean, "p": p, "p_holm": p_holm, "n_seeds": n, "under_used": under}


def failure_mode_finding(classes: list[str], cost: dict[str, np.ndarray], reference: str,
                         capable_share: np.ndarray | None = None, capable: list[str] | None = None
                         ) -> dict[str, Any]:
    """The failure-mode row: which classes the baseline loses against `reference`, each with its loss and,
    as the mechanism, the more capable modality's share of the baseline's decision there."""
    parts = []
    for i in cost["under_used"]:
        text = f"{classes[i]} ({cost['loss'][i]:+.3f}, Holm p {cost['p_holm'][i]:.3g}"
        if capable_share is not None and capable is not None and capable[i] != "tie":
            text += f"; {capable[i]}'s share {capable_share[i]:.2f}"
        parts.append(text + ")")
    n = int(cost["n_seeds"].max()) if len(cost["n_seeds"]) else 0
    row = {"claim": FAILURE_CLAIM, "subject": f"baseline vs {reference}",
           "evidence": "; ".join(parts) or "no class", "n_seeds": n,
           "verdict": "found" if len(cost["under_used"]) else "not found",
           "reason": (f"per class, {reference} minus the baseline's accuracy > 0, paired over {n} seeds, t-test "
                      f"Holm-adjusted over {len(classes)} classes p < {ALPHA} (at least {MIN_SEEDS} seeds)")}
    if n < MIN_SEEDS:          # too few seeds to call a class lost, or none
        row |= {"verdict": "inconclusive", "reason": f"{n} seeds (a verdict needs {MIN_SEEDS})"}
    return row


def recovery_findings(base: pd.DataFrame, candidates: dict[str, pd.DataFrame], classes: list[str],
                      measured_on: list[str], converged: dict[str, bool],
                      test_counts: dict[str, int] | None = None,
                      where_lost: str = "where the baseline loses") -> list[dict[str, Any]]:
    """Claim 3 by cost: each allocation (a remedy applied to the baseline, or another method) against the
    baseline, paired over seeds, on every class (overall, unweighted mean over classes) and on the classes
    where the baseline loses (measured_on; where_lost says how they were chosen). base and each candidate:
    per-class accuracy, index seeds, columns classes. converged: per candidate label, whether its runs (and
    the baseline's) converged."""
    rows = []
    clips = sum((test_counts or {}).get(c, 0) for c in measured_on)
    for label, acc in candidates.items():
        seeds = acc.index.intersection(base.index)
        sets = [("overall", list(classes))]
        sets.append(("lost", list(measured_on)) if measured_on else ("lost", []))
        for kind, subset in sets:
            if not subset:
                rows.append(_row(RECOVERY_CLAIM, label, "accuracy on the classes the baseline loses",
                                 {"n_seeds": len(seeds), "verdict": "inconclusive",
                                  "reason": "nothing to recover: the baseline loses no class"}))
                continue
            diff = (acc.loc[seeds, subset].mean(axis=1) - base.loc[seeds, subset].mean(axis=1)).to_numpy(float)
            where = ("every class (unweighted mean)" if kind == "overall"
                     else f"{', '.join(subset)} ({clips} test clips), {where_lost}")
            verdict = _verdict(_test(diff), converged.get(label, False), f"higher accuracy on {where}",
                               f"lower accuracy on {where}")
            rows.append(_row(OVERALL_CLAIM if kind == "overall" else RECOVERY_CLAIM, label,
                             f"accuracy on {where} minus the baseline's, same seeds", verdict))
    return rows


def holm_claim3(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Holm's correction across the family of claim-3 comparisons: every claim-3 row with a p-value that
    compares accuracy on the classes claim 3 is about (the weak-favoured classes, the classes the baseline
    loses); the secondary overall-accuracy rows are corrected as a family of their own. Adds p_holm; a
    verdict significant only before the correction becomes inconclusive, with the reason."""
    def family(overall: bool) -> list[int]:
        return [i for i, r in enumerate(rows) if str(r.get("claim", "")).startswith("3.")
                and r.get("claim") != FAILURE_CLAIM and (r.get("claim") == OVERALL_CLAIM) == overall
                and not np.isnan(float(r.get("p", np.nan)))]

    def same_test(i: int) -> tuple[Any, ...]:
        """Rows that repeat one comparison (the weak-favoured classes are the planted failure classes, so the
        headline rows restate two recovery rows) carry the same effect, p and seeds: Holm counts it once."""
        effect = float(rows[i].get("effect", np.nan))
        return ("row", i) if np.isnan(effect) else (effect, float(rows[i]["p"]), rows[i].get("n_seeds"))

    out = [dict(r) for r in rows]
    for overall in (False, True):
        members = family(overall)
        first: dict[tuple[Any, ...], int] = {}     # each distinct test -> its first row
        for i in members:
            first.setdefault(same_test(i), i)
        tests = list(first)
        adjusted = dict(zip(tests, stats.holm(np.array([rows[first[t]]["p"] for t in tests], float)), strict=True))
        what = "overall-accuracy comparisons" if overall else "claim-3 comparisons"
        for i in members:
            p_holm = adjusted[same_test(i)]
            out[i]["p_holm"] = float(p_holm)
            if out[i]["verdict"] != "inconclusive" and p_holm >= ALPHA:
                out[i]["verdict"] = "inconclusive"
                out[i]["reason"] = (f"p = {out[i]['p']:.3g} < {ALPHA} but Holm-adjusted p = {p_holm:.3g} over the "
                                    f"{len(tests)} {what}")
    return out
