"""Benchmark: avbias extraction against the decode floor, on the same clips, in the same run.

Floor: ffmpeg alone decoding each clip's audio and video streams to null (`-f null -`, one thread per
process, as many processes as extraction workers). Extraction: `extract_features` with that many workers
(decode + features + frame sampling + shard writing). Ratio = extraction / floor (lower is better;
the target is 1.5). `--repeat` lists each generated clip several times (under distinct ids) for both sides,
so that a long run can be measured without generating thousands of clips; the fixed cost of starting the
worker processes (each imports torch and OpenCV) is measured separately on a single clip.

    python benchmarks/extract_vs_decode_floor.py --clips 48 --repeat 8 --workers 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from _common import cremad_table

from avbias.acquire import kinetics_sounds, synthetic
from avbias.config import REPO_ROOT, deep_merge, load_params
from avbias.datasets import CREMAD_EMOTIONS
from avbias.extract.features import extract_features
from avbias.ffmpeg import ffmpeg_exe


def decode_to_null(path: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-threads", "1", "-i", path, "-f", "null", "-"],
                   check=True)


def floor_seconds(paths: list[str], workers: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(decode_to_null, paths))
    return time.perf_counter() - start


def cremad_clips(root: Path, synth: dict, n: int) -> tuple[pd.DataFrame, list[str], list[str]]:
    table = cremad_table(root, synth, n, os.cpu_count() or 1)
    return table, list(table["audio_path"]) + list(table["video_path"]), list(CREMAD_EMOTIONS)


def kinetics_clips(root: Path, synth: dict, n: int) -> tuple[pd.DataFrame, list[str], list[str]]:
    per_class = max(1, n // 6)
    ks = {"num_classes": 2, "clips_per_class": {"train": per_class, "val": 1, "test": 1}, "duration_s": 10.0}
    synthetic.generate(root, {**synth, "ks": ks}, "kinetics", workers=os.cpu_count() or 1)
    classes, ids = kinetics_sounds.load_split(str(root / synthetic.SPLIT_FILE))
    matched = kinetics_sounds.match_clips(ids, kinetics_sounds.index_tree(root))
    table = matched.rename(columns={"path": "audio_path"}).assign(video_path=lambda t: t["audio_path"])
    return table, list(table["audio_path"]), classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48, help="clips per dataset layout")
    parser.add_argument("--repeat", type=int, default=1, help="list each clip this many times")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--frame-size", type=int, default=224)
    args = parser.parse_args()
    params = load_params(REPO_ROOT / "params.yaml")
    params["extract"] = deep_merge(params["extract"], {"frame_size": args.frame_size, "shard_size": 64})
    print(f"workers={args.workers} frame_size={args.frame_size} cpu_count={os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, dataset, build in (("CREMA-D (wav + flv)", "synth_cremad", cremad_clips),
                                     ("Kinetics (10 s mp4)", "synth_ks", kinetics_clips)):
            root = Path(tmp) / dataset
            table, media, classes = build(root, params["synth"], args.clips)
            table = table.assign(label=[classes.index(n) for n in table["label_name"]], split="train")
            table = pd.concat([table.assign(clip_id=table["clip_id"] + f"#{r}") for r in range(args.repeat)])
            media = media * args.repeat
            floor_seconds(media[:4], args.workers)                    # warm the page cache and ffmpeg
            floor = floor_seconds(media, args.workers)
            start = time.perf_counter()
            extract_features(table, classes, Path(tmp) / f"features-{dataset}", params, dataset, workers=args.workers)
            ours = time.perf_counter() - start
            start = time.perf_counter()
            extract_features(table.head(1), classes, Path(tmp) / f"one-{dataset}", params, dataset,
                             workers=args.workers)
            fixed = time.perf_counter() - start
            print(f"{name}: {len(table)} clips; decode floor {floor:.2f} s; extraction {ours:.2f} s "
                  f"(of which ≈ {fixed:.2f} s start-up: one clip alone); ratio {ours / floor:.2f}; "
                  f"without start-up {(ours - fixed) / floor:.2f}")


if __name__ == "__main__":
    main()
