"""The report on small in-memory analyses (avbias.analyse.contract.DatasetAnalysis): what each table shows,
that every figure draws a file, that absent optional tables give empty sections rather than errors, and
that the contract's files load back exactly as saved. No pipeline runs: the analyses are written by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from avbias.analyse.contract import FILES, TABLES, DatasetAnalysis, is_joint, read_table
from avbias.config import load_params
from avbias.report import figures, tables
from avbias.report.build import build_report, metrics_for_dvc, verdict_text
from avbias.report.figures import FIGURES

from conftest import REPO

CLASSES = ["NEU", "HAP", "SAD"]
SEEDS = [0, 1, 2]
MODALITIES = ("audio", "visual")
# method -> (modalities, fusion, test accuracy)
METHODS = {"unimodal_audio": ("audio", "concat", 0.70), "unimodal_visual": ("visual", "concat", 0.40),
           "baseline": ("audio+visual", "concat", 0.75), "baseline_film": ("audio+visual", "film", 0.72),
           "mla": ("audio+visual", "shared", 0.74)}
JOINT = [m for m, (mods, _, _) in METHODS.items() if "+" in mods]
LINEAR = ["baseline"]                        # the only head with decision weights W_m
ADDITIVE = ["baseline", "mla"]               # heads whose logits decompose into W_m f_m


def summarise(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The summary's long format (mean, std, n over seeds per measure), as the analysis writes it."""
    long = frame.melt(id_vars=by, value_vars=[c for c in frame if c not in (*by, "seed")], var_name="measure")
    long = long.dropna(subset=["value"])
    out = long.groupby([*by, "measure"], sort=True)["value"].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"count": "n"}).assign(ci_low=out["mean"] - 0.01, ci_high=out["mean"] + 0.01)


def make_analysis(methods: dict[str, tuple[str, str, float]] = METHODS) -> DatasetAnalysis:
    runs, per_class, samples, curves = [], [], [], []
    for method, (mods, fusion, acc) in methods.items():
        for seed in SEEDS:
            row: dict[str, Any] = {"method": method, "seed": seed, "modalities": mods, "fusion": fusion,
                                   "test_acc": acc + 0.01 * seed, "test_macro_f1": acc - 0.05,
                                   "literature_best_test_acc": acc + 0.03}
            if "+" in mods:
                row |= {"branch_acc_audio": 0.65, "branch_acc_visual": 0.30, "decides_audio": 0.8,
                        "decides_visual": 0.2}
                if method in LINEAR:
                    row |= {"weight_norm_audio": 2.0, "weight_norm_visual": 1.0}
                if method in ADDITIVE:
                    row |= {"logit_contrib_audio": 1.5, "logit_contrib_visual": 0.5}
            runs.append(row)
            for c, name in enumerate(CLASSES):
                cls = {"method": method, "seed": seed, "class": name, "acc": acc - 0.1 * c}
                if "+" in mods:
                    cls |= {"branch_acc_audio": 0.6, "branch_acc_visual": 0.3, "reliance_share_audio": 0.7}
                    if method in LINEAR:
                        cls |= {"weight_norm_audio": 1.0 + c, "weight_norm_visual": 0.5}
                per_class.append(cls)
            if "+" in mods:
                samples += [{"method": method, "seed": seed, "label": i % 3, "feature_norm_audio": 1.0 + i,
                             "feature_norm_visual": 0.5 + i,
                             **({"true_contrib_audio": 0.4, "true_contrib_visual": 0.1, "margin_contrib_audio": 0.3,
                                 "margin_contrib_visual": -0.1} if method in ADDITIVE else {})} for i in range(6)]
            curves += [{"epoch": e, "train_acc": 0.3 + 0.05 * e, "val_acc": 0.3 + 0.04 * e, "method": method,
                        "seed": seed} for e in range(8)]
    runs_frame = pd.DataFrame(runs)
    joint = [m for m in methods if "+" in methods[m][0]]
    persistence = pd.DataFrame([{"measure": "weight_share", "method": "baseline", "mean": 0.67, "std": 0.02, "n": 3,
                                 "ci_low": 0.65, "ci_high": 0.69, "p_vs_baseline": float("nan"),
                                 "p_t_vs_baseline": float("nan"), "n_paired": 0}] if "baseline" in joint else [])
    # Per class, "none" is the baseline as trained; temperature gains 0.02 x the class index, and 0.03 more on
    # seed 2 (+0.01 over the seeds).
    remedies = pd.DataFrame([{"method": "baseline", "seed": s, "remedy": r, "test_acc": 0.75 + d, "test_macro_f1": 0.7,
                              "weak": "visual", "weak_decides": 0.2 + d,
                              **{f"class_acc_{c}": 0.75 - 0.1 * c + d * c + (0.03 if d and s == 2 else 0.0)
                                 for c in range(len(CLASSES))}}
                             for s in SEEDS for r, d in (("none", 0.0), ("temperature", 0.02))]
                            if "baseline" in joint else [])
    # Each branch of the linear head: audio over-confident (T 1.5), visual under-confident (T 0.8).
    calibration = pd.DataFrame([{"method": "baseline", "seed": s, "modality": m, "test_nll": nll + 0.1 * s,
                                 "test_ece": ece, "temperature": t, "test_nll_calibrated": nll - 0.1,
                                 "test_ece_calibrated": 0.03}
                                for s in SEEDS for m, nll, ece, t in (("audio", 0.9, 0.12, 1.5),
                                                                      ("visual", 1.4, 0.05, 0.8))]
                               if "baseline" in joint else [])
    dominance = {"baseline": {"weight_norm": {"verdict": "audio", "leans": "audio", "share": 0.67, "p": 0.003,
                                              "n_seeds": 3},
                              "logit_contrib": {"verdict": "inconclusive", "leans": "visual", "share": 0.52,
                                                "p": 0.41, "n_seeds": 3}}} if "baseline" in joint else {}
    findings = pd.DataFrame([
        {"claim": "1. the bias persists", "subject": "baseline", "evidence": "audio share 0.67", "effect": 0.17,
         "ci_low": 0.12, "ci_high": 0.22, "p": 0.004, "p_holm": float("nan"), "n_seeds": 3, "verdict": "supported",
         "reason": "p < 0.05 over 3 converged seeds"},
        {"claim": "3. allocation", "subject": "remedy: class_weights", "evidence": "SAD +2.0 pts",
         "effect": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "p": 0.2, "p_holm": 0.4,
         "n_seeds": 3, "verdict": "inconclusive", "reason": "Holm p 0.4"}]) if joint else pd.DataFrame()
    capability = pd.DataFrame([{"class": c, "source": "unimodal model", "modality": m, "value": v}
                               for c in CLASSES for m, v in (("audio", 0.7), ("visual", 0.4))])
    curves_frame = pd.DataFrame(curves)
    return DatasetAnalysis(
        bias={"dataset": "toy", "split": "test", "dominance": {m: {k: r["verdict"] for k, r in d.items()}
                                                               for m, d in dominance.items()},
              "dominance_detail": dominance,
              "capability": {"unimodal_test_acc": {"audio": 0.71, "visual": 0.41}, "stronger": "audio"},
              "weak_modality": "visual" if joint else None, "selection": ["val"], "test_clips": 18, "seeds": SEEDS,
              "environment": [json.dumps({"torch": "2.11", "device": "cpu", "threads": 1, "mkldnn": True})],
              "initialisation": ["random"], "findings": findings.to_dict("records")},
        runs=runs_frame, summary=summarise(runs_frame.drop(columns=["modalities", "fusion"]), ["method"]),
        per_class=pd.DataFrame(per_class), samples=pd.DataFrame(samples), curves=curves_frame,
        convergence=pd.DataFrame([{"method": m, "metric": "val_acc", "epochs": 8, "late_rise": 0.05 if m == "mla"
                                   else 0.0, "max_run_late_rise": 0.06, "converged": m != "mla"} for m in methods]),
        persistence=persistence, remedies=remedies,
        remedies_summary=(summarise(remedies.drop(columns=["weak"]), ["method", "remedy"]) if len(remedies)
                          else pd.DataFrame()),
        calibration=calibration, capability=capability,
        references=pd.DataFrame(columns=["seed", "class", "reference", "acc"]),
        findings=findings)


@pytest.fixture
def analysis() -> DatasetAnalysis:
    return make_analysis()


@pytest.fixture
def unimodal_only() -> DatasetAnalysis:
    """Only unimodal runs: no joint model, so the bias, persistence, remedies and findings tables are empty."""
    return make_analysis({m: METHODS[m] for m in ("unimodal_audio", "unimodal_visual")})


@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    return load_params(REPO / "params.yaml")


# --- the contract -------------------------------------------------------------------------------------------


def test_saved_analysis_loads_back_and_saves_to_the_same_bytes(analysis: DatasetAnalysis, tmp_path: Path) -> None:
    analysis.save(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(FILES.values())
    loaded = DatasetAnalysis.load(tmp_path / "a")
    loaded.save(tmp_path / "b")
    for name in FILES.values():
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert loaded.bias == json.loads(json.dumps(analysis.bias))
    pd.testing.assert_frame_equal(loaded.runs[["method", "seed", "modalities"]],
                                  analysis.runs[["method", "seed", "modalities"]], check_dtype=False)
    assert loaded.dataset == "toy" and loaded.modalities == list(MODALITIES)


def test_a_table_without_rows_or_columns_loads_empty(unimodal_only: DatasetAnalysis, tmp_path: Path) -> None:
    unimodal_only.save(tmp_path)
    assert (tmp_path / FILES["persistence"]).read_text() == "\n"
    assert read_table(tmp_path, "persistence").empty
    assert list(read_table(tmp_path, "references").columns) == ["seed", "class", "reference", "acc"]
    (tmp_path / FILES["samples"]).unlink()                  # an older analysis without one of the tables
    assert DatasetAnalysis.load(tmp_path).samples.empty


def test_an_analysis_saved_before_the_calibration_table_loads(analysis: DatasetAnalysis, tmp_path: Path) -> None:
    analysis.save(tmp_path)
    (tmp_path / FILES["calibration"]).unlink()
    loaded = DatasetAnalysis.load(tmp_path)
    assert loaded.calibration.empty and tables.calibration_table(loaded).empty


def test_every_field_has_its_file() -> None:
    assert FILES["bias"] == "bias.json" and set(TABLES) == set(FILES) - {"bias"}
    assert all(FILES[t] == f"{t}.csv" for t in TABLES)


def test_joint_rows_and_methods_are_those_with_two_modalities(analysis: DatasetAnalysis) -> None:
    assert is_joint(pd.Series(["audio", "audio+visual", "visual"])).tolist() == [False, True, False]
    assert analysis.joint_methods == JOINT


# --- tables -------------------------------------------------------------------------------------------------


def test_findings_table_has_one_row_per_claim_with_its_verdict(analysis: DatasetAnalysis) -> None:
    table = tables.findings_table(analysis)
    assert table["verdict"].tolist() == ["supported", "inconclusive"]
    first, second = table.to_dict("records")
    assert first["effect [95% t-interval over seeds]"] == "+0.170 [+0.120, +0.220]"
    assert first["Holm p (claim-3 family)"] == "–" and second["Holm p (claim-3 family)"] == "0.4"
    assert second["effect [95% t-interval over seeds]"] == "–" and second["seeds"] == 3


def test_accuracy_table_gives_each_method_its_seeds_accuracy_and_convergence(analysis: DatasetAnalysis) -> None:
    table = tables.accuracy_table(analysis).set_index("method")
    assert list(table.index) == list(METHODS)
    assert table.loc["baseline", "seeds"] == 3
    assert table.loc["baseline", "test acc (%)"] == "76.0 ± 1.0"
    assert table.loc["baseline", "audio branch acc (%)"] == "65.0 ± 0.0"
    assert table.loc["unimodal_audio", "audio branch acc (%)"] == "–"       # no branch through a fused head
    assert table.loc["baseline", "converged"] == "yes"
    assert table.loc["mla", "converged"] == "no (+5.0 pts in the last quarter)"


def test_bias_table_states_each_verdict_with_its_evidence_or_why_none(analysis: DatasetAnalysis) -> None:
    table = tables.bias_table(analysis).set_index("method")
    assert table.loc["baseline", "dominant (weights)"] == "audio (0.67, p 0.003, 3 seeds)"
    assert table.loc["baseline", "dominant (logits)"] == "inconclusive (leans visual: 0.52, p 0.41, 3 seeds)"
    assert tables.dominance_cell(analysis, "baseline_film", "weight_norm") == "not applicable (non-additive fusion)"
    assert tables.dominance_cell(analysis, "mla", "weight_norm") == "not applicable (shared head)"
    assert tables.dominance_cell(analysis, "mla", "logit_contrib") == "–"


def test_persistence_and_remedies_tables_format_their_statistics(analysis: DatasetAnalysis) -> None:
    persistence = tables.persistence_table(analysis).iloc[0]
    assert persistence["measure"] == "audio share of ‖W‖" and persistence["95% CI"] == "[0.650, 0.690]"
    assert persistence["p vs baseline: paired t (exact sign-flip), n"] == "–"    # the baseline against itself
    remedies = tables.remedies_table(analysis).set_index("remedy")
    assert list(remedies.index) == ["none", "temperature"]
    assert remedies.loc["temperature", "test acc (%)"] == "77.0 ± 0.0"
    assert remedies.loc["temperature", "visual decides (%)"] == "22.0 ± 0.0"


def test_calibration_table_gives_each_branch_its_scores_over_seeds(analysis: DatasetAnalysis) -> None:
    table = tables.calibration_table(analysis).set_index(["method", "branch"])
    assert list(table.index) == [("baseline", "audio"), ("baseline", "visual")]
    audio, visual = table.loc[("baseline", "audio")], table.loc[("baseline", "visual")]
    assert audio["NLL"] == "1.000 ± 0.100"                     # 0.9, 1.0, 1.1 over the seeds: sd 0.1
    assert audio["ECE (%)"] == "12.0 ± 0.0" and audio["T_m (fit on validation)"] == "1.50 ± 0.00"
    assert audio["NLL, calibrated"] == "0.800 ± 0.000" and audio["ECE, calibrated (%)"] == "3.0 ± 0.0"
    assert visual["T_m (fit on validation)"] == "0.80 ± 0.00" and visual["ECE (%)"] == "5.0 ± 0.0"


def test_absent_optional_tables_give_empty_sections(unimodal_only: DatasetAnalysis) -> None:
    for table in (tables.findings_table, tables.persistence_table, tables.remedies_table, tables.bias_table,
                  tables.calibration_table):
        assert table(unimodal_only).empty, table.__name__
    assert tables.markdown(tables.remedies_table(unimodal_only)) == "_no rows_\n"
    assert len(tables.convergence_table(unimodal_only)) == 2


def test_protocol_and_overview_tables(analysis: DatasetAnalysis, params: dict[str, Any]) -> None:
    protocol = dict(tables.protocol_table(analysis, params).to_numpy().tolist())
    assert protocol["seeds"] == "0, 1, 2" and protocol["test clips (analysis split)"] == "18"
    assert protocol["computed with"] == "torch 2.11 on cpu, 1 threads, oneDNN on"
    overview = tables.method_dataset_table([analysis]).set_index("method")
    assert overview.loc["baseline", "toy"] == "76.0 ± 1.0 (65.0 ± 0.0 / 30.0 ± 0.0)"
    assert overview.loc["unimodal_audio", "toy"] == "71.0 ± 1.0"


def test_markdown_escapes_pipes() -> None:
    assert tables.markdown(pd.DataFrame({"a|b": ["x|y"]})) == "| a\\|b |\n|---|\n| x\\|y |\n"


# --- figures, the page and the metrics ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_draws_a_png_and_returns_its_caption(name: str, analysis: DatasetAnalysis,
                                                          unimodal_only: DatasetAnalysis, tmp_path: Path) -> None:
    for a, path in ((analysis, tmp_path / "full.png"), (unimodal_only, tmp_path / "unimodal.png")):
        caption = FIGURES[name](a, path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert caption.startswith("toy: "), caption


def test_figures_without_their_data_say_so(unimodal_only: DatasetAnalysis, tmp_path: Path) -> None:
    assert FIGURES["persistence"](unimodal_only, tmp_path / "p.png") == "toy: no joint runs."
    assert FIGURES["remedies"](unimodal_only, tmp_path / "r.png") == "toy: no joint runs with a linear head."
    assert (FIGURES["claim3_per_class"](unimodal_only, tmp_path / "c.png")
            == "toy: no baseline with a remedy or another joint method to compare.")
    joint_only = make_analysis({m: METHODS[m] for m in JOINT})
    assert FIGURES["claim3_per_class"](joint_only, tmp_path / "j.png") == "toy: no unimodal model of each modality."


def test_claim3_figure_points_are_each_allocations_change_against_the_capability_gap(
        analysis: DatasetAnalysis, tmp_path: Path) -> None:
    pc = analysis.per_class
    pc.loc[(pc["method"] == "unimodal_visual") & (pc["class"] == "SAD"), "acc"] = 0.95   # visual's class
    first, second, gap = figures.capability_gap(analysis)
    # Unimodal audio 0.70 - 0.1 c, visual 0.40 - 0.1 c but 0.95 on SAD (c = 2).
    assert (first, second) == MODALITIES and list(gap.index) == CLASSES
    np.testing.assert_allclose(gap, [0.3, 0.3, 0.5 - 0.95])
    changes = figures.allocation_changes(analysis)
    # The claim-3 findings' names: remedies against the baseline as trained, methods against the baseline.
    assert list(changes) == ["remedy: temperature", "method: baseline_film", "method: mla"]
    np.testing.assert_allclose(changes["remedy: temperature"], [0.01, 0.03, 0.05])
    np.testing.assert_allclose(changes["method: baseline_film"], [0.72 - 0.75] * 3)
    np.testing.assert_allclose(changes["method: mla"], [0.74 - 0.75] * 3)
    caption = FIGURES["claim3_per_class"](analysis, tmp_path / "claim3.png")
    assert caption.startswith("toy: claim 3 per class. x: the capability gap, the audio unimodal model's")


def test_verdict_text_and_dvc_metrics(analysis: DatasetAnalysis) -> None:
    text = verdict_text(analysis)
    assert "the more capable modality is <b>audio</b>" in text
    assert "baseline: decision weights favour <b>audio (0.67, p 0.003, 3 seeds)</b>" in text
    metrics = metrics_for_dvc(analysis)
    assert metrics["baseline"]["test_acc"] == pytest.approx(0.76) and "weight_norm_audio" not in metrics["baseline"]


DATA = ({"source": "synthetic", "clips": 18, "classes": CLASSES}, {"clips": 18, "extracted": 18, "quarantined": 0})


def test_build_report_writes_the_page_summary_metrics_and_plots(analysis: DatasetAnalysis,
                                                               unimodal_only: DatasetAnalysis,
                                                               params: dict[str, Any], tmp_path: Path) -> None:
    other = make_analysis({m: METHODS[m] for m in ("unimodal_audio", "unimodal_visual")})
    other.bias["dataset"] = "toy2"
    build_report([analysis, other], [DATA, DATA], tmp_path / "report", tmp_path / "summary.md",
                 tmp_path / "metrics.json", params)
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("<img") == 2 * len(FIGURES)
    assert html.index("<h2>Findings</h2>") < html.index("<h2>toy</h2>")          # findings first
    summary = (tmp_path / "summary.md").read_text()
    assert "### Branch calibration (test split, temperatures fit on validation)\n" in summary
    assert "| baseline | audio | 1.000 ± 0.100 |" in summary
    assert "### Findings: toy\n" in summary and "| 1. the bias persists | baseline |" in summary
    assert "### Findings: toy2\n\n_no rows_" in summary                          # no joint runs, no claims
    assert set(json.loads((tmp_path / "metrics.json").read_text())) == {"toy", "toy2"}
    plot = pd.read_csv(tmp_path / "report" / "plots" / "toy" / "baseline.csv")
    assert list(plot.columns) == ["epoch", "accuracy"] and plot["accuracy"].iloc[-1] == pytest.approx(0.58)


def test_the_protocol_table_names_each_methods_seeds_when_they_differ() -> None:
    """run.seeds_by_method (the demo's 12 baseline seeds beside 4): the Protocol table's seeds row says which
    methods ran which seeds, not their union."""
    runs = pd.DataFrame({"method": ["ogm_ge"] * 4 + ["baseline"] * 6 + ["pmr"] * 4,
                         "seed": [0, 1, 2, 3] + [0, 1, 2, 3, 4, 5] + [3, 2, 1, 0]})
    assert tables.seeds_by_method(runs) == "0-5 (baseline); 0, 1, 2, 3 (ogm_ge, pmr)"
    assert tables.seeds_by_method(runs[runs["seed"] < 4]) == "0, 1, 2, 3"
