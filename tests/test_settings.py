"""Each setting is described once (the schema), its default set once (params.yaml), and what is generated
from them cannot go stale: the settings reference in docs/configuration.md and the report's protocol text.
Overrides share their base instead of copying it (the study on the demo, the presets' method list)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from avbias.cli import main
from avbias.config import (
    GENERATED_BEGIN,
    GENERATED_END,
    _children,
    deep_merge,
    describe_params,
    generated_block,
    load_params,
    load_schema,
    protocol_text,
    read_yaml,
    schema_node,
)
from avbias.errors import ParamsError
from avbias.methods import METHODS, check_method_params, run_list, run_methods, run_seeds

from conftest import REPO

CONFIGURATION = REPO / "docs" / "configuration.md"
REGENERATE = "avbias params --describe --out docs/configuration.md"
CONFIGS = [REPO / "params.yaml", *sorted((REPO / "config").rglob("*.yaml"))]
PRESETS = sorted((REPO / "config" / "protocols").glob("*.yaml"))


def keys(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, bool]]:
    """(dotted key, is a group) for every key of a params tree, groups and leaves."""
    found = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        group = isinstance(value, dict) and bool(value)
        found.append((path, group))
        if group:
            found += keys(value, f"{path}.")
    return found


def test_every_key_of_params_yaml_is_described_in_the_schema() -> None:
    schema = load_schema()
    missing = [key for key, _ in keys(read_yaml(REPO / "params.yaml"))
               if not (schema_node(schema, key) or {}).get("description")]
    assert not missing, f"keys of params.yaml without a `description:` in the schema: {missing}"


def test_every_group_and_key_of_the_schema_has_a_description() -> None:
    """Also the keys params.yaml leaves unset (model.pretrained.sha256.audio) and the recipes' variants."""
    schema = load_schema()
    missing = []

    def walk(path: str) -> None:
        node = schema_node(schema, path) if path else schema
        for key in _children(schema, node):            # the keys a group names, through $ref and oneOf
            sub = f"{path}.{key}" if path else key
            if not schema_node(schema, sub).get("description"):
                missing.append(sub)
            walk(sub)

    walk("")
    assert not missing, f"schema keys without a description: {missing}"


def test_an_unknown_key_has_no_schema_node() -> None:
    schema = load_schema()
    assert schema_node(schema, "train.learning_rate") is None
    assert schema_node(schema, "extract.cremad.n_fft")["type"] == "integer"          # through $ref and oneOf
    assert schema_node(schema, "methods.ogm_ge.alpha") is schema_node(schema, "methods")   # left to the methods


def test_params_yaml_comments_cite_sources_only() -> None:
    """The meaning of a key lives in the schema: params.yaml's comments do not define keys (`key: meaning`)."""
    comments = [line.split("#", 1)[1] for line in (REPO / "params.yaml").read_text().splitlines() if "#" in line]
    defining = [c for c in comments if re.match(r"\s*(null|auto|all|local|cvdf|download|val|finetune):", c)]
    assert not defining, f"params.yaml comments that describe a setting (move them to the schema): {defining}"


def test_the_configuration_page_holds_the_generated_reference() -> None:
    text = CONFIGURATION.read_text()
    assert GENERATED_BEGIN in text and GENERATED_END in text
    expected = describe_params(load_schema(), load_params(REPO / "params.yaml"))
    assert generated_block(text) == expected, (
        f"docs/configuration.md's generated settings reference is stale (the schema or params.yaml changed); "
        f"regenerate it: `{REGENERATE}`")


def test_the_reference_lists_every_leaf_with_its_default_and_description() -> None:
    params = load_params(REPO / "params.yaml")
    text = describe_params(load_schema(), params)
    assert "| `train.lr` | number > 0 | `0.001` | the initial learning rate |" in text
    assert "| `run.methods` | all \\| list of string | `all` |" in text
    for key, group in keys(read_yaml(REPO / "params.yaml")):
        if not group and not key.startswith("methods."):
            assert f"| `{key}` |" in text, key


def test_describe_command_prints_and_splices_between_the_markers(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    params = REPO / "params.yaml"
    assert main(["params", "--describe", str(params)]) == 0
    assert capsys.readouterr().out == describe_params(load_schema(), load_params(params))
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\nbefore\n\n{GENERATED_BEGIN}\nstale\n{GENERATED_END}\n\nafter\n")
    assert main(["params", "--describe", str(params), "--out", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith(f"{GENERATED_END}\n\nafter\n")
    assert "stale" not in text and generated_block(text) == describe_params(load_schema(), load_params(params))
    page.write_text("no markers\n")
    assert main(["params", "--describe", str(params), "--out", str(page)]) == 2
    assert page.read_text() == "no markers\n"


# --- overrides share their base ----------------------------------------------------------------------------


def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_study_is_an_override_of_the_demo_holding_only_what_differs() -> None:
    demo = load_params(REPO / "params.yaml", REPO / "config" / "demo.yaml")
    study = read_yaml(REPO / "config" / "study.yaml")
    repeated = [key for key, value in leaves(study).items() if leaves(demo).get(key) == value]
    assert not repeated, f"config/study.yaml repeats the demo's values (config/demo.yaml): {repeated}"
    merged = load_params(REPO / "params.yaml", REPO / "config" / "demo.yaml", REPO / "config" / "study.yaml")
    assert merged["train"] == demo["train"] and merged["extract"] == demo["extract"]


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_presets_run_every_method_but_gblending_without_listing_them(preset: Path) -> None:
    params = load_params(REPO / "params.yaml", preset)
    check_method_params(params)
    assert params["run"]["methods"] == "all" and params["run"]["exclude_methods"] == ["gblending"]
    assert run_methods(params) == sorted(set(METHODS) - {"gblending"})


def test_seeds_by_method_must_name_a_registered_method(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"run": {"methods": ["baseline"], "seeds_by_method": {"baselin": [0, 1]}}}))
    with pytest.raises(ParamsError, match=r"run.seeds_by_method.baselin: unknown method; registered: \["):
        check_method_params(load_params(REPO / "params.yaml", bad))
    # A method the run leaves out (a smaller run layered over the demo) is unused, not an error.
    check_method_params({"run": {"methods": ["pmr"], "seeds_by_method": {"baseline": [0, 1]}}})


def test_a_smaller_run_over_the_demo_can_drop_its_seeds_by_method(tmp_path: Path) -> None:
    override = tmp_path / "one_seed.yaml"
    override.write_text(yaml.safe_dump({"run": {"seeds": [0], "seeds_by_method": None}}))
    params = load_params(REPO / "params.yaml", REPO / "config" / "demo.yaml", override)
    assert {seed for _, seed in run_list(params)} == {0}


def test_a_method_trains_on_its_own_seeds_or_on_run_seeds() -> None:
    params = {"run": {"methods": ["baseline", "ogm_ge"], "seeds": [0, 1], "seeds_by_method": {"baseline": [0, 1, 5]}}}
    assert run_seeds(params, "baseline") == [0, 1, 5] and run_seeds(params, "ogm_ge") == [0, 1]
    assert run_list(params) == [("baseline", 0), ("baseline", 1), ("baseline", 5), ("ogm_ge", 0), ("ogm_ge", 1)]
    assert run_list({"run": {"methods": ["pmr"], "seeds": [3], "seeds_by_method": None}}) == [("pmr", 3)]


def test_an_unknown_excluded_method_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"run": {"exclude_methods": ["gblendin"]}}))
    with pytest.raises(ParamsError, match="run.exclude_methods: unknown method 'gblendin'"):
        check_method_params(load_params(REPO / "params.yaml", bad))


# --- report.protocol: a label; the recipe is composed from the params ---------------------------------------


def demo_params() -> dict[str, Any]:
    """The params `make demo` runs with: the config files named once, in the Makefile's DEMO line."""
    line = next(x for x in (REPO / "Makefile").read_text().splitlines() if x.startswith("DEMO :="))
    return load_params(*(REPO / name for name in line.split("--configfile", 1)[1].split()))


@pytest.mark.parametrize(("change", "shown"), [
    ({"train": {"lr": 0.05}}, "lr 0.05"),
    ({"train": {"epochs": 7}}, "7 epochs"),
    ({"train": {"batch_size": 8}}, "batch 8"),
    ({"train": {"optimizer": "adamw"}}, "AdamW"),
    ({"train": {"lr_step": 3, "lr_gamma": 0.5}}, "StepLR every 3 epochs x0.5"),
    ({"train": {"lr_step": 100}}, "constant lr"),
    ({"train": {"selection": "last"}}, "the last epoch"),
    ({"splits": {"val_fraction": 0.0}}, "no validation split"),
    ({"run": {"seeds": [0, 1, 2, 3, 4, 5]}}, "6 seeds"),
    ({"run": {"seeds_by_method": {"baseline": [0, 1, 2, 3, 4, 5, 6], "unimodal_visual": [0, 1, 2, 3, 4, 5, 6]}}},
     "baseline, unimodal_visual: 7 seeds (0-6)"),
    ({"model": {"pretrained": {"visual": "torchvision:resnet18"}}}, "visual torchvision:resnet18"),
    ({"synth": {"audio_snr_db": -20.0}}, "audio SNR -20 dB"),
])
def test_the_protocol_text_follows_the_params(change: dict[str, Any], shown: str) -> None:
    params = demo_params()
    before = protocol_text(params)
    after = protocol_text(deep_merge(params, change))
    assert after != before and shown in after and shown not in before, after


def test_the_protocol_text_names_the_demo_recipe_and_its_scenario() -> None:
    text = protocol_text(demo_params(), "synth_cremad")
    train = demo_params()["train"]
    assert text.startswith(f"SGD lr {train['lr']} (momentum 0.9, weight decay 0.0001), "
                           f"StepLR every {train['lr_step']} epochs x0.1, "
                           f"{train['epochs']} epochs, batch {train['batch_size']}")
    assert "4 seeds (0, 1, 2, 3); baseline: 12 seeds (0-11)" in text, text
    assert "tested at the best validation epoch" in text
    cue = demo_params()["synth"]["visual_class_cue_prob"]
    assert f"visual cue kept per class {cue}" in text, text
    assert "synthetic" not in protocol_text(demo_params(), "cremad")   # the planted keys only for synthetic data


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO)) for p in CONFIGS])
def test_no_config_restates_the_recipe_in_report_protocol(path: Path) -> None:
    label = (read_yaml(path).get("report") or {}).get("protocol")
    if label is not None:
        assert not re.search(r"\blr\b|epoch|batch|\bSGD\b|Adam|StepLR|seeds?\b", label, re.I), (
            f"{path.relative_to(REPO)}: report.protocol restates the recipe ({label!r}); keep a label: the "
            "report composes the recipe from the params (avbias.config.protocol_text)")
