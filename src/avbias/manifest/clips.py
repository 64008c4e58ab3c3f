"""The clip manifest: one row per clip with its label, group (actor), split and media paths."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from avbias.errors import DataError
from avbias.io import atomic_path, read_json, write_json
from avbias.manifest.splits import assign_splits

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["clip_id", "label", "label_name", "group", "split", "audio_path", "video_path"]
SPLITS = ("train", "val", "test")


def _portable(path: Path) -> str:
    """Paths inside the working tree are stored relative to it, so manifests move between machines."""
    try:
        return os.path.relpath(path, Path.cwd()) if path.resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def build_manifest(dataset: str, raw_dir: str | Path, params: dict[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """(clips with their split, class names) from the acquire stage's index in raw_dir."""
    raw_dir = Path(raw_dir)
    try:
        classes = read_json(raw_dir / "acquire.json")["classes"]
        clips = pd.read_csv(raw_dir / "clips.csv", dtype={"group": str, "official_split": object})
    except FileNotFoundError as exc:
        raise DataError(f"{raw_dir}: {Path(exc.filename).name} missing; re-run the acquire stage") from None
    unknown = sorted(set(clips["label_name"]) - set(classes))
    if unknown:
        raise DataError(f"{raw_dir}/clips.csv: labels {unknown} are not among the dataset's classes")
    clips["label"] = [classes.index(name) for name in clips["label_name"]]
    for column in ("audio_path", "video_path"):
        clips[column] = [_portable(raw_dir / p) for p in clips[column]]
    clips["split"] = assign_splits(clips, params["splits"], dataset).to_numpy()
    clips = clips[clips["split"].notna()]
    # splits.val_fraction 0: no validation split (the papers' protocol: train on the whole official train split).
    needed = SPLITS if params["splits"]["val_fraction"] > 0 else ("train", "test")
    missing = [s for s in needed if not (clips["split"] == s).any()]
    if missing:
        raise DataError(f"{dataset}: no clips in the {missing} split(s) "
                        f"with splits.scheme={params['splits']['scheme']}")
    return clips[MANIFEST_COLUMNS].reset_index(drop=True), classes


def write_manifest(clips: pd.DataFrame, classes: list[str], out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "clips.parquet") as tmp:
        clips.to_parquet(tmp, index=False)
    write_json(out_dir / "classes.json", classes)
    for split in SPLITS:
        ids = clips.loc[clips["split"] == split, "clip_id"]
        with atomic_path(out_dir / f"{split}.txt") as tmp:
            tmp.write_text("".join(f"{i}\n" for i in ids))
