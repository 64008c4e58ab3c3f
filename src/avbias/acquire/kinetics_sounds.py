"""Kinetics-Sounds: the 31-class subset of Kinetics-400, found in a local K400 tree, extracted from the
CVDF tarballs, or fetched clip by clip with yt-dlp; then matched against the literature split.

Clip ids: training ids use the CVDF file naming `<youtube_id>_<start:06d>_<end:06d>`; validation and testing
ids are `<youtube_id>_<start>`. A clip is identified by (youtube_id, start) in both cases.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from avbias.acquire.archive import extract_selected
from avbias.acquire.download import (
    CircuitBreaker,
    DownloadPolicy,
    RemoteFile,
    VerifiedCache,
    download_all,
)
from avbias.acquire.download_errors import SystemicError, ways_forward
from avbias.errors import DataError, SourceUnreachableError
from avbias.ffmpeg import ffmpeg_exe
from avbias.io import atomic_path, write_json

log = logging.getLogger(__name__)

CVDF_URL = "https://s3.amazonaws.com/kinetics/400"
K400_SPLITS = ("train", "val", "test")
OFFICIAL_SPLITS = {"training": "train", "validation": "val", "testing": "test"}
VIDEO_NAME = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})_(?P<start>\d{6})_(?P<end>\d{6})\.(?:mp4|mkv|webm)$")
CLIP_ID = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})_(?P<start>\d+)(?:_(?P<end>\d+))?$")
CLIP_SECONDS = 10
MAX_CLIP_BYTES = 1 << 31            # a 10 s clip is a few MB; anything near this is not a clip

Key = tuple[str, int]


def load_split(path: str | None = None) -> tuple[list[str], pd.DataFrame]:
    """(class names, one row per clip: clip_id, ytid, start, label_name, official_split)."""
    if path is None:
        packaged = resources.files("avbias.acquire").joinpath("reference", "ks_bml_split.json.gz")
        raw = gzip.decompress(packaged.read_bytes())
        source = "packaged Kinetics-Sounds split"
    else:
        source = f"acquire.kinetics_sounds.split_file={path}"
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            raise DataError(f"{source}: file not found") from None
    try:
        data = json.loads(raw)
        classes, database = list(data["labels"]), data["database"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{source}: expected {{'labels': [...], 'database': {{id: {{subset, label}}}}}} "
                        f"({exc})") from None
    rows = []
    for clip_id, entry in database.items():
        match = CLIP_ID.match(clip_id)
        if match is None or entry.get("label") not in classes or entry.get("subset") not in OFFICIAL_SPLITS:
            raise DataError(f"{source}: bad entry {clip_id!r}: {entry}")
        rows.append({"clip_id": clip_id, "ytid": match["ytid"], "start": int(match["start"]),
                     "label_name": entry["label"], "official_split": OFFICIAL_SPLITS[entry["subset"]]})
    return classes, pd.DataFrame(rows)


def video_file_name(clip_id: str) -> str:
    """The CVDF file name of a split id: training ids are already `<ytid>_<start:06d>_<end:06d>`."""
    match = CLIP_ID.match(clip_id)
    if match is None:
        raise DataError(f"not a Kinetics clip id: {clip_id!r}")
    start = int(match["start"])
    end = int(match["end"]) if match["end"] else start + CLIP_SECONDS
    return f"{match['ytid']}_{start:06d}_{end:06d}.mp4"


def video_key(name: str) -> Key | None:
    match = VIDEO_NAME.match(name)
    return (match["ytid"], int(match["start"])) if match else None


def index_tree(root: Path) -> dict[Key, Path]:
    """Every K400-named video under root, at any depth (CVDF `<split>/` or `<split>/<class>/` layouts)."""
    found: dict[Key, Path] = {}
    for path in sorted(root.rglob("*")):
        key = video_key(path.name)
        if key is not None and key not in found and path.is_file() and path.stat().st_size > 0:
            found[key] = path
    return found


def _keys(clips: pd.DataFrame) -> set[Key]:
    return set(zip(clips["ytid"], clips["start"], strict=True))


def advice(source: str) -> str:
    other = ("or fetch clip by clip from YouTube: acquire.kinetics_sounds.source: yt_dlp (needs `pip install yt-dlp`)"
             if source == "cvdf" else
             "or download the CVDF Kinetics-400 tarballs instead: acquire.kinetics_sounds.source: cvdf")
    return ways_forward("kinetics_sounds", "a Kinetics-400 tree (<split>/<ytid>_<start>_<end>.mp4)",
                        ["base_url"] if source == "cvdf" else [], [other])


def fetch_cvdf(store: Path, params: dict[str, Any], policy: DownloadPolicy, wanted: set[Key]) -> dict[str, Any]:
    """Download the K400 tarballs of the splits that hold wanted clips; extract only those clips.

    The annotation and list files are the preflight: a systemic error there (DNS, refused, TLS, 401/403/407)
    stops at once. One circuit breaker spans all tarball batches."""
    base = params["base_url"].rstrip("/")
    state_dir = store / ".avbias"
    cache = VerifiedCache(state_dir / "verified.json")
    failed = state_dir / "failed.txt"
    hint = advice("cvdf")
    lists = [RemoteFile(f"{base}/annotations/{s}.csv", store / "lists" / f"annotations_{s}.csv") for s in K400_SPLITS]
    lists += [RemoteFile(f"{base}/{s}/k400_{s}_path.txt", store / "lists" / f"k400_{s}_path.txt") for s in K400_SPLITS]
    download_all(lists, cache, policy, "Kinetics-Sounds (K400 lists)", failed, preflight=True, advice=hint)

    splits = []
    for split in K400_SPLITS:
        annotations = pd.read_csv(store / "lists" / f"annotations_{split}.csv", dtype={"youtube_id": str})
        if wanted & set(zip(annotations["youtube_id"], annotations["time_start"].astype(int), strict=True)):
            splits.append(split)
    done_path = state_dir / "parts_done.json"
    done: dict[str, int] = json.loads(done_path.read_text()) if done_path.exists() else {}
    pending = []
    for split in splits:
        names = [line.strip().rsplit("/", 1)[-1]
                 for line in (store / "lists" / f"k400_{split}_path.txt").read_text().splitlines()]
        pending += [(split, name) for name in names if name and f"{split}/{name}" not in done]
    log.info("K400 splits holding Kinetics-Sounds clips: %s; %d tarballs to process", splits, len(pending))

    def select(member: str) -> str | None:
        name = member.rsplit("/", 1)[-1]
        return name if video_key(name) in wanted else None

    extracted = 0
    batch = max(1, policy.connections)
    breaker = CircuitBreaker(policy.breaker_files, policy.breaker_s)
    tarballs = [RemoteFile(f"{base}/{s}/{n}", store / "tarballs" / s / n) for s, n in pending]
    for i in range(0, len(pending), batch):
        parts, files = pending[i : i + batch], tarballs[i : i + batch]
        download_all(files, cache, policy, f"Kinetics-Sounds: K400 tarballs {i + 1}-{i + len(parts)} of {len(pending)}",
                     failed, advice=hint, breaker=breaker, queued_after=tarballs[i + batch :])
        for (split, name), file in zip(parts, files, strict=True):
            clips = extract_selected(file.dest, store / "videos" / split, select, MAX_CLIP_BYTES)
            extracted += len(clips)
            done[f"{split}/{name}"] = len(clips)
            write_json(done_path, done)             # a part is done once its clips are out
            if params["delete_tarballs"]:
                file.dest.unlink()
            log.info("%s/%s: %d Kinetics-Sounds clips extracted", split, name, len(clips))
    return {"k400_splits": splits, "tarballs_processed": len(pending), "clips_extracted": extracted}


# yt-dlp's error lines: a clip that is gone is that clip's problem; a network or a block is everyone's.
YT_DLP_PER_CLIP = re.compile(
    r"video unavailable|private video|has been removed|is not available|no longer available|account .* terminated"
    r"|copyright|confirm your age|age-restricted|members-only|join this channel|premieres in|live event"
    r"|not made this video available in your country|blocked it|http error 404|http error 410"
    r"|requested format is not available|unsupported url|incomplete youtube id", re.I)
YT_DLP_SYSTEMIC = [
    ("dns", re.compile(r"name or service not known|temporary failure in name resolution|nodename nor servname"
                       r"|getaddrinfo failed|no address associated with hostname|failed to resolve", re.I)),
    ("refused", re.compile(r"connection refused", re.I)),
    ("unreachable", re.compile(r"network is unreachable|no route to host", re.I)),
    ("tls", re.compile(r"certificate verify failed|certificate_verify_failed|ssl: wrong_version_number"
                       r"|self[- ]signed certificate", re.I)),
    ("proxy", re.compile(r"http error 407|proxy authentication|tunnel connection failed|proxyerror"
                         r"|cannot connect to proxy", re.I)),
    ("rate limit", re.compile(r"http error 429|too many requests|not a bot", re.I)),
    ("permission", re.compile(r"http error 40[13]: forbidden.*webpage"
                              r"|unable to download (api page|webpage).*http error 40[13]", re.I)),
]


def yt_dlp_failure(stderr: str) -> str | None:
    """The systemic kind of a failed yt-dlp run (dns, refused, unreachable, tls, proxy, rate limit, permission),
    or None when the failure is the clip's own (unavailable, private, removed, a fragment's error)."""
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR:")] or stderr.splitlines()[-1:]
    text = "\n".join(errors)
    if YT_DLP_PER_CLIP.search(text):
        return None
    for kind, pattern in YT_DLP_SYSTEMIC:
        if pattern.search(text):
            return kind
    return None


def fetch_yt_dlp(store: Path, missing: pd.DataFrame, policy: DownloadPolicy) -> dict[str, Any]:
    """Fetch each missing clip's 10 s section from YouTube with yt-dlp (optional, not installed by default).

    A clip that is gone fails alone; a network failure (DNS, refused, TLS, proxy, rate limit) on the first
    clip, or on breaker_files clips in a row, stops the whole run. Fetched clips stay; a re-run resumes."""
    exe = shutil.which("yt-dlp")
    if exe is None:
        raise DataError("acquire.kinetics_sounds.source=yt_dlp needs the yt-dlp command: `pip install yt-dlp`")
    out_dir = store / "videos" / "yt_dlp"
    out_dir.mkdir(parents=True, exist_ok=True)
    ffmpeg = ffmpeg_exe()

    def fetch_one(row: Any) -> SystemicError | bool:
        dest = out_dir / f"{row.ytid}_{row.start:06d}_{row.start + CLIP_SECONDS:06d}.mp4"
        url = f"https://www.youtube.com/watch?v={row.ytid}"
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".yt-") as tmp:
            cmd = [exe, "--quiet", "--no-warnings", "--no-playlist", "--socket-timeout", str(policy.timeout_s),
                   "--retries", str(policy.retries), "-f", "bv*[height<=480]+ba/b[height<=480]/b",
                   "--merge-output-format", "mp4", "--download-sections", f"*{row.start}-{row.start + CLIP_SECONDS}",
                   "--ffmpeg-location", ffmpeg, "-o", f"{tmp}/clip.%(ext)s", url]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            produced = sorted(Path(tmp).glob("clip.*"))
            if proc.returncode != 0 or not produced:
                last = (proc.stderr.strip().splitlines() or ["no file"])[-1]
                log.warning("yt-dlp %s: %s", row.clip_id, last)
                kind = yt_dlp_failure(proc.stderr)
                return SystemicError(kind, "www.youtube.com", last) if kind else False
            with atomic_path(dest) as part:
                shutil.move(produced[0], part)
        return True

    rows = list(missing.itertuples(index=False))
    fetched: set[str] = set()
    breaker = CircuitBreaker(1, 0.0)                # preflight: the first clips, one at a time

    def run(row: Any) -> None:
        if breaker.tripped:
            return
        sent = time.monotonic()
        outcome = fetch_one(row)
        if isinstance(outcome, SystemicError):
            breaker.failed(row.clip_id, outcome)
            return
        breaker.ok(sent)
        if outcome:
            fetched.add(row.clip_id)

    preflight = 0
    while preflight < len(rows) and not fetched and preflight < 3 and not breaker.tripped:
        run(rows[preflight])                        # until one clip arrives (three gone ones: YouTube answers)
        preflight += 1
    if not breaker.tripped:
        breaker = CircuitBreaker(policy.breaker_files, policy.breaker_s)
        with ThreadPoolExecutor(max_workers=max(1, policy.connections)) as pool:
            list(pool.map(run, rows[preflight:]))
    if breaker.tripped:
        error = breaker.error
        assert error is not None
        left = sorted(r.clip_id for r in rows if r.clip_id not in fetched)
        failed_list = store / ".avbias" / "failed.txt"
        failed_list.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(failed_list) as tmp:
            tmp.write_text("".join(f"{clip_id}\n" for clip_id in left))
        head = ("cannot fetch from YouTube; stopped at the first clip" if breaker.files == 1 else
                f"stopped: {breaker.streak_files} clips in a row failed with the same error")
        raise SourceUnreachableError(
            f"Kinetics-Sounds (yt-dlp): {head}.\nCause: {error.explain()}.\n{advice('yt_dlp')}\n"
            f"{len(fetched)} clips fetched in this run are kept; the {len(left)} clips left are listed in "
            f"{failed_list}. A re-run resumes from there: fix the cause, then run the same command."
        )
    return {"clips_fetched": len(fetched), "clips_failed": len(rows) - len(fetched)}


def match_clips(ids: pd.DataFrame, found: dict[Key, Path]) -> pd.DataFrame:
    """The split's clips with their video path (None when not found)."""
    paths = [found.get(key) for key in zip(ids["ytid"], ids["start"], strict=True)]
    return ids.assign(path=[str(p) if p else None for p in paths])


def coverage_table(matched: pd.DataFrame) -> pd.DataFrame:
    table = (matched.assign(found=matched["path"].notna())
             .groupby(["official_split", "label_name"])["found"].agg(total="size", found="sum").reset_index())
    table["coverage"] = table["found"] / table["total"]
    return table


def check_coverage(matched: pd.DataFrame, min_coverage: float, missing_file: Path, where: str) -> dict[str, Any]:
    """Write the missing ids; stop when the found fraction (overall, or of any split) is below min_coverage."""
    missing = matched.loc[matched["path"].isna(), "clip_id"]
    with atomic_path(missing_file) as tmp:
        tmp.write_text("".join(f"{i}\n" for i in missing))
    per_split = matched.assign(found=matched["path"].notna()).groupby("official_split")["found"].mean()
    overall = float(matched["path"].notna().mean())
    summary = {"found": int(matched["path"].notna().sum()), "total": len(matched), "coverage": overall,
               "per_split": {k: float(v) for k, v in per_split.items()}, "missing_ids": str(missing_file)}
    worst = min([overall, *per_split.tolist()])
    if worst < min_coverage:
        raise DataError(
            f"Kinetics-Sounds: found {summary['found']} of {len(matched)} clips ({overall:.1%}; per split "
            + ", ".join(f"{k} {v:.1%}" for k, v in summary["per_split"].items())
            + f") under {where}, below acquire.kinetics_sounds.min_coverage={min_coverage}. "
            f"The {len(missing)} missing ids are in {missing_file}. Add the missing videos (or another source), "
            "or lower min_coverage to proceed with what exists."
        )
    return summary
