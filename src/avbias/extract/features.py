"""The extract stage: one pass per clip, everything training needs, streamed into shards."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avbias.datasets import DATASETS
from avbias.errors import DataError
from avbias.extract.decode import DecodeError, decode_audio, read_frames
from avbias.extract.spectrogram import audio_features
from avbias.io import atomic_dir, atomic_path, write_json
from avbias.parallel import process_pool
from avbias.shards import MANIFEST, QUARANTINE, write_shard

log = logging.getLogger(__name__)


def params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def recipe_for(dataset: str, extract: dict[str, Any]) -> dict[str, Any]:
    """The dataset's extraction recipe (its family's: synth_ks uses kinetics_sounds') and the shared keys."""
    shared = {k: v for k, v in extract.items() if not isinstance(v, dict)}
    return {**extract[DATASETS[dataset].family], **shared}


def extract_clip(audio_path: str, video_path: str, recipe: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | str:
    """(audio features, frames) for one clip, or the reason it cannot be decoded."""
    try:
        samples = decode_audio(audio_path, recipe["sample_rate"])
        if samples.size < recipe["min_audio_s"] * recipe["sample_rate"]:
            raise DecodeError(f"audio lasts {samples.size / recipe['sample_rate']:.2f} s, "
                              f"under extract.min_audio_s={recipe['min_audio_s']}")
        spec = audio_features(samples, recipe).astype(recipe["spec_dtype"])
        frames = read_frames(video_path, recipe["num_frames"], recipe["frame_size"])
    except DecodeError as exc:
        return str(exc)
    return spec, frames


def _init_worker() -> None:
    # Parallelism is across clips; keep each worker single-threaded so N workers use N cores.
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def check_quarantine(quarantine: list[dict[str, Any]], total: int, limit: float) -> None:
    """Fail, with a summary by reason, when more than `limit` of the clips could not be decoded."""
    if total and len(quarantine) / total > limit:
        reasons = pd.Series([q["reason"].split(":")[0] for q in quarantine]).value_counts()
        examples = "\n".join(f"  {q['clip_id']}: {q['reason']}" for q in quarantine[:10])
        raise DataError(
            f"{len(quarantine)} of {total} clips ({len(quarantine) / total:.1%}) could not be decoded, above "
            f"extract.max_quarantined_fraction={limit}. By reason: {reasons.to_dict()}\n{examples}\n"
            "Check or re-acquire these files (the acquire stage verifies checksums), or raise the limit. "
            "Media missing after `avbias pull` (DVC shares the clip index, not the media): fetch them with "
            "`snakemake --forcerun acquire acquire_all`."
        )


def extract_features(clips: pd.DataFrame, classes: list[str], out_dir: str | Path, params: dict[str, Any],
                     dataset: str, workers: int = 1) -> dict[str, Any]:
    """Write shards, manifest.parquet and quarantine.parquet into out_dir (replaced atomically)."""
    extract = recipe_for(dataset, params["extract"])
    digest = params_hash(extract)
    clips = clips.sort_values("clip_id").reset_index(drop=True)
    manifest_rows: list[dict[str, Any]] = []
    quarantine_rows: list[dict[str, Any]] = []
    shard_size = extract["shard_size"]
    with atomic_dir(out_dir) as tmp, process_pool(workers, _init_worker) as pool:
        shard = 0
        for start in range(0, len(clips), shard_size):
            chunk = clips.iloc[start : start + shard_size]
            results = pool.map(
                extract_clip, chunk["audio_path"], chunk["video_path"], [extract] * len(chunk), chunksize=4
            )
            specs, frames = [], []
            for clip, result in zip(chunk.itertuples(index=False), results, strict=True):
                if isinstance(result, str):
                    log.warning("quarantined %s: %s", clip.clip_id, result)
                    quarantine_rows.append({"clip_id": clip.clip_id, "split": clip.split, "reason": result})
                    continue
                manifest_rows.append(
                    {"clip_id": clip.clip_id, "label": clip.label, "split": clip.split,
                     "shard": shard, "row": len(specs), "params_hash": digest}
                )
                specs.append(result[0])
                frames.append(result[1])
            if specs:
                write_shard(tmp, shard, np.stack(specs), np.stack(frames))
                shard += 1
            log.info("extracted %d / %d clips", start + len(chunk), len(clips))
        check_quarantine(quarantine_rows, len(clips), extract["max_quarantined_fraction"])
        if not manifest_rows:
            raise DataError(f"no clip could be decoded; first reasons: {quarantine_rows[:3]}")
        with atomic_path(tmp / MANIFEST) as path:
            pd.DataFrame(manifest_rows).to_parquet(path, index=False)
        with atomic_path(tmp / QUARANTINE) as path:
            pd.DataFrame(quarantine_rows, columns=["clip_id", "split", "reason"]).to_parquet(path, index=False)
        summary = {"clips": len(clips), "extracted": len(manifest_rows), "quarantined": len(quarantine_rows),
                   "shards": shard, "params_hash": digest, "params": extract, "classes": classes}
        write_json(tmp / "extract.json", summary)
    return summary
