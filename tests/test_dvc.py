"""A lab sharing results through a DVC remote, with real git, DVC and Snakemake in temporary folders.

One person runs the pipeline with `dvc repro` and pushes; a teammate clones and pulls, changes a
parameter, adds a method, breaks and repairs an artifact; and an experiment runs beside the baseline.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import make_project, run

pytestmark = pytest.mark.slow

# The lab checks bookkeeping, not accuracy: 36 clips, 4 epochs, two runs (one unimodal, one joint);
# unimodal_visual is the method added later.
LAB = {
    "run": {"methods": ["unimodal_audio", "baseline"], "seeds": [0]},
    "synth": {"num_actors": 2, "num_sentences": 3},
    "train": {"epochs": 4},
}
ARTIFACTS = ("data/tiny", "results/tiny")


def git(project: Path, *args: str) -> str:
    return run(["git", "-c", "user.name=lab", "-c", "user.email=lab@example.invalid", *args], project).stdout


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


def digests(project: Path) -> dict[str, str]:
    """sha256 of every artifact file, by path relative to the project."""
    return {
        str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
        for root in ARTIFACTS for p in sorted((project / root).rglob("*")) if p.is_file()
    }


def nothing_to_do(project: Path) -> None:
    assert run(["dvc", "status", "--json"], project).stdout.strip() in ("{}", "")
    dry = run(["snakemake", "all", "-n"], project)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-2000:]


def set_params(project: Path, **changes: object) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for dotted, value in changes.items():
        group, key = dotted.split("__")
        params[group][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """origin: a repo that ran the pipeline with dvc repro, committed dvc.lock and pushed to a remote."""
    root = tmp_path_factory.mktemp("lab")
    origin, remote = make_project(root / "origin", LAB), root / "remote"
    run(["avbias", "params", "params.yaml", "tiny.yaml", "--out", "params.yaml"], origin)
    git(origin, "init", "-q", "-b", "main")
    run(["dvc", "init", "-q"], origin)
    run(["dvc", "config", "cache.type", "reflink,copy"], origin)
    run(["dvc", "remote", "add", "-d", "shared", str(remote)], origin)
    git(origin, "add", "-A")
    git(origin, "commit", "-qm", "project")
    first = run(["dvc", "repro"], origin)
    assert stages_run(first.stdout) == ["acquire", "manifest", "extract", "train", "analyse", "report"]
    second = run(["dvc", "repro"], origin)
    assert stages_run(second.stdout) == [] and "up to date" in second.stdout
    nothing_to_do(origin)
    metrics = run(["dvc", "metrics", "show"], origin).stdout
    assert "baseline" in metrics and "test_acc" in metrics and "weight_share_audio" in metrics
    git(origin, "add", "-A")
    git(origin, "commit", "-qm", "results")
    run(["avbias", "push"], origin)
    return {"root": root, "origin": origin, "remote": remote}


@pytest.fixture(scope="module")
def teammate(lab: dict[str, Path]) -> Path:
    """A fresh clone of origin after the documented `avbias pull` (what `make pull` runs)."""
    clone = lab["root"] / "clone"
    run(["git", "clone", "-q", str(lab["origin"]), str(clone)], lab["root"])
    run(["avbias", "pull"], clone)
    return clone


def test_pull_restores_identical_artifacts_and_both_tools_agree(lab: dict[str, Path], teammate: Path) -> None:
    assert digests(teammate) == digests(lab["origin"])
    nothing_to_do(teammate)
    # No job ran: every job writes lines to its log; `snakemake --touch` leaves logs empty.
    written = [p for p in (teammate / "logs").rglob("*.log") if p.stat().st_size > 0]
    assert written == []


def test_changing_train_lr_reruns_training_and_after_only(teammate: Path) -> None:
    shard = next((teammate / "data/tiny/features/synth_cremad").glob("spec-*.npy"))
    before = shard.stat()
    set_params(teammate, train__lr=0.02)
    status = json.loads(run(["dvc", "status", "--json"], teammate).stdout)
    assert set(status) == {"train"}                   # analyse/report follow once train's outputs change
    out = run(["dvc", "repro"], teammate).stdout
    assert stages_run(out) == ["train", "analyse", "report"]
    after = shard.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    recorded = json.loads((teammate / "results/tiny/runs/synth_cremad/baseline/seed0/metrics.json").read_text())
    assert recorded["params"]["train"]["lr"] == 0.02
    nothing_to_do(teammate)


def test_adding_a_method_trains_only_its_runs(teammate: Path) -> None:
    runs = teammate / "results/tiny/runs/synth_cremad"
    old = {p: p.stat().st_mtime_ns for p in runs.glob("*/seed*/metrics.json")}
    set_params(teammate, run__methods=["unimodal_audio", "baseline", "unimodal_visual"])
    out = run(["dvc", "repro"], teammate)
    assert stages_run(out.stdout) == ["train", "analyse", "report"]
    assert {p: p.stat().st_mtime_ns for p in old} == old          # existing runs untouched
    assert (runs / "unimodal_visual" / "seed0" / "metrics.json").is_file()
    assert re.search(r"^train\s+1$", out.stdout + out.stderr, re.M)  # Snakemake's job stats: one training job
    nothing_to_do(teammate)


def test_corrupted_artifact_is_reported_and_repaired(teammate: Path) -> None:
    shard = next((teammate / "data/tiny/features/synth_cremad").glob("frames-*.npy"))
    good = shard.read_bytes()
    shard.write_bytes(good[:-100] + bytes(100))
    status = run(["dvc", "status"], teammate).stdout
    assert "extract" in status and "modified" in status
    refused = run(["avbias", "pull"], teammate, check=False)   # a pull touches nothing while status is dirty
    assert refused.returncode != 0 and "dvc status is not clean" in refused.stderr
    run(["avbias", "repair"], teammate)
    assert shard.read_bytes() == good
    nothing_to_do(teammate)


def test_experiment_runs_beside_the_unchanged_baseline(lab: dict[str, Path]) -> None:
    origin = lab["origin"]
    baseline = digests(origin)
    params_before = (origin / "params.yaml").read_text()
    run(["dvc", "exp", "run", "--temp", "-S", "train.lr=0.01", "-n", "lr001"], origin)
    assert digests(origin) == baseline and (origin / "params.yaml").read_text() == params_before
    shown = json.loads(run(["dvc", "exp", "show", "--json"], origin).stdout)
    assert "lr001" in json.dumps(shown)
    diff = run(["dvc", "metrics", "diff", "HEAD", "lr001"], origin).stdout
    assert "test_acc" in diff or "Path" in diff
    params_diff = run(["dvc", "params", "diff", "HEAD", "lr001"], origin).stdout
    assert "train.lr" in params_diff and "0.01" in params_diff
