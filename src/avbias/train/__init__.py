"""The train stage: one (dataset, method, seed) run from the feature shards to its folder under results/runs.

loop.py      the one training loop (Trainer, train_run) every method hooks into
loader.py    batches from the shards: split in (GPU) memory or memory-mapped, batched augmentation
gpu.py       GPU slots for training jobs on hosts without a scheduler

Importing this package costs nothing (no torch): the Snakefile and avbias.share read the run layout here,
and `train` imports the loop when it runs, after claiming a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Where a run's files live, written once: the train rule's outputs and the DVC train stage's pruning
# (avbias.share) both use this pattern. Everything else is named by its rule's output in workflow/rules.
RUN_DIR = "{results}/runs/{dataset}/{method}/seed{seed}"


def run_dir(results: str, dataset: str = "{dataset}", method: str = "{method}", seed: str = "{seed}") -> str:
    return RUN_DIR.format(results=results, dataset=dataset, method=method, seed=seed)


def train(dataset: str, method: str, seed: int, features_dir: str | Path, out_dir: str | Path, params: dict[str, Any],
          *, threads: int = 1, pretrained: list[Path] | None = None, in_memory: str = "auto", num_workers: int = 0,
          gpus: int = 0, gpu_slots: int = 1) -> dict[str, Any]:
    """`avbias train`: claim a GPU slot (gpus, gpu_slots: avbias.train.gpu), then train one run
    (loop.train_run); returns its metrics.json."""
    from avbias.train.gpu import claim_gpu

    claim_gpu(gpus, gpu_slots)   # before torch initialises CUDA
    from avbias.train.loop import train_run

    return train_run(dataset, method, seed, features_dir, out_dir, params, threads=threads, pretrained=pretrained,
                     in_memory=in_memory, num_workers=num_workers)
