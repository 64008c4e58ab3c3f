"""End to end, with the real tools: Snakemake runs the tiny pipeline from media files to the report, and
the analysis finds whichever modality the data makes stronger. DVC: tests/test_dvc.py."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_project, snakemake

pytestmark = pytest.mark.slow

RESULTS = "results/tiny"


def read_bias(project: Path) -> dict:
    return json.loads((project / RESULTS / "analysis" / "synth_cremad" / "bias.json").read_text())


def assert_dominant(project: Path, modality: str) -> None:
    bias = read_bias(project)
    uni = bias["capability"]["unimodal_test_acc"]
    assert bias["capability"]["stronger"] == modality, uni
    verdict = bias["dominance"]["baseline"]
    # Every per-modality bias measure of the baseline names the modality the data makes stronger.
    for measure in ("weight_norm", "logit_contrib", "branch_acc", "decides", "shapley", "true_contrib"):
        assert verdict[measure] == modality, (measure, verdict)
    persistence = pd.read_csv(project / RESULTS / "analysis" / "synth_cremad" / "persistence.csv")
    shares = persistence[persistence["method"] == "baseline"].set_index("measure")["mean"]
    for measure in ("weight_share", "logit_share", "decides_share", "shapley_share"):   # audio's share
        assert (shares[measure] > 0.5) == (modality == "audio"), (measure, shares.to_dict())


def test_pipeline_produces_report_tables_and_metrics(tiny_pipeline: Path) -> None:
    project = tiny_pipeline
    for method in ("unimodal_audio", "unimodal_visual", "baseline"):
        for seed in (0, 1):
            run_dir = project / RESULTS / "runs" / "synth_cremad" / method / f"seed{seed}"
            metrics = json.loads((run_dir / "metrics.json").read_text())
            assert metrics["method"] == method and metrics["seed"] == seed
            assert 0 <= metrics["best_epoch"] < 15
            assert len(metrics["test"]["per_class_acc"]) == 6
            assert len(pd.read_csv(run_dir / "curve.csv")) == 15
    html = (project / RESULTS / "report" / "report.html").read_text()
    from avbias.report.figures import FIGURES

    assert html.count("<img") == len(FIGURES) == 11 and html.count("<figcaption>") == len(FIGURES)
    summary = (project / RESULTS / "summary.md").read_text()
    assert "### Accuracy" in summary and "### Decision-layer bias" in summary
    assert "## Test accuracy, method × dataset" in summary and "### Persistence of the bias" in summary
    assert "| baseline | class_weights |" in summary
    assert "### Data" in summary and "clips quarantined (undecodable)" in summary
    assert "| baseline |" in summary
    metrics = json.loads((project / RESULTS / "metrics.json").read_text())["synth_cremad"]
    assert set(metrics) == {"unimodal_audio", "unimodal_visual", "baseline"}
    assert metrics["baseline"]["weight_share_audio"] + metrics["baseline"]["weight_share_visual"] == pytest.approx(1)
    # Every rule wrote its log.
    logs = {p.relative_to(project / "logs" / "tiny").parts[0] for p in (project / "logs" / "tiny").rglob("*.log")}
    assert logs == {"acquire", "manifest", "extract", "train", "analyse", "report.log"}


def test_audio_dominant_data_gives_audio_dominant_measures(tiny_pipeline: Path) -> None:
    assert_dominant(tiny_pipeline, "audio")


def test_second_run_has_nothing_to_do(tiny_pipeline: Path) -> None:
    proc = snakemake(tiny_pipeline, "all", "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_swapped_knobs_make_visual_dominant(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"synth": {"audio_snr_db": -30.0, "visual_snr_db": 30.0}, "run": {"seeds": [0]}})
    snakemake(project, "all")
    assert_dominant(project, "visual")


def test_every_method_trains_analyses_and_reports(tiny_pipeline: Path) -> None:
    """Every registered method, 1 epoch, one seed, on the tiny pipeline's shards, through analysis and report."""
    import yaml

    from avbias.methods import METHODS

    project = tiny_pipeline
    (project / "all_methods.yaml").write_text(yaml.safe_dump({
        "paths": {"results": "results/all", "logs": "logs/all"},
        "run": {"methods": sorted(METHODS), "seeds": [0]}, "train": {"epochs": 1}}))
    from conftest import run

    run(["snakemake", "all", "--cores", "2", "--configfile", "params.yaml", "tiny.yaml", "all_methods.yaml"], project)
    metrics = json.loads((project / "results" / "all" / "metrics.json").read_text())["synth_cremad"]
    assert set(metrics) == set(METHODS)
    runs = pd.read_csv(project / "results" / "all" / "analysis" / "synth_cremad" / "runs.csv").set_index("method")
    assert set(runs.loc[["baseline_film", "baseline_gated"], "fusion"]) == {"film", "gated"}
    assert runs.loc["mla", "weight_share"] == pytest.approx(0.5)          # one head shared by both modalities
    remedies = pd.read_csv(project / "results" / "all" / "analysis" / "synth_cremad" / "remedies.csv")
    assert {"baseline", "ogm_ge", "adaptive_fusion"} <= set(remedies["method"]) and "mla" not in set(remedies["method"])
    curve = pd.read_csv(project / "results" / "all" / "runs" / "synth_cremad" / "gblending" / "seed0" / "curve.csv")
    assert {"weight_fused", "weight_audio", "weight_visual"} <= set(curve.columns)


def test_training_reads_only_shards(tiny_pipeline: Path, tmp_path: Path) -> None:
    """With every media file moved away, training still runs: it reads the feature shards only."""
    from avbias.config import load_params, run_params_json
    from conftest import run

    project = tiny_pipeline
    raw = project / "data" / "tiny" / "raw" / "synth_cremad"
    hidden = tmp_path / "media-away"
    raw.rename(hidden)
    try:
        params = load_params(project / "params.yaml", project / "tiny.yaml")
        params["train"]["epochs"] = 2
        run(["avbias", "train", "--params", run_params_json(params, "baseline"), "--dataset", "synth_cremad",
             "--method", "baseline", "--seed", "0", "--features", "data/tiny/features/synth_cremad",
             "--out", str(tmp_path / "run")], project)
    finally:
        hidden.rename(raw)
    assert not list(tmp_path.glob("media-away"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["method"] == "baseline"
