"""Tables for the report: the analysis summaries in 'mean ± std' form."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from avbias.analyse.contract import DatasetAnalysis
from avbias.config import group_by_seeds, protocol_text, seeds_label


def fmt(stat: tuple[float, float] | None, scale: float = 1.0, digits: int = 1) -> str:
    if stat is None:
        return "–"
    mean, std = stat
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


LITERATURE = "best test acc over epochs (%) — literature protocol: selected on test, optimistic"


def converged(a: DatasetAnalysis, method: str) -> str:
    hit = a.convergence[a.convergence["method"] == method] if len(a.convergence) else a.convergence
    if hit.empty:
        return "–"
    r = hit.iloc[0]
    return "yes" if r["converged"] else f"no (+{r['late_rise'] * 100:.1f} pts in the last quarter)"


def accuracy_table(a: DatasetAnalysis) -> pd.DataFrame:
    """Method x (test accuracy at the selected epoch, the literature's best-on-test figure, macro-F1, each
    branch's accuracy through the fused head), in %, and whether the method converged."""
    rows = []
    for method in a.runs["method"].unique():
        row = {"method": method, "seeds": int((a.runs["method"] == method).sum()), "converged": converged(a, method),
               "test acc (%)": fmt(a.stat(method, "test_acc"), 100),
               LITERATURE: fmt(a.stat(method, "literature_best_test_acc"), 100),
               "macro-F1 (%)": fmt(a.stat(method, "test_macro_f1"), 100)}
        for m in a.modalities:
            row[f"{m} branch acc (%)"] = fmt(a.stat(method, f"branch_acc_{m}"), 100)
        rows.append(row)
    return pd.DataFrame(rows)


def bias_table(a: DatasetAnalysis) -> pd.DataFrame:
    """Joint methods x decision-layer measures per modality, with the dominant modality of each."""
    rows = []
    for method in a.bias["dominance"]:
        row: dict[str, Any] = {"method": method}
        for m in a.modalities:
            row[f"‖W_{m}‖"] = fmt(a.stat(method, f"weight_norm_{m}"), digits=3)
        for m in a.modalities:
            row[f"mean |W_{m} f_{m}|"] = fmt(a.stat(method, f"logit_contrib_{m}"), digits=3)
        row["dominant (weights)"] = dominance_cell(a, method, "weight_norm")
        row["dominant (logits)"] = dominance_cell(a, method, "logit_contrib")
        rows.append(row)
    return pd.DataFrame(rows)


def persistence_table(a: DatasetAnalysis) -> pd.DataFrame:
    """Bias measure x method: mean ± std over seeds, 95% bootstrap CI, paired p against the baseline."""
    if a.persistence.empty:
        return pd.DataFrame()
    first = a.modalities[0] if a.modalities else "audio"
    rows = []
    for r in a.persistence.itertuples(index=False):
        rows.append({"measure": measure_label(r.measure, first), "method": r.method,
                     "mean ± std": f"{r.mean:.3f} ± {r.std:.3f}",
                     "95% CI": f"[{r.ci_low:.3f}, {r.ci_high:.3f}]" if pd.notna(r.ci_low) else "–",
                     "p vs baseline: paired t (exact sign-flip), n": (
                         f"{r.p_t_vs_baseline:.3f} ({r.p_vs_baseline:.2f}), {r.n_paired}"
                         if pd.notna(r.p_vs_baseline) else "–")})
    return pd.DataFrame(rows)


def measure_label(measure: str, first: str) -> str:
    return {"weight_share": f"{first} share of ‖W‖", "logit_share": f"{first} share of |W f|",
            "centred_logit_share": f"{first} share of |W f − mean over classes| (what softmax sees)",
            "decides_share": f"{first} share of decisions (disagreements)",
            "shapley_feature_share": f"{first} share of Shapley, features zeroed (avbias)",
            "shapley_input_share": f"{first} share of Shapley, inputs zeroed (BalanceBenchmark's)",
            "feature_norm_ratio": "‖f_a‖ / ‖f_v‖"}.get(measure, measure)


def dominance_cell(a: DatasetAnalysis, method: str, measure: str) -> str:
    """The tested verdict of one measure with its evidence, e.g. "audio (0.71, p 0.003)" or
    "inconclusive (leans visual, 0.52, p 0.41)"; why not, for heads the measure does not apply to."""
    r = a.bias.get("dominance_detail", {}).get(method, {}).get(measure)
    if r is None:
        return not_applicable(a, method, weights=measure == "weight_norm")
    evidence = f"{r['share']:.2f}, p {r['p']:.2g}, {r['n_seeds']} seeds"
    if r["verdict"] == "inconclusive":
        return f"inconclusive (leans {r['leans']}: {evidence})"
    return f"{r['verdict']} ({evidence})"


def not_applicable(a: DatasetAnalysis, method: str, weights: bool = False) -> str:
    run = a.runs[a.runs["method"] == method]
    fusion = str(run["fusion"].iloc[0]) if len(run) else ""
    if fusion in ("film", "gated"):
        return "not applicable (non-additive fusion)"
    if weights and fusion == "shared":
        return "not applicable (shared head)"
    return "–"


def findings_table(a: DatasetAnalysis) -> pd.DataFrame:
    """The paper's claims and the planted truths, each with its evidence, effect, CI, test and verdict."""
    if a.findings.empty:
        return pd.DataFrame()
    rows = []
    for r in a.findings.to_dict("records"):
        effect = "–" if pd.isna(r.get("effect")) else (
            f"{r['effect']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if pd.notna(r.get("ci_low"))
            else f"{r['effect']:+.3f}")
        rows.append({"claim": r["claim"], "subject": r["subject"], "evidence": r["evidence"],
                     "effect [95% t-interval over seeds]": effect,
                     "t-test p": "–" if pd.isna(r.get("p")) else f"{r['p']:.3g}",
                     # Holm's correction across every claim-3 comparison (findings.holm_claim3): the p the
                     # claim-3 verdicts are decided on.
                     "Holm p (claim-3 family)": "–" if pd.isna(r.get("p_holm")) else f"{r['p_holm']:.3g}",
                     "seeds": "–" if pd.isna(r.get("n_seeds")) else int(r["n_seeds"]),
                     "verdict": r["verdict"], "why": r["reason"]})
    return pd.DataFrame(rows)


def convergence_table(a: DatasetAnalysis) -> pd.DataFrame:
    if a.convergence.empty:
        return pd.DataFrame()
    return pd.DataFrame([{"method": r["method"], "curve": f"seed-mean {r['metric']}", "epochs": int(r["epochs"]),
                          "rise over the last quarter (pts)": f"{r['late_rise'] * 100:+.1f}",
                          "largest single-run rise (pts)": f"{r['max_run_late_rise'] * 100:+.1f}",
                          "converged (< 2 pts)": "yes" if r["converged"] else "no"}
                         for r in a.convergence.to_dict("records")])


def seeds_by_method(runs: pd.DataFrame) -> str:
    """The seeds the runs used: '0, 1, 2, 3', or, when methods differ (run.seeds_by_method), each seed set with
    its methods: '0, 1, 2, 3 (ogm_ge, pmr); 0-11 (baseline)'."""
    groups = group_by_seeds((method, group["seed"]) for method, group in runs.groupby("method", sort=True))
    if len(groups) < 2:
        return seeds_label(next(iter(groups), ()))
    return "; ".join(f"{seeds_label(seeds)} ({', '.join(methods)})" for seeds, methods in groups.items())


def protocol_table(a: DatasetAnalysis, params: dict[str, Any]) -> pd.DataFrame:
    """What every number in this dataset's section was computed with."""
    b = a.bias
    envs = [json.loads(e) for e in b.get("environment", [])]
    env = "; ".join(f"torch {e.get('torch')} on {e.get('device')}, {e.get('threads')} threads, "
                    f"oneDNN {'on' if e.get('mkldnn') else 'off'}" for e in envs) or "–"
    selection = {"val": "the best validation epoch (headline figures)", "last": "the last epoch (no validation split)"}
    rows = [("protocol", params["report"]["protocol"]),
            ("recipe", protocol_text(params, a.dataset)),     # composed from the params, not restated by hand
            ("model selection", "; ".join(selection.get(s, s) for s in b.get("selection", [])) or "–"),
            ("literature figure", "best test accuracy over epochs: selected on test, optimistic (shown apart)"),
            ("encoder initialisation", "; ".join(b.get("initialisation", [])) or "random"),
            ("seeds", seeds_by_method(a.runs)),
            ("test clips (analysis split)", b.get("test_clips", "–")),
            ("tests", "t-test over seeds (paired against the baseline where two methods are compared), "
                      "α = 0.05; exact sign-flip p beside it in the persistence table"),
            ("computed with", env)]
    return pd.DataFrame(rows, columns=["", "value"]).astype(str)


def remedies_table(a: DatasetAnalysis) -> pd.DataFrame:
    """Joint method x remedy: test accuracy, macro-F1, the weak modality's share of decisions (mean ± std)."""
    if a.remedies_summary.empty:
        return pd.DataFrame()
    s = a.remedies_summary.set_index(["method", "remedy", "measure"])
    rows = []
    for (method, remedy), _ in a.remedies.groupby(["method", "remedy"], sort=False):
        def cell(measure: str, scale: float = 100) -> str:
            hit = s.loc[(method, remedy, measure)] if (method, remedy, measure) in s.index else None
            return "–" if hit is None else f"{hit['mean'] * scale:.1f} ± {hit['std'] * scale:.1f}"
        rows.append({"method": method, "remedy": remedy, "test acc (%)": cell("test_acc"),
                     "macro-F1 (%)": cell("test_macro_f1"),
                     f"{a.bias.get('weak_modality')} decides (%)": cell("weak_decides")})
    return pd.DataFrame(rows)


# calibration.csv's columns as the report shows them: (header, scale, digits).
CALIBRATION_COLUMNS = {"test_nll": ("NLL", 1, 3), "test_ece": ("ECE (%)", 100, 1),
                       "temperature": ("T_m (fit on validation)", 1, 2),
                       "test_nll_calibrated": ("NLL, calibrated", 1, 3),
                       "test_ece_calibrated": ("ECE, calibrated (%)", 100, 1)}


def calibration_table(a: DatasetAnalysis) -> pd.DataFrame:
    """Joint method x branch: the branch's test NLL and ECE as trained, its temperature fit on validation, and
    its test NLL and ECE after it (mean ± std over seeds)."""
    if a.calibration.empty:
        return pd.DataFrame()
    rows = []
    for (method, modality), group in a.calibration.groupby(["method", "modality"], sort=False):
        row = {"method": method, "branch": modality}
        for column, (header, scale, digits) in CALIBRATION_COLUMNS.items():
            values = group[column].astype(float)
            row[header] = fmt((values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0), scale, digits)
        rows.append(row)
    return pd.DataFrame(rows)


def method_dataset_table(analyses: list[DatasetAnalysis]) -> pd.DataFrame:
    """Method x dataset: test accuracy (mean ± std over seeds) with each branch's accuracy beside it."""
    rows: dict[str, dict[str, str]] = {}
    for a in analyses:
        for method in a.runs["method"].unique():
            branches = " / ".join(fmt(a.stat(method, f"branch_acc_{m}"), 100) for m in a.modalities
                                  if a.stat(method, f"branch_acc_{m}") is not None)
            cell = fmt(a.stat(method, "test_acc"), 100) + (f" ({branches})" if branches else "")
            rows.setdefault(method, {"method": method})[a.dataset] = cell
    return pd.DataFrame(list(rows.values())).fillna("–")


def markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_no rows_\n"
    header = "| " + " | ".join(str(c).replace("|", "\\|") for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def data_table(acquired: dict[str, Any], extracted: dict[str, Any]) -> pd.DataFrame:
    """Where a dataset's clips came from and how many reached training (acquire.json, extract.json)."""
    rows = [("source", acquired["source"]), ("clips indexed", acquired["clips"]), ("classes", len(acquired["classes"]))]
    if "coverage" in acquired:
        cov = acquired["coverage"]
        rows.append(("coverage of the literature split",
                     f"{cov['found']} / {cov['total']} ({cov['coverage']:.1%}); missing ids: raw/missing_ids.txt"))
    if "excluded_defective" in acquired:
        rows.append(("known defective clips excluded", ", ".join(acquired["excluded_defective"]) or "none"))
        rows.append(("known defective clips kept", ", ".join(acquired["kept_defective"]) or "none"))
    rows += [("clips in the splits", extracted["clips"]), ("clips extracted", extracted["extracted"]),
             ("clips quarantined (undecodable)", extracted["quarantined"])]
    return pd.DataFrame(rows, columns=["", "value"]).astype(str)
