"""A real single-node SLURM cluster on this machine, for the tests: munge + slurmctld + slurmd with a
minimal slurm.conf (this host the only node), everything under one temporary folder, stopped at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")


def ensure_installed() -> str | None:
    """None when SLURM and munge are (or could be made) available, else why not."""
    if all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in BINARIES):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "SLURM is not installed and cannot be (needs root and apt-get: apt-get install -y slurm-wlm munge)"
    proc = subprocess.run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], capture_output=True, text=True,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
    if proc.returncode != 0:
        return f"apt-get install slurm-wlm munge failed: {proc.stderr[-500:]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@contextmanager
def slurm_cluster(root: Path, cpus: int = 2, memory_mb: int = 8000) -> Iterator[dict[str, str]]:
    """Start the cluster; yield the environment (SLURM_CONF) that its clients need."""
    root.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for sub in ("state", "spool", "log", "munge"):
        (root / sub).mkdir(exist_ok=True)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = root / "munge" / "munge.socket"
    conf = root / "slurm.conf"
    conf.write_text(f"""ClusterName=avbias-test
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CryptoType=crypto/munge
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'log' / 'slurmctld.log'}
SlurmdLogFile={root / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
SchedulerType=sched/backfill
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    # Snakemake's job-step executor drops SLURM_* variables before its nested srun, which then reads the
    # default configuration path, as on a real cluster: point it at this cluster's file while it runs.
    system_conf = Path("/etc/slurm/slurm.conf")
    if system_conf.exists() or system_conf.is_symlink():
        raise RuntimeError(f"{system_conf} exists: a SLURM installation is configured here; not replacing it")
    system_conf.parent.mkdir(parents=True, exist_ok=True)
    system_conf.symlink_to(conf)
    procs = [subprocess.Popen([_binary("munged"), "--foreground", "--force", f"--key-file={key}",
                               f"--socket={munge_socket}", f"--pid-file={root / 'munge' / 'munged.pid'}",
                               f"--log-file={root / 'munge' / 'munged.log'}", f"--seed-file={root / 'munge' / 'seed'}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)]
    try:
        _wait(lambda: munge_socket.exists(), "munged", root)
        procs.append(subprocess.Popen([_binary("slurmctld"), "-D", "-i"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen([_binary("slurmd"), "-D"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT))

        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            return out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated")

        _wait(idle, "slurmctld/slurmd", root, timeout=60)
        yield env
    finally:
        system_conf.unlink(missing_ok=True)
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait(ready, what: str, root: Path, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        time.sleep(0.2)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(root.rglob("*.log")))
    raise RuntimeError(f"{what} did not come up within {timeout} s\n{logs}")
