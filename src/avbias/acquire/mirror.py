"""A synthetic mirror of the real download sources, as files to serve over HTTP.

Folder layout (URL paths when the folder is served as the web root):
  cremad/media/{AudioWAV,VideoFlash}/...        like media.githubusercontent.com/.../CREMA-D/master/
  cremad/raw/{VideoDemographics,SentenceFilenames}.csv, cremad/raw/processedResults/summaryTable.csv
  cremad/media_manifest.csv                     path, sha256, size (the package's manifest, for these files)
  kinetics/400/{train,val,test}/k400_<split>_path.txt and part_<i>.tar.gz   like s3.amazonaws.com/kinetics/400/
  kinetics/400/annotations/{train,val,test}.csv
  kinetics/ks_split.json                        the Kinetics-Sounds split, restricted to these clips
Tarballs hold the clips flat, plus one clip that is not in Kinetics-Sounds (extraction must skip it).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from avbias.acquire import kinetics_sounds, synthetic
from avbias.acquire.download import sha256_file
from avbias.datasets import CREMAD_EMOTIONS
from avbias.io import atomic_path

CLIPS_PER_TARBALL = 8
VOTE_LETTERS = {"ANG": "A", "DIS": "D", "FEA": "F", "HAP": "H", "NEU": "N", "SAD": "S"}


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


def write_cremad_mirror(out: Path, params: dict[str, Any], workers: int) -> dict[str, Any]:
    media = out / "cremad" / "media"
    clips = synthetic.generate(media, params, "cremad", workers)
    files = sorted(p for p in media.rglob("*") if p.is_file())
    _write_csv(out / "cremad" / "media_manifest.csv", ["path", "sha256", "size"],
               [[p.relative_to(media).as_posix(), sha256_file(p), p.stat().st_size] for p in files])
    raw = out / "cremad" / "raw"
    _write_csv(raw / "SentenceFilenames.csv", ["Stimulus_Number", "Filename"],
               [[i + 1, c.clip_id] for i, c in enumerate(clips)])
    actors = sorted({c.clip_id.split("_")[0] for c in clips})
    _write_csv(raw / "VideoDemographics.csv", ["ActorID", "Age", "Sex", "Race", "Ethnicity"],
               [[int(a), 20 + i % 50, ("Male", "Female")[i % 2], "Unknown", "Unknown"] for i, a in enumerate(actors)])
    # The synthetic crowd recognises every clip in every modality.
    votes = [[str(i + 1), c.clip_id] + [VOTE_LETTERS[CREMAD_EMOTIONS[c.label]], "100"] * 3 for i, c in enumerate(clips)]
    _write_csv(raw / "processedResults" / "summaryTable.csv",
               ["", "FileName", "VoiceVote", "VoiceLevel", "FaceVote", "FaceLevel", "MultiModalVote",
                "MultiModalLevel"], votes)
    return {"base_url": "cremad/media", "metadata_url": "cremad/raw", "manifest": "cremad/media_manifest.csv",
            "clips": len(clips)}


def _pack(tar_path: Path, members: list[tuple[str, Path]]) -> None:
    """A deterministic .tar.gz (fixed mtimes and owners) holding the files under the given names."""
    with atomic_path(tar_path) as tmp, open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, path in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = path.stat().st_size, 0, 0o644
                with open(path, "rb") as f:
                    tar.addfile(info, f)


def write_kinetics_mirror(out: Path, params: dict[str, Any], workers: int) -> dict[str, Any]:
    root = out / "kinetics" / "400"
    with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as build_dir:
        build = Path(build_dir)
        clips = synthetic.generate(build, params, "kinetics", workers)
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(build / synthetic.SPLIT_FILE, out / "kinetics" / "ks_split.json")
        labels = json.loads((build / synthetic.SPLIT_FILE).read_text())["database"]
        by_key = {kinetics_sounds.video_key(Path(c.video_path).name): c.clip_id for c in clips}
        for k400_split in kinetics_sounds.K400_SPLITS:
            videos = sorted((build / k400_split).glob("*.mp4")) if (build / k400_split).is_dir() else []
            annotations, urls = [], []
            for part, start in enumerate(range(0, len(videos), CLIPS_PER_TARBALL)):
                chunk = videos[start : start + CLIPS_PER_TARBALL]
                decoy = f"notKSclip{part:02d}_000000_000010.mp4"       # a K400 clip outside Kinetics-Sounds
                _pack(root / k400_split / f"part_{part}.tar.gz", [(p.name, p) for p in chunk] + [(decoy, chunk[0])])
                urls.append(f"{kinetics_sounds.CVDF_URL}/{k400_split}/part_{part}.tar.gz")
                annotations.append(["abseiling", decoy[:11], 0, 10, k400_split])
            for video in videos:
                key = kinetics_sounds.video_key(video.name)
                assert key is not None
                annotations.append([labels[by_key[key]]["label"], key[0], key[1], key[1] + 10, k400_split])
            _write_csv(root / "annotations" / f"{k400_split}.csv",
                       ["label", "youtube_id", "time_start", "time_end", "split"], annotations)
            with atomic_path(root / k400_split / f"k400_{k400_split}_path.txt") as tmp:
                tmp.write_text("".join(f"{u}\n" for u in urls))
    return {"base_url": "kinetics/400", "split_file": "kinetics/ks_split.json", "clips": len(clips)}


def write_mirror(out: str | Path, params: dict[str, Any], workers: int = 1) -> dict[str, dict[str, Any]]:
    """Write both datasets' mirrors; return, per dataset, URL paths and files relative to out."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return {"cremad": write_cremad_mirror(out, params, workers),
            "kinetics_sounds": write_kinetics_mirror(out, params, workers)}


def acquire_overrides(layout: dict[str, dict[str, Any]], out: Path, url: str) -> dict[str, Any]:
    """The `acquire` params that point the real download code at a mirror served from `url`."""
    url = url.rstrip("/")
    c, k = layout["cremad"], layout["kinetics_sounds"]
    return {
        "cremad": {"source": "download", "base_url": f"{url}/{c['base_url']}",
                   "metadata_url": f"{url}/{c['metadata_url']}", "manifest": str(out / c["manifest"])},
        "kinetics_sounds": {"source": "cvdf", "base_url": f"{url}/{k['base_url']}",
                            "split_file": str(out / k["split_file"])},
    }
