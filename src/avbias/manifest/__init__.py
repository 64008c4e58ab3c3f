"""The manifest stage: each clip of the acquire stage's index with its label and split, in
data/manifest/<dataset> (clips.parquet, classes.json, <split>.txt).

clips.py     labels from the classes in acquire.json, the split assignment, the manifest files
splits.py    the split schemes: literature split (+ validation carve-out), speaker-disjoint, stratified random

Importing this package costs nothing: `manifest` imports the modules when it runs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def manifest(dataset: str, raw_dir: str | Path, out_dir: str | Path, params: dict[str, Any]) -> pd.DataFrame:
    """`avbias manifest`: build the manifest from raw_dir (the acquire stage's folder), write it to out_dir;
    returns the clips."""
    from avbias.manifest.clips import build_manifest, write_manifest

    clips, classes = build_manifest(dataset, raw_dir, params)
    write_manifest(clips, classes, out_dir)
    log.info("manifest: %s", clips.groupby("split").size().to_dict())
    return clips
