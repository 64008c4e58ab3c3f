"""Tensor shards: .npy arrays (memory-mappable) plus a Parquet manifest saying where each clip lives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from avbias.errors import DataError
from avbias.io import atomic_path

MANIFEST = "manifest.parquet"
QUARANTINE = "quarantine.parquet"


def shard_paths(features_dir: Path, shard: int) -> tuple[Path, Path]:
    return features_dir / f"spec-{shard:05d}.npy", features_dir / f"frames-{shard:05d}.npy"


def write_shard(features_dir: Path, shard: int, spec: np.ndarray, frames: np.ndarray) -> None:
    for path, array in zip(shard_paths(features_dir, shard), (spec, frames), strict=True):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)


@dataclass
class SplitArrays:
    """One split's features, in manifest order."""

    clip_ids: list[str]
    labels: np.ndarray        # int64 (N,)
    spec: np.ndarray          # (N, F, T) float16/float32
    frames: np.ndarray        # (N, K, S, S, 3) uint8


def read_manifest(features_dir: str | Path) -> pd.DataFrame:
    path = Path(features_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: feature manifest missing; run the extract stage")
    return pd.read_parquet(path)


def load_split(features_dir: str | Path, split: str) -> SplitArrays:
    """Gather a split's rows from the memory-mapped shards (only the rows needed are read)."""
    features_dir = Path(features_dir)
    manifest = read_manifest(features_dir)
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        raise DataError(f"{features_dir}: split {split!r} has no clips")
    specs, frames = [], []
    for shard, group in rows.groupby("shard", sort=True):
        spec_path, frames_path = shard_paths(features_dir, int(shard))
        idx = group["row"].to_numpy()
        specs.append(np.load(spec_path, mmap_mode="r")[idx])
        frames.append(np.load(frames_path, mmap_mode="r")[idx])
    ordered = rows.sort_values(["shard", "row"])
    return SplitArrays(
        clip_ids=ordered["clip_id"].tolist(),
        labels=ordered["label"].to_numpy(dtype=np.int64, copy=True),
        spec=np.concatenate(specs),
        frames=np.concatenate(frames),
    )
