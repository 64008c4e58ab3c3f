"""Load params.yaml (+ overrides) and validate it with the schema Snakemake uses.

A leaf module: the Snakefile reads it, so it imports nothing heavier than the schema validator.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
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
    # report: also what the protocol text is composed from (protocol_text), so it cannot drift from the runs.
    "report": ("report", "run", "splits", "model", "train", "synth"),
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
    from avbias.datasets import DATASETS  # a table of names: importing it costs nothing

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


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


# --- the settings reference (docs/configuration.md), generated from the schema and params.yaml ------------

GENERATED_BEGIN = "<!-- generated: avbias params --describe -->"
GENERATED_END = "<!-- end generated -->"


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """node with its local $ref ("#/$defs/<name>") replaced by the target; the node's own keys win."""
    if "$ref" not in node:
        return node
    target: Any = schema
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolve(schema, target), **{k: v for k, v in node.items() if k != "$ref"}}


def _children(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The keys a group names: its properties, then those only its oneOf/anyOf/allOf branches add."""
    found = dict(node.get("properties", {}))
    for combinator in ("oneOf", "anyOf", "allOf"):
        for branch in node.get(combinator, []):
            for key, sub in _resolve(schema, branch).get("properties", {}).items():
                found.setdefault(key, sub)
    return {key: _resolve(schema, sub) for key, sub in found.items()}


def schema_node(schema: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The schema of a dotted key, e.g. "train.lr"; under a mapping whose keys the schema leaves open
    (`methods`: the methods' Hyperparams dataclasses check them), that mapping's. None: not a known key."""
    node = schema
    for part in key.split("."):
        children = _children(schema, node)
        if not children and node is not schema:
            return node
        if part not in children:
            return None
        node = children[part]
    return node


def _flow(value: Any) -> str:
    if isinstance(value, dict | list):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**9).strip()
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def _bounds(node: dict[str, Any]) -> str:
    low = ("[", node["minimum"]) if "minimum" in node else ("(", node.get("exclusiveMinimum"))
    high = ("]", node["maximum"]) if "maximum" in node else (")", node.get("exclusiveMaximum"))
    if low[1] is not None and high[1] is not None:
        return f" in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low[1] is not None:
        return f" {'≥' if low[0] == '[' else '>'} {low[1]}"
    return f" {'≤' if high[0] == ']' else '<'} {high[1]}" if high[1] is not None else ""


def _type_text(schema: dict[str, Any], node: dict[str, Any]) -> str:
    if "const" in node:
        return _flow(node["const"])
    if "enum" in node:
        return " | ".join(_flow(v) for v in node["enum"])
    for combinator in ("oneOf", "anyOf"):
        if combinator in node:
            return " | ".join(_type_text(schema, _resolve(schema, b)) for b in node[combinator])
    kinds = node.get("type", "any")
    texts = []
    for kind in kinds if isinstance(kinds, list) else [kinds]:
        if kind == "array":
            size = f"{node['minItems']} x " if node.get("minItems") == node.get("maxItems", -1) else ""
            texts.append(f"list of {size}{_type_text(schema, _resolve(schema, node.get('items', {})))}")
        elif kind == "object":
            texts.append("mapping")
        else:
            texts.append(kind + (_bounds(node) if kind in ("integer", "number") else ""))
    return " | ".join(texts)


def _cell(text: str) -> str:
    """One Markdown table cell: one line, pipes escaped, < escaped outside code spans (<name> is no HTML tag)."""
    parts = " ".join(str(text).split()).replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def _rows(schema: dict[str, Any], node: dict[str, Any], values: Any, path: str) -> list[str]:
    values = values if isinstance(values, dict) else {}
    rows = []
    for key, child in _children(schema, node).items():
        if key not in values and key not in node.get("properties", {}):
            continue                                   # a key of another variant (the other extract recipe)
        sub, grand = f"{path}.{key}", _children(schema, child)
        default = f"`{_flow(values[key])}`" if key in values and not grand else "–"
        kind = "group" if grand else _type_text(schema, child)
        rows.append(f"| `{sub}` | {_cell(kind)} | {_cell(default)} | {_cell(child.get('description', ''))} |")
        if grand:
            rows += _rows(schema, child, values.get(key), sub)
    return rows


def describe_params(schema: dict[str, Any], defaults: dict[str, Any]) -> str:
    """The settings reference, Markdown: per group, its description and a table key | type | default |
    description; types and descriptions from the schema, defaults from `defaults` (params.yaml).
    docs/configuration.md holds it between GENERATED_BEGIN and GENERATED_END (`avbias params --describe`)."""
    lines = []
    for group, node in _children(schema, schema).items():
        lines += [f"### `{group}`", "", _cell(node.get("description", "")), ""]
        if _children(schema, node):
            lines += ["| key | type | default | description |", "|---|---|---|---|",
                      *_rows(schema, node, defaults.get(group), group), ""]
        else:                                          # an open mapping (methods): its default as a whole
            lines += [f"Type: {_cell(_type_text(schema, node))}. Default: `{_flow(defaults.get(group))}`", ""]
    return "\n".join(lines).rstrip() + "\n"


def generated_block(text: str) -> str:
    """What a page holds between GENERATED_BEGIN and GENERATED_END."""
    start, end = text.find(GENERATED_BEGIN), text.find(GENERATED_END)
    if start < 0 or end < start:
        raise ParamsError(f"no {GENERATED_BEGIN} ... {GENERATED_END} markers")
    return text[start + len(GENERATED_BEGIN):end].strip() + "\n"


def splice_generated(text: str, block: str) -> str:
    """text with what lies between its markers replaced by block."""
    generated_block(text)                              # the markers are there
    start, end = text.find(GENERATED_BEGIN) + len(GENERATED_BEGIN), text.find(GENERATED_END)
    return f"{text[:start]}\n\n{block.strip()}\n\n{text[end:]}"


# --- the protocol text of the report, composed from the params it describes ------------------------------

_OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def seeds_label(values: Sequence[int]) -> str:
    """'0, 1, 2, 3', or a run of more than 4 consecutive seeds as '0-11'."""
    values = list(values)
    if len(values) > 4 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ", ".join(str(x) for x in values)


def group_by_seeds(method_seeds: Iterable[tuple[str, Iterable[int]]]) -> dict[tuple[int, ...], list[str]]:
    """Methods grouped by the seeds they ran (sorted), groups in first-seen order."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for method, seeds in method_seeds:
        groups.setdefault(tuple(sorted(int(s) for s in seeds)), []).append(str(method))
    return groups


def _seeds_text(run: dict[str, Any]) -> str:
    """'4 seeds (0, 1, 2, 3)', and each run.seeds_by_method entry: '; baseline, unimodal_audio: 12 seeds (0-11)'."""
    def seeds(values: Sequence[int]) -> str:
        return f"{len(values)} seed{'s' if len(values) > 1 else ''} ({seeds_label(values)})"

    groups = group_by_seeds((run.get("seeds_by_method") or {}).items())
    return "; ".join([seeds(run["seeds"])] + [f"{', '.join(names)}: {seeds(v)}" for v, names in groups.items()])


def protocol_text(params: dict[str, Any], dataset: str | None = None) -> str:
    """The recipe behind the numbers, composed from the params that set it: train (optimizer, schedule,
    epochs, batch), splits, train.selection and, where present, run.seeds (and run.seeds_by_method),
    model.pretrained and, for a
    synthetic dataset (dataset, or any in run.datasets), the planted synth keys. report.protocol is only
    a label, so the text cannot drift from the params."""
    t, s = params["train"], params["splits"]
    extras = ([f"momentum {t['momentum']:g}"] if t["optimizer"] == "sgd" else []) + [
        f"weight decay {t['weight_decay']:g}"]
    schedule = ("constant lr" if t["lr_step"] >= t["epochs"]
                else f"StepLR every {t['lr_step']} epochs x{t['lr_gamma']:g}")
    optimizer = _OPTIMIZERS.get(t["optimizer"], t["optimizer"])
    parts = [f"{optimizer} lr {t['lr']:g} ({', '.join(extras)}), {schedule}, {t['epochs']} epochs, "
             f"batch {t['batch_size']}" + (", last partial batch dropped" if t["drop_last"] else "")]
    split = {"literature": "the literature split",
             "speaker": f"speaker-disjoint split, {s['test_fraction']:.0%} of the speakers for test",
             "random": f"stratified random split, {s['test_fraction']:.0%} test"}.get(s["scheme"], s["scheme"])
    parts.append(f"{split}, " + (f"validation split (val_fraction {s['val_fraction']:g})" if s["val_fraction"] > 0
                                 else "no validation split (the whole train split trains)"))
    parts.append({"val": "tested at the best validation epoch",
                  "last": "tested at the last epoch"}.get(t["selection"], t["selection"]))
    if "run" in params:
        parts.append(_seeds_text(params["run"]))
    if "model" in params:
        pretrained = params["model"].get("pretrained") or {}
        if pretrained.get("audio") or pretrained.get("visual"):
            parts.append(f"encoders: audio {pretrained.get('audio') or 'from scratch'}, visual "
                         f"{pretrained.get('visual') or 'from scratch'} ({pretrained.get('encoders', 'finetune')})")
        else:
            parts.append("encoders from scratch")
    from avbias.datasets import DATASETS  # a table of names: importing it costs nothing

    names = [dataset] if dataset else params.get("run", {}).get("datasets", [])
    if "synth" in params and any(DATASETS[n].synthetic for n in names if n in DATASETS):
        y = params["synth"]
        text = f"synthetic data: audio SNR {y['audio_snr_db']:g} dB, visual SNR {y['visual_snr_db']:g} dB"
        for key, label in (("audio_class_snr_offset_db", "audio offsets per class (dB)"),
                           ("visual_class_snr_offset_db", "visual offsets per class (dB)"),
                           ("audio_class_cue_prob", "audio cue kept per class"),
                           ("visual_class_cue_prob", "visual cue kept per class")):
            if y.get(key):
                text += f", {label} [{', '.join(f'{v:g}' for v in y[key])}]"
        parts.append(text)
    return "; ".join(parts)
