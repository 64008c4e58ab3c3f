"""Shared set-up of the benchmarks: a synthetic CREMA-D-format dataset as an extraction-ready clip table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


def cremad_table(root: Path, synth: dict, clips: int, workers: int, repeat: int = 1) -> pd.DataFrame:
    """Generate about `clips` clips (whole actors) under root; list each `repeat` times under distinct ids."""
    from avbias.acquire import cremad, synthetic
    from avbias.datasets import CREMAD_EMOTIONS

    actors = max(1, clips // (6 * synth["num_sentences"]))
    plan = synthetic.generate(root, {**synth, "num_actors": actors}, "cremad", workers=workers)
    table = cremad.clips_table(root, [c.clip_id for c in plan])
    table = table.assign(label=[CREMAD_EMOTIONS.index(n) for n in table["label_name"]], split="train")
    return pd.concat([table.assign(clip_id=table["clip_id"] + f"#{r}") for r in range(repeat)], ignore_index=True)


def random_features(out: Path, clips: int, spec_shape: tuple[int, int], frame_size: int, frames: int = 3,
                    classes: int = 6, shard_size: int = 512) -> Path:
    """Feature shards of random content with real shapes (train/val/test 80/10/10), as the extract stage writes."""
    import numpy as np

    from avbias.io import write_json
    from avbias.shards import MANIFEST, write_shard

    rng = np.random.default_rng(0)
    split = np.where(np.arange(clips) % 10 == 8, "val", np.where(np.arange(clips) % 10 == 9, "test", "train"))
    rows = []
    for shard, start in enumerate(range(0, clips, shard_size)):
        n = min(shard_size, clips - start)
        write_shard(out, shard, rng.normal(size=(n, *spec_shape)).astype(np.float16),
                    rng.integers(0, 255, (n, frames, frame_size, frame_size, 3), dtype=np.uint8))
        rows += [{"clip_id": f"c{start + r:06d}", "label": int((start + r) % classes), "split": split[start + r],
                  "shard": shard, "row": r, "params_hash": "random"} for r in range(n)]
    pd.DataFrame(rows).to_parquet(out / MANIFEST, index=False)
    write_json(out / "extract.json", {"classes": [f"class{c}" for c in range(classes)]})
    return out


def timed_epoch(trainer: Any) -> float:
    """Seconds of one training epoch of the real loop, after a warm-up epoch (cuDNN autotuning, allocator),
    synchronised with the GPU when there is one; peak GPU memory is counted from the warm-up on."""
    import time

    import torch

    cuda = trainer.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train_epoch(0)
    sync()
    start = time.perf_counter()
    trainer.train_epoch(1)
    sync()
    return time.perf_counter() - start
