"""The workflow tells the truth about itself: which profile runs, which code each DVC stage depends on,
that a method is one new file, that planning a run imports no torch, that the pipeline needs neither the
venv on PATH nor its outputs inside the project, and that Snakemake's own report holds the results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from conftest import BIN, REPO, make_project, run, snakemake
from imports import stage_code

# Which `avbias` commands each DVC stage runs (the train stage prunes stale runs first).
STAGE_COMMANDS = {
    "acquire": ("acquire",),
    "manifest": ("manifest",),
    "extract": ("extract",),
    "train": ("train", "prune-runs"),
    "analyse": ("analyse",),
    "report": ("report",),
}
# Deps under src/ that are data, not code: what acquire verifies downloads against.
DATA_DEPS = {"acquire": {"src/avbias/data/reference"}}


def run_env(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


# --- profiles ------------------------------------------------------------------------------------------


def test_plain_snakemake_uses_the_default_profile(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    proc = run(["snakemake", "-n"], project)
    assert "Using workflow specific profile profiles/default" in output(proc), output(proc)[-2000:]


def test_slurm_profile_loads_and_dry_runs_without_sbatch(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    proc = run(["snakemake", "--workflow-profile", "profiles/slurm", "-n", "--configfile", "params.yaml", "tiny.yaml"],
               project)
    text = output(proc)
    assert "Using workflow specific profile profiles/slurm" in text and "profiles/default" not in text, text[-2000:]
    assert "rule train:" in text and "This was a dry-run" in text


# --- DVC deps are the code each stage runs ----------------------------------------------------------


def declared_code(deps: list[str], data: set[str]) -> set[str]:
    """dvc.yaml deps under src/ or workflow/, folders expanded to their .py files (data deps kept as named)."""
    found = set()
    for dep in deps:
        if not dep.startswith(("src/", "workflow/")) or dep in data:
            continue
        path = REPO / dep
        if path.is_dir():
            found |= {p.relative_to(REPO).as_posix() for p in path.rglob("*.py")}
        else:
            found.add(dep)
    return found


def test_dvc_code_deps_are_exactly_what_each_stage_imports() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(STAGE_COMMANDS)
    problems = []
    for stage, commands in STAGE_COMMANDS.items():
        data = DATA_DEPS.get(stage, set())
        deps = stages[stage]["deps"]
        declared = declared_code(deps, data)
        wanted = {p.relative_to(REPO).as_posix() for p in stage_code(*commands)} | {f"workflow/rules/{stage}.smk"}
        missing, extra = sorted(wanted - declared), sorted(declared - wanted)
        if missing:
            problems.append(f"{stage}: imported by `avbias {' '.join(commands)}` but not a dvc.yaml dep: {missing}")
        if extra:
            problems.append(f"{stage}: dvc.yaml deps (or files in a dep folder) the stage does not import: {extra}")
        absent = sorted(d for d in data if d not in deps or not (REPO / d).exists())
        if absent:
            problems.append(f"{stage}: data deps missing from dvc.yaml or the repository: {absent}")
    assert not problems, "\n".join(problems)
    # The params groups: tests/test_config.py::test_dvc_stages_declare_exactly_the_params_they_read.


# --- a method is one new module ---------------------------------------------------------------------

TOY_METHOD = '''\
"""A method added by a test: the baseline with scaled logits."""

from __future__ import annotations

from dataclasses import dataclass

from avbias.lazy import F
from avbias.methods.registry import Method, register


@register("toy_method")
class ToyMethod(Method):
    @dataclass(frozen=True)
    class Hyperparams:
        scale: float = 2.0

    def loss(self, output, labels, epoch):
        return F.cross_entropy(output.logits * self.hp.scale, labels)
'''

TOY_CHECKS = '''\
import sys
from pathlib import Path

import avbias
from avbias.errors import ParamsError
from avbias.methods import METHODS, check_method_params, create_method, run_methods

assert Path(avbias.__file__).is_relative_to(Path(sys.argv[1])), avbias.__file__
assert "toy_method" in METHODS, sorted(METHODS)
assert "toy_method" in run_methods({"run": {"methods": "all"}})
try:
    check_method_params({"run": {"methods": "all"}, "methods": {"toy_method": {"scal": 3.0}}})
except ParamsError as exc:
    assert "methods.toy_method.scal" in str(exc), exc
else:
    raise AssertionError("methods.toy_method.scal was accepted")
check_method_params({"run": {"methods": ["toy_method"]}, "methods": {"toy_method": {"scale": 3.0}}})
assert create_method("toy_method", {"methods": {"toy_method": {"scale": 3.0}}}).hp.scale == 3.0
assert "torch" not in sys.modules
print("ok")
'''


def test_adding_a_method_is_one_new_module(tmp_path: Path) -> None:
    # make_project copies the repository's src; the new method is the only file added to it.
    project = make_project(tmp_path / "project", {"run": {"methods": "all"}})
    src = project / "src"
    (src / "avbias/methods/toy_method.py").write_text(TOY_METHOD)
    env = dict(os.environ, PYTHONPATH=str(src), PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    checks = run_env([sys.executable, "-c", TOY_CHECKS, str(src)], tmp_path, env, timeout=120)
    assert checks.returncode == 0 and checks.stdout.strip() == "ok", output(checks)
    dry = run_env(["snakemake", "-n", "--configfile", "params.yaml", "tiny.yaml"], project, env, timeout=300)
    assert dry.returncode == 0, output(dry)[-4000:]
    assert "method=toy_method" in dry.stdout
    assert "results/tiny/runs/synth_cremad/toy_method/seed0/metrics.json" in dry.stdout
    assert "--method toy_method" in dry.stdout


def test_a_method_that_builds_on_runs_gets_their_models_as_inputs(tmp_path: Path) -> None:
    """The DAG (common.smk's pretrained_models): a pretrain-then-fuse job reads the model.pt of the runs it
    builds on, same dataset and seed, so Snakemake trains them first. (test_pipeline.py's every-method test
    runs the commands in process and passes these paths itself.)"""
    from avbias.methods import METHODS, method_class

    builds_on = {m: method_class(m).pretrained for m in sorted(METHODS) if method_class(m).pretrained}
    project = make_project(tmp_path, {"run": {"methods": sorted(builds_on), "seeds": [1]}})
    dry = snakemake(project, "all", "-n").stdout
    commands = [line for line in dry.splitlines() if line.startswith("Shell command: avbias train ")]
    for method, needs in builds_on.items():
        [command] = [c for c in commands if f"--method {method} " in c]
        models = command.split("--pretrained ")[1].split(" --")[0].split()
        assert models == [f"results/tiny/runs/synth_cremad/{m}/seed1/model.pt" for m in needs], command
        assert all(any(f"--method {m} --seed 1 " in c for c in commands) for m in needs), needs


# --- planning a run imports no torch ----------------------------------------------------------------


def imported_modules(importtime: str) -> set[str]:
    """Module names from `python -X importtime` lines: 'import time: self | cumulative | <indent>name'."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime.splitlines() if line.startswith("import time:")}


def test_snakemake_dry_run_imports_no_torch(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    command = ["-m", "snakemake", "-n", "--configfile", "params.yaml", "tiny.yaml"]
    proc = run([sys.executable, "-X", "importtime", *command], project)
    modules = imported_modules(proc.stderr)
    assert {"snakemake", "avbias.config", "avbias.methods"} <= modules   # the Snakefile's imports were measured
    torch = sorted(m for m in modules if m == "torch" or m.startswith("torch."))
    assert torch == [], torch[:20]


# --- the pipeline from outside: no venv on PATH, outputs outside the project ----------------------


def path_without_venv() -> str:
    venv_bin = BIN.resolve()
    kept = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != venv_bin]
    return os.pathsep.join(kept or ["/usr/bin", "/bin"])


@pytest.fixture(scope="module")
def outside_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny pipeline with paths.data/results/logs in a folder beside (not inside) the project copy,
    started by Snakemake's full path with the venv's bin removed from PATH."""
    root = tmp_path_factory.mktemp("outside")
    store = root / "store"
    paths = {"data": str(store / "data"), "results": str(store / "results"), "logs": str(store / "logs")}
    # baseline: a joint method (the report's modality figures need one), 1 seed, 2 epochs.
    project = make_project(root / "project", {"paths": paths, "run": {"methods": ["baseline"], "seeds": [0]},
                                               "synth": {"num_actors": 2, "num_sentences": 3}, "train": {"epochs": 2}})
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = path_without_venv()
    command = [str(BIN / "snakemake"), "all", "--cores", "2", "--configfile", "params.yaml", "tiny.yaml"]
    proc = run_env(command, project, env)
    return {"project": project, "store": store, "env": env, "proc": proc}


TEMP_MARKERS = (".part", ".tmp")   # avbias.io.atomic_path/atomic_dir write `.<name>.<random>.part` beside the output


@pytest.mark.slow
def test_pipeline_runs_without_venv_on_path_with_outputs_outside_the_project(outside_run: dict[str, Any]) -> None:
    env, project, store = outside_run["env"], outside_run["project"], outside_run["store"]
    for tool in ("avbias", "snakemake", "dvc"):
        found = shutil.which(tool, path=env["PATH"])
        assert found is None or Path(found).resolve().parent != BIN.resolve(), found
    proc = outside_run["proc"]
    assert proc.returncode == 0, output(proc)[-6000:]
    for name in ("data", "results", "logs"):
        assert not (project / name).exists(), f"{name} written inside the project"
    assert (store / "results/report/report.html").is_file() and (store / "results/summary.md").is_file()
    assert (store / "results/runs/synth_cremad/baseline/seed0/metrics.json").is_file()

    features = store / "data/features/synth_cremad"
    summary = json.loads((features / "extract.json").read_text())
    assert summary["quarantined"] == 0 and summary["extracted"] == summary["clips"] > 0, summary
    assert len(pd.read_parquet(features / "quarantine.parquet")) == 0

    raw = store / "data/raw/synth_cremad"
    index = pd.read_csv(raw / "clips.csv")
    manifest = pd.read_parquet(store / "data/manifest/synth_cremad/clips.parquet")
    recorded = {str(raw / p) for p in pd.concat([index["audio_path"], index["video_path"]])}
    recorded |= {str(p) for p in pd.concat([manifest["audio_path"], manifest["video_path"]])}
    assert len(manifest) == len(index) == summary["clips"]
    for path in sorted(recorded):
        assert not any(marker in path for marker in TEMP_MARKERS), f"a temporary path was recorded: {path}"
        assert Path(path).is_absolute() and Path(path).is_file(), path
        assert Path(path).is_relative_to(raw), path
    for table in (raw / "clips.csv", store / "data/manifest/synth_cremad/clips.parquet", features / "manifest.parquet"):
        text = table.read_bytes()
        assert not any(marker.encode() in text for marker in TEMP_MARKERS), table


@pytest.mark.slow
def test_snakemake_report_zip_holds_the_report_figures_and_tables(outside_run: dict[str, Any]) -> None:
    assert outside_run["proc"].returncode == 0, "the pipeline run failed (see the test above)"
    project, store, env = outside_run["project"], outside_run["store"], outside_run["env"]
    report = project.parent / "snakemake-report.zip"
    proc = run_env([str(BIN / "snakemake"), "--report", str(report), "--configfile", "params.yaml", "tiny.yaml"],
                   project, env, timeout=300)
    assert proc.returncode == 0, output(proc)[-4000:]
    members = zipfile.ZipFile(report).namelist()
    names = sorted(Path(m).name for m in members)
    figures = sorted(p.name for p in (store / "results/report/figures").glob("*.png"))
    assert figures, "the report stage wrote no figures"
    missing = [n for n in ["report.html", "summary.md", *figures] if n not in names]
    assert not missing, f"missing from the zip: {missing}; members: {members}"
    assert names.count("report.html") == 2     # Snakemake's own report and the avbias report it holds
