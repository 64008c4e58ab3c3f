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
from imports import covered, stage_code

# Which `avbias` commands each DVC stage runs (the train stage prunes stale runs first).
STAGE_COMMANDS = {
    "acquire": ("acquire",),
    "manifest": ("manifest",),
    "extract": ("extract",),
    "train": ("train", "prune-runs"),
    "analyse": ("analyse",),
    "report": ("report",),
}
# Deps under src/ that are data, not code: what acquire verifies downloads against, the human raters' table.
DATA_DEPS = {"acquire": {"src/avbias/acquire/reference"},
             "analyse": {"src/avbias/acquire/reference/cremad_summary_table.csv.gz"}}


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


def dep_problems(stage: str, deps: list[str]) -> list[str]:
    """What is wrong with a stage's declared deps: a module its commands import (or its rule file, or data it
    reads) that no dep covers, a code dep that covers none of them, a dep that does not exist."""
    code = [d for d in deps if d.startswith(("src/", "workflow/"))]
    wanted = ({p.relative_to(REPO).as_posix() for p in stage_code(*STAGE_COMMANDS[stage])}
              | {f"workflow/rules/{stage}.smk"} | DATA_DEPS.get(stage, set()))
    problems = []
    if missing := sorted(w for w in wanted if not covered(w, code)):
        problems.append(f"{stage}: imported by `avbias {' '.join(STAGE_COMMANDS[stage])}` (or read) but under no "
                        f"dvc.yaml dep: {missing}")
    if unused := sorted(d for d in code if not any(covered(w, [d]) for w in wanted)):
        problems.append(f"{stage}: dvc.yaml deps that hold nothing the stage imports: {unused}")
    if absent := sorted(d for d in code if not (REPO / d).exists()):
        problems.append(f"{stage}: dvc.yaml deps missing from the repository: {absent}")
    return problems


def test_dvc_code_deps_cover_what_each_stage_imports() -> None:
    """Each stage declares folders (its package, methods/, models/) and the shared modules it imports; every
    module its `avbias` command imports, transitively, lies under one of them."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(STAGE_COMMANDS)
    problems = [p for stage in STAGE_COMMANDS for p in dep_problems(stage, stages[stage]["deps"])]
    assert not problems, "\n".join(problems)
    for stage in STAGE_COMMANDS:
        assert f"src/avbias/{stage}" in stages[stage]["deps"], stage     # each stage's package, as a folder
    # The params groups: tests/test_config.py::test_dvc_stages_declare_exactly_the_params_they_read.


def test_a_stage_importing_a_module_outside_its_deps_fails_the_check() -> None:
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]["deps"]
    for dropped, module in (("src/avbias/metrics.py", "src/avbias/metrics.py"),
                            ("src/avbias/methods", "src/avbias/methods/registry.py")):
        problems = dep_problems("train", [d for d in deps if d != dropped])
        assert len(problems) == 1 and module in problems[0], problems
    assert dep_problems("train", [*deps, "src/avbias/report"]) == [
        "train: dvc.yaml deps that hold nothing the stage imports: ['src/avbias/report']"]
    assert not covered("src/avbias/analyse_extra.py", ["src/avbias/analyse"])      # a folder, not a prefix


def test_the_analyse_stage_declares_the_files_of_its_contract(tmp_path: Path) -> None:
    """Snakemake's analyse rule declares exactly the contract's files (avbias.analyse.contract.FILES) in one
    folder per dataset, and DVC the folder holding them, which the report stage depends on."""
    from avbias.analyse.contract import FILES

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages["analyse"]["outs"] == ["${paths.results}/analysis"]
    assert "${paths.results}/analysis" in stages["report"]["deps"]
    project = make_project(tmp_path)
    text = output(run(["snakemake", "-n", "--configfile", "params.yaml", "tiny.yaml", "--", "analyse_all"], project))
    rule = text[text.index("rule analyse:"):]
    declared = rule[rule.index("output: ") + len("output: "):].split("\n")[0].split(", ")
    assert sorted(declared) == sorted(f"results/tiny/analysis/synth_cremad/{name}" for name in FILES.values())


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


def test_a_method_with_its_own_seeds_trains_on_them_and_the_analysis_reads_every_run(tmp_path: Path) -> None:
    """run.seeds_by_method (the demo's 12 baseline seeds beside 4 for the other methods): the DAG trains each
    method on its own seeds, and the analyse job waits for all of them."""
    project = make_project(tmp_path, {"run": {"methods": ["baseline", "ogm_ge"], "seeds": [0, 1],
                                              "seeds_by_method": {"baseline": [0, 1, 2]}}})
    dry = snakemake(project, "all", "-n").stdout
    trained = sorted((c.split("--method ")[1].split()[0], int(c.split("--seed ")[1].split()[0]))
                     for c in dry.splitlines() if c.startswith("Shell command: avbias train "))
    assert trained == [("baseline", 0), ("baseline", 1), ("baseline", 2), ("ogm_ge", 0), ("ogm_ge", 1)], trained
    [analyse] = [c for c in dry.splitlines() if c.startswith("Shell command: avbias analyse ")]
    runs = analyse.split("--runs ")[1].split(" --out")[0].split()
    assert sorted(runs) == sorted(f"results/tiny/runs/synth_cremad/{m}/seed{s}" for m, s in trained), runs


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
