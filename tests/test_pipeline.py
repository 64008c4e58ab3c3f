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
    assert verdict["weight_norm"] == modality, verdict
    assert verdict["logit_contrib"] == modality, verdict
    assert verdict["branch_acc"] == modality, verdict


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
    assert html.count("<img") == 4 and html.count("<figcaption>") == 4
    summary = (project / RESULTS / "summary.md").read_text()
    assert "### Accuracy" in summary and "### Decision-layer bias" in summary
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
    project = make_project(tmp_path, {"synth": {"audio_snr_db": -30.0, "visual_snr_db": 30.0}})
    snakemake(project, "all")
    assert_dominant(project, "visual")


def test_training_reads_only_shards(tiny_pipeline: Path, tmp_path: Path) -> None:
    """With every media file moved away, training still runs: it reads the feature shards only."""
    from avbias.config import load_params, stage_params_json
    from conftest import run

    project = tiny_pipeline
    raw = project / "data" / "tiny" / "raw" / "synth_cremad"
    hidden = tmp_path / "media-away"
    raw.rename(hidden)
    try:
        params = load_params(project / "params.yaml", project / "tiny.yaml")
        params["train"]["epochs"] = 2
        run(["avbias", "train", "--params", stage_params_json(params, "train"), "--dataset", "synth_cremad",
             "--method", "baseline", "--seed", "0", "--features", "data/tiny/features/synth_cremad",
             "--out", str(tmp_path / "run")], project)
    finally:
        hidden.rename(raw)
    assert not list(tmp_path.glob("media-away"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["method"] == "baseline"
