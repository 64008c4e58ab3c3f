"""The clip manifest: one row per clip with its label, group (actor), split and media paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from avbias.data.datasets import DATASETS, DatasetSpec, cremad_label
from avbias.data.splits import stratified_split
from avbias.errors import DataError
from avbias.io import atomic_path

MANIFEST_COLUMNS = ["clip_id", "label", "label_name", "group", "split", "audio_path", "video_path"]


def _portable(path: Path) -> str:
    """Paths inside the working tree are stored relative to it, so manifests move between machines."""
    try:
        return os.path.relpath(path, Path.cwd()) if path.resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def scan_cremad_layout(root: Path, spec: DatasetSpec) -> pd.DataFrame:
    """Clips with both AudioWAV/<id>.wav and VideoFlash/<id>.flv present."""
    audio = {p.stem: p for p in (root / "AudioWAV").glob("*.wav")}
    video = {p.stem: p for p in (root / "VideoFlash").glob("*.flv")}
    if not audio and not video:
        raise DataError(f"{root}: no AudioWAV/*.wav or VideoFlash/*.flv found; is this a CREMA-D folder?")
    unpaired = sorted(set(audio) ^ set(video))
    if unpaired:
        raise DataError(
            f"{root}: {len(unpaired)} clips lack their audio or video file, e.g. {unpaired[:5]}; "
            "re-run the acquire stage to complete the dataset"
        )
    rows = []
    for clip_id in sorted(audio):
        name = cremad_label(clip_id)
        rows.append(
            {
                "clip_id": clip_id,
                "label": spec.classes.index(name),
                "label_name": name,
                "group": clip_id.split("_")[0],
                "audio_path": _portable(audio[clip_id]),
                "video_path": _portable(video[clip_id]),
            }
        )
    return pd.DataFrame(rows)


def build_manifest(dataset: str, raw_dir: str | Path, params: dict[str, Any]) -> pd.DataFrame:
    spec = DATASETS[dataset]
    clips = scan_cremad_layout(Path(raw_dir), spec)
    splits = params["splits"]
    clips["split"] = stratified_split(
        clips.set_index("clip_id")["label"], splits["test_fraction"], splits["val_fraction"], splits["seed"]
    ).to_numpy()
    return clips[MANIFEST_COLUMNS]


def write_manifest(clips: pd.DataFrame, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "clips.parquet") as tmp:
        clips.to_parquet(tmp, index=False)
    for split in ("train", "val", "test"):
        ids = clips.loc[clips["split"] == split, "clip_id"]
        with atomic_path(out_dir / f"{split}.txt") as tmp:
            tmp.write_text("".join(f"{i}\n" for i in ids))
