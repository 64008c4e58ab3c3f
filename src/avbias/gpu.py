"""One GPU per training job on a multi-GPU machine without a scheduler to assign them.

Snakemake's `--resources gpu=N` caps how many training jobs run at once; each job then claims the first
free GPU by an exclusive lock on a file and exposes only that one through CUDA_VISIBLE_DEVICES. Under
SLURM (or wherever CUDA_VISIBLE_DEVICES is already set) the scheduler's choice stands.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)
_held: list[IO[str]] = []      # lock files stay open (and locked) until the process exits


def visible_gpus() -> int:
    """GPUs the driver lists, without initialising CUDA in this process."""
    if not shutil.which("nvidia-smi"):
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


def claim_gpu(wanted: int, count: int | None = None, lock_dir: str | Path | None = None) -> str | None:
    """Set CUDA_VISIBLE_DEVICES to a free GPU (returned) when a job wants one and several are visible."""
    if wanted < 1 or "CUDA_VISIBLE_DEVICES" in os.environ:
        return os.environ.get("CUDA_VISIBLE_DEVICES")
    count = visible_gpus() if count is None else count
    if count <= 1:
        return None
    lock_dir = Path(lock_dir or Path(tempfile.gettempdir()) / f"avbias-gpu-locks-{os.getuid()}")
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        handle = open(lock_dir / f"gpu{index}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held.append(handle)
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
        log.info("using GPU %d of %d", index, count)
        return str(index)
    raise RuntimeError(f"all {count} GPUs are claimed by other jobs; run with --resources gpu={count} or fewer jobs")
