"""Where a dataset's clips come from, per family (CREMA-D layout, Kinetics layout) and source (synthetic,
download, local checkout): the media found or fetched, and the rows of the clip index (avbias.acquire)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from avbias.acquire import cremad, kinetics_sounds, synthetic
from avbias.acquire.download import DownloadPolicy
from avbias.datasets import DatasetSpec
from avbias.errors import DataError

CLIP_COLUMNS = ["clip_id", "label_name", "group", "official_split", "audio_path", "video_path"]


def _local_root(params: dict[str, Any], dataset: str) -> Path:
    root = params["local_root"]
    if not root or not Path(root).is_dir():
        raise DataError(f"acquire.{dataset}.local_root={root!r} is not a folder; point it at your copy of the dataset")
    return Path(root)


def acquire_cremad(spec: DatasetSpec, tmp: Path, store: Path, params: dict[str, Any],
                    policy: DownloadPolicy) -> tuple[pd.DataFrame, dict[str, Any]]:
    if spec.synthetic:
        clips = synthetic.generate(tmp, params["synth"], "cremad", policy.connections)
        return cremad.clips_table(tmp, [c.clip_id for c in clips]), {"source": "synthetic"}
    cfg = params["acquire"]["cremad"]
    if cfg["source"] == "download":
        root, info = store, cremad.download(store, cfg, policy)
    else:
        root = _local_root(cfg, "cremad")
        info = cremad.verify_local(root, store, cfg)
    table, excluded = cremad.index_clips(root, cfg["manifest"], cfg["exclude_defective"])
    for name in cremad.METADATA_FILES:          # small tables the analysis reads (human votes per modality)
        if (root / name).is_file():
            (tmp / "metadata").mkdir(exist_ok=True)
            shutil.copy(root / name, tmp / "metadata" / Path(name).name)
    known_defective = sorted(set(cremad.DEFECTIVE_CLIPS) & set(table["clip_id"]))
    return table, {"source": cfg["source"], "media_root": str(root), **info,
                   "excluded_defective": excluded, "kept_defective": known_defective}


def acquire_kinetics(spec: DatasetSpec, tmp: Path, store: Path, params: dict[str, Any],
                      policy: DownloadPolicy) -> tuple[pd.DataFrame, dict[str, Any]]:
    cfg = params["acquire"]["kinetics_sounds"]
    info: dict[str, Any] = {}
    if spec.synthetic:
        synthetic.generate(tmp, params["synth"], "kinetics", policy.connections)
        split_file, tree, source = str(tmp / synthetic.SPLIT_FILE), tmp, "synthetic"
    else:
        split_file, source = cfg["split_file"], cfg["source"]
        tree = _local_root(cfg, "kinetics_sounds") if source == "local" else store / "videos"
    classes, ids = kinetics_sounds.load_split(split_file)
    if source in ("cvdf", "yt_dlp"):
        have = kinetics_sounds.index_tree(tree) if tree.is_dir() else {}
        missing = ids[[k not in have for k in zip(ids["ytid"], ids["start"], strict=True)]]
        if len(missing) and source == "cvdf":
            info = kinetics_sounds.fetch_cvdf(store, cfg, policy,
                                              set(zip(missing["ytid"], missing["start"], strict=True)))
        elif len(missing):
            info = kinetics_sounds.fetch_yt_dlp(store, missing, policy)
    matched = kinetics_sounds.match_clips(ids, kinetics_sounds.index_tree(tree))
    coverage = kinetics_sounds.check_coverage(matched, cfg["min_coverage"], store / "missing_ids.txt", str(tree))
    kinetics_sounds.coverage_table(matched).to_csv(tmp / "coverage.csv", index=False)
    shutil.copy(store / "missing_ids.txt", tmp / "missing_ids.txt")
    found = matched[matched["path"].notna()]
    table = pd.DataFrame({"clip_id": found["clip_id"], "label_name": found["label_name"], "group": found["ytid"],
                          "official_split": found["official_split"], "audio_path": found["path"],
                          "video_path": found["path"]})
    return table, {"source": source, "media_root": str(tree), "classes": classes, "coverage": coverage, **info}


def relative_path(path: str, folder: Path) -> str:
    """Media written into the index folder itself (synthetic data) or inside the working tree are stored
    relative to the index folder, so the index stays valid when its temporary folder is renamed into place,
    wherever paths.data points; media elsewhere (a local checkout) keep their absolute path."""
    absolute, folder = Path(path).resolve(), folder.resolve()
    if absolute.is_relative_to(folder) or absolute.is_relative_to(Path.cwd().resolve()):
        return os.path.relpath(absolute, folder)
    return str(absolute)


def data_report(dataset: str, info: dict[str, Any]) -> str:
    lines = [f"# Data report: {dataset}", "", f"- source: {info['source']}", f"- clips indexed: {info['clips']}",
             f"- classes: {len(info['classes'])}"]
    if "media_root" in info:
        lines.append(f"- media: {info['media_root']}")
    if "excluded_defective" in info:
        lines.append(f"- known defective clips excluded (acquire.cremad.exclude_defective): "
                     f"{', '.join(info['excluded_defective']) or 'none'}")
        lines.append(f"- known defective clips kept: {', '.join(info['kept_defective']) or 'none'}")
    if "coverage" in info:
        cov = info["coverage"]
        lines.append(f"- coverage: {cov['found']} of {cov['total']} split ids ({cov['coverage']:.1%}); per split: "
                     + ", ".join(f"{k} {v:.1%}" for k, v in cov["per_split"].items())
                     + "; per class: coverage.csv; missing ids: missing_ids.txt")
    return "\n".join(lines) + "\n"
