"""GPU slots for training jobs on a machine without a scheduler to assign them.

A GPU holds `slots` training jobs at once (params.yaml resources.train_gpu_slots; the small ResNet18
pairs leave most of a large GPU idle when run one at a time). Snakemake's `--resources gpu=N` caps how many
training jobs run at once (N = GPUs x slots: every training job declares gpu=1); each job then claims a
free slot by an exclusive lock on a file per (device, slot), filling the devices evenly (least-loaded device
first), and exposes only that device through CUDA_VISIBLE_DEVICES. With several slots per device it also
exports AVBIAS_GPU_MEMORY_FRACTION = 1/slots, which the training loop applies
(torch.cuda.set_per_process_memory_fraction), so one job cannot take the memory of the others.

Under SLURM (or wherever CUDA_VISIBLE_DEVICES is already set) the scheduler's choice stands; jobs share a
GPU there only through the site's sharing mechanism (GRES shard or MPS, profiles/slurm/config.yaml).

Environment: AVBIAS_GPU_LOCK_DIR (where the lock files live; default a per-user folder in the temporary
directory), AVBIAS_GPU_COUNT (the device count to use instead of the driver's: the first N GPUs, or a
simulated device in tests).
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

from avbias.errors import AvbiasError

log = logging.getLogger(__name__)
_held: list[IO[str]] = []      # lock files stay open (and locked) until the process exits
MEMORY_FRACTION_ENV = "AVBIAS_GPU_MEMORY_FRACTION"
COUNT_ENV = "AVBIAS_GPU_COUNT"
LOCK_DIR_ENV = "AVBIAS_GPU_LOCK_DIR"


class GpuSlotsError(AvbiasError, RuntimeError):
    """Every GPU slot is held by another training job."""


def visible_gpus() -> int:
    """GPUs the driver lists, without initialising CUDA in this process."""
    if not shutil.which("nvidia-smi"):
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


def gpu_count() -> int:
    """AVBIAS_GPU_COUNT when set, else the GPUs the driver lists."""
    value = os.environ.get(COUNT_ENV)
    return int(value) if value not in (None, "") else visible_gpus()


def default_lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"avbias-gpu-locks-{os.getuid()}")


def _try_lock(path: Path) -> IO[str] | None:
    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _export_memory_fraction(slots: int) -> None:
    if slots > 1:
        os.environ[MEMORY_FRACTION_ENV] = repr(1.0 / slots)


def claim_gpu(wanted: int, slots: int = 1, count: int | None = None, lock_dir: str | Path | None = None) -> str | None:
    """Claim a free slot on the least-loaded GPU: set CUDA_VISIBLE_DEVICES to it (returned) and, with
    several slots per GPU, AVBIAS_GPU_MEMORY_FRACTION to 1/slots. The slot stays held until the process exits.

    Nothing is claimed when the job wants no GPU, when there is none, or when there is one device with one
    slot (nothing to choose). Raises GpuSlotsError when every slot is held by another job."""
    if slots < 1:
        raise ValueError(f"slots per GPU must be >= 1, got {slots}")
    if "CUDA_VISIBLE_DEVICES" in os.environ:     # a scheduler (SLURM) chose; with shard/MPS GRES, bound memory too
        _export_memory_fraction(slots)
        return os.environ["CUDA_VISIBLE_DEVICES"]
    if wanted < 1:
        return None
    count = gpu_count() if count is None else count
    if count < 1 or (count == 1 and slots == 1):
        return None
    lock_dir = Path(lock_dir or default_lock_dir())
    lock_dir.mkdir(parents=True, exist_ok=True)
    # One claim at a time (blocking): counting the free slots and taking one is then atomic across jobs.
    with open(lock_dir / "claim.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        free: dict[int, list[tuple[int, IO[str]]]] = {}
        try:
            for device in range(count):
                for slot in range(slots):
                    handle = _try_lock(lock_dir / f"gpu{device}.slot{slot}.lock")
                    if handle is not None:
                        free.setdefault(device, []).append((slot, handle))
            if not free:
                raise GpuSlotsError(
                    f"all {count * slots} GPU slots ({count} GPU(s) x {slots} per GPU, resources.train_gpu_slots) are "
                    f"held by other training jobs (locks in {lock_dir}): run Snakemake with --resources gpu="
                    f"{count * slots} or fewer (GPUs x resources.train_gpu_slots), or raise resources.train_gpu_slots")
            held = count * slots - sum(len(pairs) for pairs in free.values())
            device = max(free, key=lambda d: (len(free[d]), -d))       # most free slots = least loaded; lowest index
            slot, handle = free[device].pop(0)
            _held.append(handle)
        finally:
            for pairs in free.values():
                for _, other in pairs:
                    other.close()
    os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
    _export_memory_fraction(slots)
    log.info("using GPU %d slot %d (%d GPU(s) x %d slot(s) per GPU; %d held by other jobs)", device, slot, count,
             slots, held)
    return str(device)


def release_all() -> None:
    """Give back every slot this process holds (tests; a training process simply exits)."""
    while _held:
        _held.pop().close()
