"""A lab sharing results through a DVC remote, with real git, DVC and Snakemake in temporary folders.

One person runs the pipeline with `dvc repro` and pushes; a teammate clones and pulls, changes a
parameter, adds a method, breaks and repairs an artifact, edits the training code; an experiment runs
beside the baseline; and DVC adopts what a plain Snakemake run (`make demo`) built.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import make_project, run, snakemake

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
    # report: its protocol text is composed from train (avbias.config.protocol_text); analyse follows once
    # train's outputs change
    assert set(status) == {"train", "report"}
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


def test_editing_the_training_loader_makes_only_train_stale(teammate: Path) -> None:
    loader = teammate / "src/avbias/train/loader.py"
    original = loader.read_bytes()
    try:
        loader.write_bytes(original + b"# an edit to the training code\n")
        status = json.loads(run(["dvc", "status", "--json"], teammate).stdout)
        assert set(status) == {"train"}, status           # extract reads no loader code; analyse follows train's outs
        assert "src/avbias/train" in json.dumps(status["train"]), status   # the stage folder is the dep
    finally:
        loader.write_bytes(original)
    nothing_to_do(teammate)


def test_experiment_runs_beside_the_unchanged_baseline(lab: dict[str, Path]) -> None:
    origin = lab["origin"]
    baseline = digests(origin)
    params_before = (origin / "params.yaml").read_text()
    run(["dvc", "exp", "run", "--temp", "-S", "train.lr=0.01", "-n", "lr001"], origin)
    assert digests(origin) == baseline and (origin / "params.yaml").read_text() == params_before
    shown = json.loads(run(["dvc", "exp", "show", "--json"], origin).stdout)
    assert "lr001" in json.dumps(shown)
    # --all: rows whose value did not change are listed too. {path: {metric: {old, new, diff}}}
    diff = json.loads(run(["dvc", "metrics", "diff", "--all", "--json", "HEAD", "lr001"], origin).stdout)
    rows = {metric: row for table in diff.values() for metric, row in table.items()}
    for method in LAB["run"]["methods"]:
        row = rows.get(f"synth_cremad.{method}.test_acc")
        assert row and isinstance(row["old"], float) and isinstance(row["new"], float), (method, rows)
    # The baseline's decision weights are trained with another learning rate: their audio share moves.
    share = rows["synth_cremad.baseline.weight_share_audio"]
    assert share["old"] != share["new"], share
    params_diff = run(["dvc", "params", "diff", "HEAD", "lr001"], origin).stdout
    assert "train.lr" in params_diff and "0.01" in params_diff


# What a plain Snakemake run builds, for DVC to adopt: one joint run (the report needs a joint method), 2 epochs.
ADOPT = {
    "run": {"methods": ["baseline"], "seeds": [0]},
    "synth": {"num_actors": 2, "num_sentences": 3},
    "train": {"epochs": 2},
}


def test_adopt_makes_dvc_record_what_snakemake_built(tmp_path: Path) -> None:
    """`make demo` runs Snakemake with an override config; `avbias adopt` (make adopt) makes `dvc repro`
    report up to date without running a stage."""
    project = make_project(tmp_path / "project", ADOPT)
    git(project, "init", "-q", "-b", "main")
    run(["dvc", "init", "-q"], project)
    run(["dvc", "config", "cache.type", "reflink,copy"], project)
    adopt = ["avbias", "adopt", "--configfile", "params.yaml", "tiny.yaml"]
    params_before = (project / "params.yaml").read_text()

    refused = run(adopt, project, check=False)             # nothing built yet: refuses, naming the stale jobs
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "What is stale" in refused.stderr
    assert "train: results/tiny/runs/synth_cremad/baseline/seed0" in refused.stderr
    assert (project / "params.yaml").read_text() == params_before and not (project / "dvc.lock").exists()

    snakemake(project, "all")
    model = project / "results/tiny/runs/synth_cremad/baseline/seed0/model.pt"
    built = model.stat().st_mtime_ns
    adopted = run(adopt, project)
    assert "DVC reads only params.yaml" in adopted.stderr
    assert yaml.safe_load((project / "params.yaml").read_text())["paths"]["results"] == "results/tiny"
    assert run(["dvc", "status", "--json"], project).stdout.strip() in ("{}", "")
    repro = run(["dvc", "repro"], project)
    assert stages_run(repro.stdout) == [] and "up to date" in repro.stdout, repro.stdout[-2000:]
    assert model.stat().st_mtime_ns == built
    nothing_to_do(project)


def test_dvc_plots_show_renders_the_validation_curves_with_methods_all(lab: dict[str, Path], tmp_path: Path) -> None:
    """The plot definition must not depend on run.methods: the shipped `all` once broke it."""
    import shutil

    project = tmp_path / "copy"
    shutil.copytree(lab["origin"], project, symlinks=True)
    set_params(project, run__methods="all")
    shown = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)
    rendered = {Path(name).stem: plot for name, plot in shown["data"].items() if "report/plots" in name}
    assert set(rendered) == set(LAB["run"]["methods"]), shown["data"].keys()
    for name, plots in rendered.items():
        points = plots[0]["content"]["data"]["values"]
        assert len(points) == LAB["train"]["epochs"], name
        assert all(0 <= float(p["accuracy"]) <= 1 for p in points)
