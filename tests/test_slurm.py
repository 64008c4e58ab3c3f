"""The pipeline through a real single-node SLURM cluster started on this machine (tests/slurm_cluster.py):
extraction and training go through sbatch via Snakemake's SLURM executor; a training job cancelled while it
runs is retried; the results equal a local run with the same seeds."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import make_project, run, tool_env
from slurm_cluster import ensure_installed, slurm_cluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_pipeline_runs_through_slurm_and_survives_a_killed_job(tmp_path: Path) -> None:
    reason = ensure_installed()
    if reason is None and Path("/etc/slurm/slurm.conf").exists():
        reason = ("/etc/slurm/slurm.conf exists: this machine has its own SLURM configuration, "
                  "which the test leaves alone")
    if reason:
        pytest.skip(reason)
    project = make_project(tmp_path / "project",
                           {"run": {"methods": ["baseline"], "seeds": [0]}, "train": {"epochs": 4}})
    with slurm_cluster(tmp_path / "slurm") as slurm_env:
        env = {**tool_env(), "SLURM_CONF": slurm_env["SLURM_CONF"]}
        cmd = ["snakemake", "all", "--workflow-profile", "profiles/slurm", "--slurm-status-command", "squeue",
               "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "1", "--jobs", "4",
               "--slurm-logdir", str(tmp_path / "slurm-logs"), "--configfile", "params.yaml", "tiny.yaml"]
        proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        killed, seen = None, set()
        deadline = time.time() + 900
        while proc.poll() is None and time.time() < deadline:
            queue = subprocess.run(["squeue", "-h", "-o", "%i|%T|%k"], env=env, capture_output=True, text=True).stdout
            for job_id, state, comment in (line.split("|", 2) for line in queue.splitlines() if line.count("|") == 2):
                seen.add(comment)
                # Cancel the first training job once it runs: Snakemake must resubmit it.
                if killed is None and state == "RUNNING" and "train" in comment and "baseline" in comment:
                    time.sleep(3)
                    subprocess.run(["scancel", job_id], env=env, check=True)
                    killed = job_id
            time.sleep(0.5)
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output[-6000:]
    assert killed is not None, f"no running training job was seen; queue comments: {seen}\n{output[-3000:]}"
    # Jobs went through sbatch: Snakemake logged their SLURM job ids, the killed one among them, then retried.
    job_ids = set(re.findall(r"SLURM (?:run ID|jobid|job id)[^0-9]*(\d+)", output, flags=re.I))
    assert killed in job_ids and len(job_ids) >= 3, output[-4000:]     # extract, training, + the retry
    assert re.search(r"(?i)trying to restart|retry|attempt 2", output), output[-4000:]
    runs = project / "results" / "tiny" / "runs" / "synth_cremad"
    assert (project / "results" / "tiny" / "report" / "report.html").is_file()
    # A local run of the same job with the same seed gives the same metrics.
    from avbias.config import load_params
    from avbias.methods import run_params_json

    params = load_params(project / "params.yaml", project / "tiny.yaml")
    cfg = run_params_json(params, "baseline", "synth_cremad")
    run(["avbias", "train", "--params", cfg, "--dataset", "synth_cremad",
         "--method", "baseline", "--seed", "0", "--features", "data/tiny/features/synth_cremad",
         "--out", str(tmp_path / "local")], project)
    local = json.loads((tmp_path / "local" / "metrics.json").read_text())
    remote = json.loads((runs / "baseline" / "seed0" / "metrics.json").read_text())
    assert (remote["val"], remote["test"], remote["best_epoch"]) == (local["val"], local["test"], local["best_epoch"])
