"""The extract stage: decode every clip of a manifest once into memory-mappable tensor shards
(data/features/<dataset>: shards, manifest.parquet, quarantine.parquet, extract.json; avbias.shards).

features.py      the dataset family's recipe (extract.<family>), parallel over clips, streamed shard by shard
decode.py        audio through ffmpeg, frames through OpenCV; DecodeError = quarantine reason
spectrogram.py   torchaudio features by recipe: log |STFT| (CREMA-D), Kaldi fbank (Kinetics-Sounds)

Importing this package costs nothing: `extract` imports the modules when it runs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def extract(dataset: str, manifest_dir: str | Path, out_dir: str | Path, params: dict[str, Any],
            workers: int = 1) -> dict[str, Any]:
    """`avbias extract`: the clips and classes of manifest_dir (the manifest stage's folder) into shards in
    out_dir, with `workers` processes; returns extract.json's summary."""
    import pandas as pd

    from avbias.extract.features import extract_features
    from avbias.io import read_json

    clips = pd.read_parquet(Path(manifest_dir) / "clips.parquet")
    classes = read_json(Path(manifest_dir) / "classes.json")
    summary = extract_features(clips, classes, out_dir, params, dataset, workers=workers)
    log.info("extract: %d clips, %d quarantined, %d shards", summary["extracted"], summary["quarantined"],
             summary["shards"])
    return summary
