"""CREMA-D: the official Git LFS media (download) or an existing checkout (local), verified file by file
against the sha256 and size of every media file (shipped in the package, from the LFS pointers)."""

from __future__ import annotations

import gzip
import io
import logging
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from avbias.acquire.download import DownloadPolicy, RemoteFile, VerifiedCache, download_all, verify_file
from avbias.acquire.download_errors import ways_forward
from avbias.datasets import CREMAD_EMOTIONS
from avbias.errors import DataError

log = logging.getLogger(__name__)

MEDIA_URL = "https://media.githubusercontent.com/media/CheyneyComputerScience/CREMA-D/master"
METADATA_URL = "https://raw.githubusercontent.com/CheyneyComputerScience/CREMA-D/master"
METADATA_FILES = ("VideoDemographics.csv", "SentenceFilenames.csv", "processedResults/summaryTable.csv")
# Named as defective in the dataset's README: kept or dropped by acquire.cremad.exclude_defective.
DEFECTIVE_CLIPS = ("1076_MTI_NEU_XX", "1076_MTI_SAD_XX", "1064_TIE_SAD_XX", "1064_IEO_DIS_MD")
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"


def _reference(name: str) -> bytes:
    return resources.files("avbias.acquire").joinpath("reference", name).read_bytes()


def media_manifest(path: str | None = None) -> pd.DataFrame:
    """`path, sha256, size` of every media file: the packaged CREMA-D manifest, or a given CSV (mirrors)."""
    if path is None:
        table = pd.read_csv(io.BytesIO(gzip.decompress(_reference("cremad_media_manifest.csv.gz"))))
    else:
        try:
            table = pd.read_csv(path)
        except FileNotFoundError:
            raise DataError(f"acquire.cremad.manifest: {path} not found") from None
    missing = {"path", "sha256", "size"} - set(table.columns)
    if missing:
        raise DataError(f"{path or 'packaged CREMA-D manifest'}: missing columns {sorted(missing)}")
    return table


def literature_split() -> pd.Series:
    """OGM-GE's clip-level CREMA-D split ('train' / 'test'), indexed by clip id."""
    table = pd.read_csv(
        io.BytesIO(gzip.decompress(_reference("cremad_ogm_ge_split.csv.gz"))),
        header=None, names=["clip_id", "emotion", "split"],
    )
    return table.set_index("clip_id")["split"]


def is_lfs_pointer(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(LFS_POINTER_PREFIX)) == LFS_POINTER_PREFIX


def advice(params: dict[str, Any]) -> str:
    return ways_forward("cremad", "a CREMA-D checkout (git lfs clone, then git lfs pull)", ["base_url", "metadata_url"])


def download(store: Path, params: dict[str, Any], policy: DownloadPolicy) -> dict[str, Any]:
    """Fetch the media and metadata into store; every media file verified. Returns counts.

    A preflight fetches the metadata and the smallest media file first (both hosts), and stops at the first
    systemic error (DNS, refused, TLS, 401/403/407); the bulk download has a circuit breaker."""
    manifest = media_manifest(params["manifest"])
    base = params["base_url"].rstrip("/")
    cache = VerifiedCache(store / ".avbias" / "verified.json")
    media = [
        RemoteFile(f"{base}/{row.path}", store / row.path, int(row.size), row.sha256)
        for row in manifest.itertuples(index=False)
    ]
    meta_base = params["metadata_url"].rstrip("/")
    metadata = [RemoteFile(f"{meta_base}/{name}", store / name) for name in METADATA_FILES]
    failed = store / ".avbias" / "failed.txt"
    hint = advice(params)
    first = [min(media, key=lambda f: f.size or 0)] if media else []
    pre = download_all(metadata + first, cache, policy, "CREMA-D", failed, preflight=True, advice=hint,
                       queued_after=[f for f in media if f not in first])
    report = download_all(media, cache, policy, "CREMA-D", failed, advice=hint)
    return {"downloaded": pre.downloaded + report.downloaded,
            "already_verified": report.already_verified - len(first) + pre.already_verified,
            "verified_on_disk": report.verified_on_disk + pre.verified_on_disk,
            "bytes_fetched": pre.bytes_fetched + report.bytes_fetched}


def verify_local(root: Path, store: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Check an existing checkout in place (nothing copied); raise naming what is missing or wrong."""
    if not root.is_dir():
        raise DataError(f"acquire.cremad.local_root: {root} is not a folder; point it at a CREMA-D checkout")
    manifest = media_manifest(params["manifest"])
    cache = VerifiedCache(store / ".avbias" / "verified-local.json")
    missing, pointers, bad = [], [], []
    for row in manifest.itertuples(index=False):
        path = root / row.path
        if not path.is_file():
            missing.append(row.path)
        elif cache.is_verified(path, int(row.size), row.sha256):
            continue
        elif is_lfs_pointer(path):
            pointers.append(row.path)
        else:
            problem = verify_file(path, int(row.size), row.sha256)
            if problem:
                bad.append(f"{row.path} ({problem})")
            else:
                cache.record(path, row.sha256)
    cache.save()
    if pointers:
        raise DataError(
            f"{root} is a Git LFS checkout whose media were not pulled: {len(pointers)} of {len(manifest)} media "
            f"files are LFS pointer files (e.g. {pointers[0]}). Run `git lfs pull` in {root}, "
            "or set acquire.cremad.source: download"
        )
    if missing or bad:
        lines = [f"  missing: {p}" for p in missing[:5]] + [f"  corrupt: {b}" for b in bad[:5]]
        raise DataError(
            f"{root}: {len(missing)} media files missing and {len(bad)} failing their sha256/size check of "
            f"{len(manifest)}:\n" + "\n".join(lines) + "\nRestore them (e.g. `git lfs pull` or `git checkout`) "
            "or set acquire.cremad.source: download"
        )
    return {"verified": len(manifest)}


def index_clips(media_root: Path, manifest_path: str | None, exclude_defective: bool) -> tuple[pd.DataFrame, list[str]]:
    """The clips of a verified tree (both files listed in the manifest); returns (clips, excluded ids)."""
    paths = media_manifest(manifest_path)["path"]
    audio = {Path(p).stem for p in paths if p.startswith("AudioWAV/")}
    video = {Path(p).stem for p in paths if p.startswith("VideoFlash/")}
    unpaired = sorted(audio ^ video)
    if unpaired:
        raise DataError(f"CREMA-D manifest: {len(unpaired)} clips lack an audio or video entry, e.g. {unpaired[:3]}")
    excluded = sorted(set(DEFECTIVE_CLIPS) & audio) if exclude_defective else []
    return clips_table(media_root, sorted(audio - set(excluded))), excluded


def clips_table(media_root: Path, clip_ids: list[str]) -> pd.DataFrame:
    """One row per clip of a CREMA-D-layout tree, with its label, actor and literature split."""
    split = literature_split()
    rows = []
    for clip_id in clip_ids:
        parts = clip_id.split("_")
        if len(parts) != 4 or parts[2] not in CREMAD_EMOTIONS:
            raise DataError(f"{media_root}: {clip_id!r} is not a CREMA-D clip name (ActorID_Sentence_Emotion_Level)")
        rows.append({
            "clip_id": clip_id, "label_name": parts[2], "group": parts[0],
            "official_split": split.get(clip_id),
            "audio_path": str(media_root / "AudioWAV" / f"{clip_id}.wav"),
            "video_path": str(media_root / "VideoFlash" / f"{clip_id}.flv"),
        })
    return pd.DataFrame(rows)
