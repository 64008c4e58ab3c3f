"""Sharing results through a DVC remote, and keeping Snakemake in agreement with DVC.

DVC restores files in arbitrary order and with fresh mtimes, and a fresh clone has no Snakemake
metadata, so Snakemake would want to rerun jobs whose outputs DVC just restored. Once `dvc status`
is clean (every artifact matches dvc.lock), `snakemake --touch` re-stamps the outputs in DAG order and
records Snakemake's metadata (params, code), after which both tools agree there is nothing to do, and
later parameter changes are seen by both.

The other way round, `avbias adopt` makes DVC record what Snakemake built (e.g. after `make demo`): once
Snakemake has nothing to do, `dvc commit` writes the current deps, params and outs into dvc.lock, so
`dvc repro` reports up to date instead of running every stage again.
"""

from __future__ import annotations

import glob
import json
import logging
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avbias.config import load_params
from avbias.errors import AvbiasError
from avbias.io import atomic_path, read_json
from avbias.methods import METHODS, run_params
from avbias.train import run_dir

log = logging.getLogger(__name__)

PARAMS_FILE = "params.yaml"    # the only params file DVC reads (dvc.yaml's ${...} and each stage's params)


class ShareError(AvbiasError):
    pass


def _run(cmd: Sequence[str], what: str) -> subprocess.CompletedProcess[str]:
    log.info("$ %s", " ".join(cmd))
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    if proc.returncode != 0:
        raise ShareError(f"{what} failed ({' '.join(cmd)}):\n{(proc.stdout + proc.stderr).strip()[-3000:]}")
    return proc


def dvc_status() -> dict[str, Any]:
    """`dvc status --json`: {} when every stage and artifact matches dvc.lock."""
    out = _run(["dvc", "status", "--json"], "dvc status").stdout.strip()
    return json.loads(out) if out else {}


def describe_status(status: dict[str, Any]) -> str:
    lines = []
    for stage, changes in status.items():
        for change in changes if isinstance(changes, list) else [changes]:
            lines.append(f"  {stage}: {json.dumps(change, sort_keys=True)}")
    return "\n".join(lines)


def remote_args(remote: str | None, run_cache: bool) -> list[str]:
    """Options shared by `dvc push` and `dvc pull`."""
    return [*(["--remote", remote] if remote else []), *(["--run-cache"] if run_cache else [])]


def snakemake_args(configfiles: Sequence[str]) -> list[str]:
    return ["--configfile", *configfiles] if configfiles else []


def not_clean(status: dict[str, Any], context: str) -> ShareError:
    return ShareError(
        f"dvc status is not clean, so {context}. What differs:\n{describe_status(status)}\n"
        "Restore tracked artifacts with `avbias repair` (dvc checkout --force), or run `dvc repro` "
        "if you changed code or params on purpose."
    )


def sync_snakemake(configfiles: Sequence[str]) -> None:
    """Require a clean `dvc status`, then re-stamp Snakemake's view; touch nothing otherwise."""
    status = dvc_status()
    if status:
        raise not_clean(status, "Snakemake's timestamps were left alone")
    _run(["snakemake", "all", "--touch", "--cores", "1", *snakemake_args(configfiles)], "snakemake --touch")
    dry = _run(["snakemake", "all", "-n", *snakemake_args(configfiles)], "snakemake -n")
    if "Nothing to be done" not in dry.stdout + dry.stderr:
        raise ShareError(f"after --touch Snakemake still wants to run jobs:\n{dry.stdout[-3000:]}")
    log.info("dvc status is clean and snakemake has nothing to do")


def stale_jobs(dry_run: str, limit: int = 20) -> str:
    """The jobs a `snakemake -n` output lists, one line each: rule, outputs and Snakemake's reason."""
    jobs: list[str] = []
    rule: str | None = None
    fields: dict[str, str] = {}

    def flush() -> None:
        if rule is not None and rule != "all":
            reason = fields.get("reason", "")
            reason = reason if len(reason) <= 160 else reason[:157] + "..."
            jobs.append(f"  {rule}: {fields.get('output', '(no output)')}" + (f" ({reason})" if reason else ""))

    for line in dry_run.splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line.strip()):
            flush()
            rule, fields = match.group(1), {}
        elif rule is not None and (match := re.fullmatch(r"\s+(output|reason): (.*)", line)):
            fields[match.group(1)] = match.group(2)
        elif rule is not None and not line.startswith((" ", "\t")):
            flush()
            rule = None
    flush()
    more = f"\n  ... and {len(jobs) - limit} more" if len(jobs) > limit else ""
    return "\n".join(jobs[:limit]) + more


def adopt(configfiles: Sequence[str]) -> None:
    """Make DVC record what Snakemake built with these config files, without running anything.

    Refuses (changing nothing) unless `snakemake -n all` has nothing to do. DVC reads only params.yaml, so
    when the config files merge to other params, the merged params are written into params.yaml first.
    Then `dvc commit --force` records the current deps, params and outs in dvc.lock, and `dvc status`
    must be clean.
    """
    files = list(configfiles) or [PARAMS_FILE]
    merged = load_params(*files)
    dry = _run(["snakemake", "all", "-n", *snakemake_args(files)], "snakemake -n")
    if "Nothing to be done" not in dry.stdout + dry.stderr:
        raise ShareError(
            f"Snakemake still has jobs to run with {' '.join(files)}, so DVC adopted nothing (params.yaml and "
            "dvc.lock are unchanged). Finish the run first (`snakemake all --configfile "
            f"{' '.join(files)}`, or `make demo`), then adopt. What is stale:\n{stale_jobs(dry.stdout + dry.stderr)}"
        )
    _run(["dvc", "root"], "dvc root")                # a DVC project, before params.yaml is touched
    if merged != load_params(PARAMS_FILE):
        import yaml

        with atomic_path(PARAMS_FILE) as tmp:
            header = f"# Merged from: {', '.join(files)} (avbias adopt)\n"
            tmp.write_text(header + yaml.safe_dump(merged, sort_keys=False))
        log.warning("DVC reads only %s: wrote the merged parameters of %s into it (what `avbias params %s --out %s` "
                    "writes), so dvc.yaml's paths and each stage's params are the ones Snakemake used",
                    PARAMS_FILE, " + ".join(files), " ".join(files), PARAMS_FILE)
    _run(["dvc", "commit", "--force"], "dvc commit")
    status = dvc_status()
    if status:
        raise not_clean(status, "dvc.lock does not match the workspace after dvc commit")
    dry = _run(["snakemake", "all", "-n", *snakemake_args(files)], "snakemake -n")
    if "Nothing to be done" not in dry.stdout + dry.stderr:   # dvc commit re-linked outputs (new mtimes)
        sync_snakemake(files)
    log.info("DVC adopted Snakemake's outputs: dvc status is clean, so `dvc repro` has nothing to do; commit "
             "dvc.lock and %s with git", PARAMS_FILE)


def pull(configfiles: Sequence[str], remote: str | None = None, run_cache: bool = False) -> None:
    try:
        _run(["dvc", "pull", *remote_args(remote, run_cache)], "dvc pull")
    except ShareError as exc:
        status = dvc_status()
        if status:     # DVC refuses to overwrite modified outputs: say which, and what to do
            raise not_clean(status, f"nothing was overwritten ({exc})") from None
        raise
    sync_snakemake(configfiles)


def push(remote: str | None = None, run_cache: bool = False) -> None:
    status = dvc_status()
    if status:
        raise not_clean(status, "nothing was pushed")
    _run(["dvc", "push", *remote_args(remote, run_cache)], "dvc push")
    if shutil.which("git"):
        dirty = subprocess.run(["git", "status", "--porcelain", "dvc.lock", "params.yaml"], capture_output=True,
                               text=True).stdout
        if dirty.strip():
            log.warning("dvc.lock or params.yaml has uncommitted changes: commit and push them with git so "
                        "teammates can pull these artifacts")


def repair(configfiles: Sequence[str], targets: Sequence[str] = ()) -> None:
    """Restore tracked artifacts from the DVC cache (or remote), then re-stamp Snakemake's view."""
    checkout = subprocess.run(["dvc", "checkout", "--force", *targets], capture_output=True, text=True)
    if checkout.returncode != 0:
        log.info("some artifacts are not in the local cache; fetching them from the remote")
        _run(["dvc", "pull", "--force", *targets], "dvc pull --force")
    sync_snakemake(configfiles)


def prune_stale_runs(params_file: str, runs_root: str | Path) -> list[Path]:
    """Delete runs trained with other model/train params than params_file's, so Snakemake retrains them.

    Snakemake's own params trigger needs its metadata, which a fresh clone or a `dvc exp run --temp`
    workspace does not have; each run records the params it was trained with in metrics.json.
    """
    params = load_params(params_file)
    stale = []
    pattern = run_dir(str(Path(runs_root).parent), "*", "*", "*") + "/metrics.json"
    for metrics_path in sorted(Path(p) for p in glob.glob(pattern)):
        dataset, method = metrics_path.parent.parent.parent.name, metrics_path.parent.parent.name
        recorded = read_json(metrics_path).get("params")
        if method not in METHODS or recorded != run_params(params, method, dataset):
            stale.append(metrics_path.parent)
            shutil.rmtree(metrics_path.parent)
    if stale:
        log.info("removed %d runs trained with other params: %s", len(stale), [str(p) for p in stale])
    return stale
