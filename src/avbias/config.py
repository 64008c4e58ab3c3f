"""Load params.yaml (+ overrides) and validate it with the schema Snakemake uses.

A leaf module: the Snakefile reads it, so it imports nothing heavier than the schema validator.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from avbias.errors import ParamsError

REPO_ROOT = Path(__file__).resolve().parents[2]
# The package is installed editable from the repository, so Snakemake and avbias read one schema file.
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "params.schema.yaml"   # package data

# The params groups each stage reads. dvc.yaml declares the same groups (a test checks it), and the
# Snakemake rules pass exactly these to the CLI, so both tools rerun a stage when one of them changes.
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "acquire": ("acquire", "synth"),
    "manifest": ("splits",),
    "extract": ("extract",),
    "train": ("model", "train", "methods"),
    "analyse": ("analysis", "synth"),     # synth: the generator's signal strengths are the synthetic capability
    "report": ("report",),
}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return base updated by override, recursing into dicts (lists and scalars are replaced)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: parameter file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of parameter groups at the top level")
    return data


def load_params(*paths: str | Path) -> dict[str, Any]:
    """Merge the files in order (later ones override) and validate the result."""
    if not paths:
        raise ParamsError("no parameter file given")
    params: dict[str, Any] = {}
    for path in paths:
        params = deep_merge(params, read_yaml(path))
    validate_params(params, source=" + ".join(str(p) for p in paths))
    return params


def _key_path(error: jsonschema.ValidationError) -> str:  # noqa: F821
    return ".".join(str(part) for part in error.absolute_path) or "(top level)"


def validate_params(params: dict[str, Any], source: str = "params") -> None:
    """Raise ParamsError naming the first offending key; check names against the registries."""
    import jsonschema  # here, not at the top: training imports this module and needs no validator

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {_key_path(e)}: {e.message}" for e in errors[:10]]
        raise ParamsError(f"{source}: invalid parameters:\n" + "\n".join(lines))
    check_params(params, source)


def check_params(params: dict[str, Any], source: str = "params") -> None:
    """What the schema cannot express: dataset names (the registry) and relations between keys. Method
    names and hyperparameters are checked against the method registry (avbias.methods.check_method_params)."""
    from avbias.data.datasets import DATASETS  # a table of names: importing it costs nothing

    for name in params["run"]["datasets"]:
        if name not in DATASETS:
            raise ParamsError(f"{source}: run.datasets: unknown dataset {name!r}; known: {sorted(DATASETS)}")
    for dataset in ("cremad", "kinetics_sounds"):
        cfg = params["acquire"][dataset]
        if dataset in params["run"]["datasets"] and cfg["source"] == "local" and not cfg["local_root"]:
            raise ParamsError(f"{source}: acquire.{dataset}.local_root must name a folder "
                              f"when acquire.{dataset}.source is local")
    synth = params["synth"]
    if synth["min_duration_s"] > synth["max_duration_s"]:
        raise ParamsError(f"{source}: synth.min_duration_s must not exceed synth.max_duration_s")
    if params["splits"]["val_fraction"] + params["splits"]["test_fraction"] >= 1:
        raise ParamsError(f"{source}: splits.val_fraction + splits.test_fraction must be below 1")


def stage_params(params: dict[str, Any], stage: str) -> dict[str, Any]:
    """The groups a stage reads, as one dict (what the CLI receives)."""
    return {group: params[group] for group in STAGE_PARAMS[stage]}


def stage_params_json(params: dict[str, Any], stage: str) -> str:
    return json.dumps(stage_params(params, stage), sort_keys=True)


def parse_params_json(text: str, stage: str) -> dict[str, Any]:
    """Parse the --params argument of a stage command and check it holds the stage's groups."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParamsError(f"--params: not valid JSON ({exc})") from None
    missing = [g for g in STAGE_PARAMS[stage] if g not in data]
    if missing:
        raise ParamsError(f"--params: stage {stage!r} needs the groups {missing}")
    import jsonschema

    # The same schema, asking only for the groups this stage reads.
    schema = dict(yaml.safe_load(SCHEMA_PATH.read_text()), required=list(STAGE_PARAMS[stage]))
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if errors:
        lines = [f"  {_key_path(e)}: {e.message}" for e in errors[:10]]
        raise ParamsError("--params: invalid parameters:\n" + "\n".join(lines))
    return data
