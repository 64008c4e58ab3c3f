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


def assert_dominant(project: Path, modality: str, measures: tuple[str, ...] = (
        "weight_norm", "logit_contrib", "centred_contrib", "branch_acc", "decides", "shapley_feature", "shapley_input",
        "true_contrib")) -> None:
    bias = read_bias(project)
    uni = bias["capability"]["unimodal_test_acc"]
    assert bias["capability"]["stronger"] == modality, uni
    found = bias["dominance_detail"]["baseline"]
    # Every per-modality bias measure of the baseline leans to the modality the data makes stronger (one seed:
    # a lean, not yet a tested verdict).
    for measure in measures:
        assert found[measure]["leans"] == modality, (measure, found)
    persistence = pd.read_csv(project / RESULTS / "analysis" / "synth_cremad" / "persistence.csv")
    shares = persistence[persistence["method"] == "baseline"].set_index("measure")["mean"]
    share_of = {"weight_norm": "weight_share", "logit_contrib": "logit_share", "centred_contrib": "centred_logit_share",
                "decides": "decides_share", "shapley_feature": "shapley_feature_share",
                "shapley_input": "shapley_input_share"}
    for measure in (share_of[m] for m in measures if m in share_of):   # audio's share
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
    from avbias.analyse.contract import FILES

    # The analysis writes exactly its contract's files, all of which the analyse rule declares.
    assert sorted(p.name for p in (project / RESULTS / "analysis" / "synth_cremad").iterdir()) == sorted(FILES.values())
    html = (project / RESULTS / "report" / "report.html").read_text()
    from avbias.report.figures import FIGURES

    assert html.count("<img") == len(FIGURES) and html.count("<figcaption>") == len(FIGURES)
    assert (sorted(p.name for p in (project / RESULTS / "report" / "figures").glob("*.png"))
            == sorted(f"synth_cremad_{name}.png" for name in FIGURES))
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
    snakemake(project, "analyse_all")      # the measures are the analysis's; the report is the tiny pipeline's test
    # One seed at tiny size: the capability and the decision weights follow the data; the decisions where the
    # branches disagree and the class-centred contributions need more than one tiny seed to settle.
    assert_dominant(project, "visual", ("weight_norm", "logit_contrib", "branch_acc"))


def test_every_method_trains_analyses_and_reports(tiny_pipeline: Path) -> None:
    """Every registered method, 1 epoch, one seed, on the tiny pipeline's shards, through analysis and report:
    each stage's command as its rule runs it, in this process: through Snakemake, 14 jobs' start-up took
    minutes (docs/benchmarks.md). Snakemake's part, the pretrained runs' order and paths, is tested on its own
    (test_workflow.py::test_a_method_that_builds_on_runs_gets_their_models_as_inputs)."""
    from avbias.config import deep_merge, load_params, stage_params_json
    from avbias.methods import METHODS, method_class, run_params_json
    from avbias.train import run_dir

    from conftest import avbias_in_process

    project = tiny_pipeline
    dataset, results = "synth_cremad", project / "results" / "all"
    params = deep_merge(load_params(project / "params.yaml", project / "tiny.yaml"),
                        {"run": {"methods": sorted(METHODS), "seeds": [0]}, "train": {"epochs": 1}})
    raw, features = (str(project / "data" / "tiny" / stage / dataset) for stage in ("raw", "features"))
    run_dirs = {m: run_dir(str(results), dataset, m, "0") for m in METHODS}
    for method in sorted(METHODS, key=lambda m: len(method_class(m).pretrained)):   # the runs it builds on first
        avbias_in_process("train", "--params", run_params_json(params, method, dataset), "--dataset", dataset,
                          "--method", method, "--seed", "0", "--features", features, "--out", run_dirs[method],
                          "--pretrained", *(f"{run_dirs[p]}/model.pt" for p in method_class(method).pretrained))
    analysis = str(results / "analysis" / dataset)
    avbias_in_process("analyse", "--params", stage_params_json(params, "analyse"), "--dataset", dataset,
                      "--runs", *run_dirs.values(), "--out", analysis)
    avbias_in_process("report", "--params", stage_params_json(params, "report"), "--analysis", analysis,
                      "--raw", raw, "--features", features, "--out", str(results / "report"),
                      "--summary", str(results / "summary.md"), "--metrics", str(results / "metrics.json"))
    metrics = json.loads((results / "metrics.json").read_text())[dataset]
    assert set(metrics) == set(METHODS)
    runs = pd.read_csv(project / "results" / "all" / "analysis" / "synth_cremad" / "runs.csv").set_index("method")
    assert set(runs.loc[["baseline_film", "baseline_gated"], "fusion"]) == {"film", "gated"}
    # One head shared by both modalities: weight-based measures do not apply (no number, no test).
    assert pd.isna(runs.loc["mla", "weight_share"]) and pd.notna(runs.loc["mla", "logit_share"])
    persistence = pd.read_csv(project / "results" / "all" / "analysis" / "synth_cremad" / "persistence.csv")
    assert persistence[(persistence["method"] == "mla") & (persistence["measure"] == "weight_share")].empty
    html = (project / "results" / "all" / "report" / "report.html").read_text()
    assert "not applicable (non-additive fusion)" in html and "not applicable (shared head)" in html
    assert "favour <b>None</b>" not in html
    remedies = pd.read_csv(project / "results" / "all" / "analysis" / "synth_cremad" / "remedies.csv")
    assert {"baseline", "ogm_ge", "adaptive_fusion"} <= set(remedies["method"]) and "mla" not in set(remedies["method"])
    from avbias.analyse.remedies import REMEDIES

    assert set(remedies["remedy"]) == {"none", *REMEDIES}
    # Each branch's calibration on the runs the remedies apply to, one row per branch.
    calibration = pd.read_csv(project / "results" / "all" / "analysis" / "synth_cremad" / "calibration.csv")
    assert set(calibration["method"]) == set(remedies["method"])
    assert len(calibration) == 2 * remedies["method"].nunique() and set(calibration["modality"]) == {"audio", "visual"}
    assert (calibration["temperature"] > 0).all() and calibration["test_ece"].between(0, 1).all()
    curve = pd.read_csv(project / "results" / "all" / "runs" / "synth_cremad" / "gblending" / "seed0" / "curve.csv")
    assert {"weight_fused", "weight_audio", "weight_visual"} <= set(curve.columns)


def test_training_reads_only_shards(tiny_pipeline: Path, tmp_path: Path) -> None:
    """With every media file moved away, training still runs: it reads the feature shards only."""
    from avbias.config import load_params
    from avbias.methods import run_params_json

    from conftest import run

    project = tiny_pipeline
    raw = project / "data" / "tiny" / "raw" / "synth_cremad"
    hidden = tmp_path / "media-away"
    raw.rename(hidden)
    try:
        params = load_params(project / "params.yaml", project / "tiny.yaml")
        params["train"]["epochs"] = 2
        run(["avbias", "train", "--params", run_params_json(params, "baseline", "synth_cremad"),
             "--dataset", "synth_cremad",
             "--method", "baseline", "--seed", "0", "--features", "data/tiny/features/synth_cremad",
             "--out", str(tmp_path / "run")], project)
    finally:
        hidden.rename(raw)
    assert not list(tmp_path.glob("media-away"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["method"] == "baseline"


def test_each_protocol_runs_end_to_end_and_the_report_names_it(tiny_pipeline: Path) -> None:
    """Every preset in config/protocols/ through Snakemake on the tiny synthetic media (protocol first, then
    only size overrides: the protocol's recipe, frames, selection and method settings are what runs)."""
    import shutil

    import yaml

    from avbias.config import load_params, protocol_text
    from avbias.methods import resolve_hyperparams

    from conftest import REPO, TINY, run

    project = tiny_pipeline
    shutil.copytree(project / "data/tiny/raw", project / "data/protocols/raw", copy_function=shutil.copy2,
                    dirs_exist_ok=True)      # the same generated media, not generated again
    size = {"paths": {"data": "data/protocols"},
            "run": {"datasets": ["synth_cremad"], "methods": ["ogm_ge"], "seeds": [0]},
            "synth": TINY["synth"], "splits": TINY["splits"], "model": {"width": 8}, "train": {"epochs": 2},
            "extract": {"frame_size": 32, "shard_size": 32, "cremad": {"duration_s": 1.0}},
            "resources": TINY["resources"]}
    for protocol in sorted(p.stem for p in (REPO / "config/protocols").glob("*.yaml")):
        override = project / f"{protocol}_size.yaml"
        override.write_text(yaml.safe_dump(size | {"paths": {**size["paths"], "results": f"results/{protocol}",
                                                             "logs": f"logs/{protocol}"}}))
        configs = ["params.yaml", f"config/protocols/{protocol}.yaml", override.name]
        run(["snakemake", "all", "--cores", "2", "--configfile", *configs], project)
        params = load_params(*(project / c for c in configs))
        results = project / "results" / protocol
        metrics = json.loads((results / "runs/synth_cremad/ogm_ge/seed0/metrics.json").read_text())
        assert metrics["params"]["train"] == params["train"] and metrics["selection"] == params["train"]["selection"]
        expected = resolve_hyperparams("ogm_ge", params, "synth_cremad")      # the protocol's, or the default
        assert metrics["params"]["methods"]["ogm_ge"]["alpha"] == expected.alpha
        assert metrics["literature"]["best_test_acc"] >= metrics["test"]["acc"]
        frames = json.loads((project / "data/protocols/features/synth_cremad/extract.json").read_text())
        assert frames["params"]["num_frames"] == params["extract"]["cremad"]["num_frames"]
        html = (results / "report" / "report.html").read_text()
        assert params["report"]["protocol"] in html and "selected on test, optimistic" in html
        assert protocol_text(params, "synth_cremad") in html          # the recipe, composed from the params
        assert "the last epoch (no validation split)" in html or params["train"]["selection"] == "val"
        assert html.index("Findings") < html.index("Test accuracy, method")
