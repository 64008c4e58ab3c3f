"""Parameters: schema validation (ours and Snakemake's), merging, and DVC declaring what each stage reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from avbias.cli import main
from avbias.config import STAGE_PARAMS, load_params, parse_params_json, stage_params_json
from avbias.errors import ParamsError
from avbias.methods import check_method_params, resolve_hyperparams

from conftest import REPO, make_project, run


def test_shipped_params_and_demo_validate() -> None:
    params = load_params(REPO / "params.yaml")
    demo = load_params(REPO / "params.yaml", REPO / "config" / "demo.yaml")
    assert params["run"]["datasets"] == ["cremad", "kinetics_sounds"]
    assert demo["run"]["datasets"] == ["synth_cremad"]
    assert demo["train"]["momentum"] == params["train"]["momentum"]     # untouched keys survive the merge


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"train": {"learning_rate": 0.1}}, "train"),                 # unknown key
        ({"synth": {"audio_snr_db": 500}}, "synth.audio_snr_db"),
        ({"run": {"seeds": []}}, "run.seeds"),
        ({"acquire": {"cremad": {"base_url": "media.example.org/x"}}}, "acquire.cremad.base_url"),
        ({"acquire": {"kinetics_sounds": {"source": "torrent"}}}, "acquire.kinetics_sounds.source"),
        ({"splits": {"scheme": "by_colour"}}, "splits.scheme"),
    ],
)
def test_bad_params_are_rejected_naming_the_key(tmp_path: Path, override: dict, key: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(override))
    with pytest.raises(ParamsError) as err:
        load_params(REPO / "params.yaml", bad)
    assert f"  {key}:" in str(err.value)
    assert "bad.yaml" in str(err.value)


def test_local_source_needs_a_root(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"acquire": {"cremad": {"source": "local"}}}))
    with pytest.raises(ParamsError, match="acquire.cremad.local_root must name a folder"):
        load_params(REPO / "params.yaml", bad)


def test_unknown_method_and_dataset_are_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"run": {"methods": ["baseline", "ogm_gee"]}}))
    with pytest.raises(ParamsError, match="run.methods: unknown method 'ogm_gee'"):
        check_method_params(load_params(REPO / "params.yaml", bad))
    bad.write_text(yaml.safe_dump({"run": {"datasets": ["cremadd"]}}))
    with pytest.raises(ParamsError, match="run.datasets: unknown dataset 'cremadd'"):
        load_params(REPO / "params.yaml", bad)


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        ({"ogm_ge": {"alpah": 0.5}}, r"methods.ogm_ge.alpah: unknown hyperparameter"),
        ({"ogm_ge": {"alpha": "big"}}, r"methods.ogm_ge.alpha: expected float, got 'big'"),
        ({"ogm_ge": {"coefficient": "paper"}}, r"methods.ogm_ge.coefficient: expected 'code' \| 'shifted'"),
        ({"gblending": {"super_epoch": 2.5}}, r"methods.gblending.super_epoch: expected int"),
        ({"pmr": {"by_dataset": {"cremad": {"momentun": 0.1}}}}, r"methods.pmr.by_dataset.cremad.momentun: unknown"),
        ({"pmr": {"by_dataset": {"kinetics": {"alpha": 1.0}}}}, r"methods.pmr.by_dataset.kinetics: unknown dataset"),
        ({"ogm": {"alpha": 1.0}}, r"methods.ogm: unknown method"),
    ],
)
def test_method_hyperparameters_are_checked_against_their_dataclass(tmp_path: Path, methods: dict,
                                                                    message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"methods": methods}))
    with pytest.raises(ParamsError, match=message):
        check_method_params(load_params(REPO / "params.yaml", bad))


def test_per_dataset_values_override_the_defaults_most_specific_first() -> None:
    params = {"methods": {"ogm_ge": {"alpha": 0.5, "by_dataset": {"kinetics_sounds": {"alpha": 0.1},
                                                                  "synth_ks": {"modulation_ends": 9}}}}}
    assert resolve_hyperparams("ogm_ge", params, "cremad").alpha == 0.5                # the method's block
    assert resolve_hyperparams("ogm_ge", params, "kinetics_sounds").alpha == 0.1       # by dataset
    ks = resolve_hyperparams("ogm_ge", params, "synth_ks")                             # by family, then name
    assert (ks.alpha, ks.modulation_ends) == (0.1, 9)
    assert resolve_hyperparams("ogm_ge", {}, "cremad").alpha == 0.8                    # the dataclass default
    shipped = load_params(REPO / "params.yaml")
    assert resolve_hyperparams("ogm_ge", shipped, "cremad").alpha == 0.8               # OGM-GE README
    assert resolve_hyperparams("ogm_ge", shipped, "synth_ks").modulation_ends == 60      # BML train_ogm.sh


def test_stage_command_rejects_invalid_params_json(capsys: pytest.CaptureFixture[str]) -> None:
    params = load_params(REPO / "params.yaml")
    good = stage_params_json(params, "train")
    assert parse_params_json(good, "train")["train"]["lr"] == params["train"]["lr"]
    code = main(["train", "--params", good.replace('"lr": 0.001', '"lr": -1'), "--dataset", "x",
                 "--method", "baseline", "--seed", "0", "--features", "f", "--out", "o"])
    assert code == 2
    assert "train.lr" in capsys.readouterr().err


def test_snakemake_rejects_bad_params_before_any_job(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    for bad, key in (({"extract": {"n_fft": "512"}}, "n_fft"), ({"train": {"epochs": -3}}, "train.epochs: -3"),
                     ({"methods": {"pmr": {"alhpa": 1}}}, "methods.pmr.alhpa")):
        (project / "bad.yaml").write_text(yaml.safe_dump(bad))
        proc = run(["snakemake", "-n", "--configfile", "params.yaml", "tiny.yaml", "bad.yaml"], project, check=False)
        assert proc.returncode != 0
        assert key in proc.stdout + proc.stderr
        assert not (project / "data").exists()


def test_dvc_stages_declare_exactly_the_params_they_read() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(STAGE_PARAMS)
    for stage, groups in STAGE_PARAMS.items():
        # Besides its groups, a stage may declare the run lists (which datasets/methods/seeds exist); one that
        # reads the whole run group (report: its seeds, in the protocol text) declares it.
        declared = set(stages[stage]["params"])
        assert {p for p in declared if not p.startswith("run")} == set(groups) - {"run"}, stage
        assert "run" not in groups or "run" in declared, stage


def test_params_command_writes_the_merged_file(tmp_path: Path) -> None:
    out = tmp_path / "merged.yaml"
    assert main(["params", str(REPO / "params.yaml"), str(REPO / "config" / "demo.yaml"), "--out", str(out)]) == 0
    assert load_params(out)["paths"]["results"] == "results/demo"


def test_every_test_file_is_collected() -> None:
    """pyproject's testpaths lists the test files longest first (for the two workers): none may be missing."""
    import tomllib

    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["testpaths"]
    assert sorted(listed) == sorted(f"tests/{p.name}" for p in (REPO / "tests").glob("test_*.py"))
