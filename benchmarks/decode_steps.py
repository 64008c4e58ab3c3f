"""Benchmark: where extraction spends its time per clip, and frame seeking against sequential grabbing.

Times, in one process over the same clips, ffmpeg audio decoding, the recipe's audio features and sampling
3 frames (sequential grab, as extraction does), then the same 3 frames by seeking (CAP_PROP_POS_FRAMES),
and checks both give identical frames. CREMA-D format (wav + flv) and Kinetics format (10 s mp4).

    python benchmarks/decode_steps.py --clips 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from avbias.acquire import synthetic
from avbias.config import REPO_ROOT, load_params
from avbias.extract.decode import decode_audio, read_frames
from avbias.extract.features import recipe_for
from avbias.extract.spectrogram import audio_features


def seek_frames(path: Path, num_frames: int, size: int) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    for i in range(num_frames):
        capture.set(cv2.CAP_PROP_POS_FRAMES, min(int((i + 0.5) * count / num_frames), count - 1))
        frame = capture.read()[1]
        frames.append(cv2.cvtColor(cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames)


def per_clip(func, items: list) -> float:
    start = time.perf_counter()
    for item in items:
        func(item)
    return (time.perf_counter() - start) / len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    args = parser.parse_args()
    params = load_params(REPO_ROOT / "params.yaml")
    synth = {**params["synth"], "num_actors": 1,
             "ks": {"num_classes": 2, "clips_per_class": {"train": max(1, args.clips // 2), "val": 1, "test": 1},
                    "duration_s": 10.0}}
    with tempfile.TemporaryDirectory() as tmp:
        for layout, dataset in (("cremad", "synth_cremad"), ("kinetics", "synth_ks")):
            root = Path(tmp) / layout
            synthetic.generate(root, synth, layout, workers=2)
            if layout == "cremad":
                audio, video = (sorted(root.glob("AudioWAV/*.wav"))[: args.clips],
                                sorted(root.glob("VideoFlash/*.flv"))[: args.clips])
            else:
                audio = video = sorted(root.rglob("*.mp4"))[: args.clips]
            recipe = recipe_for(dataset, params["extract"])
            size, k = recipe["frame_size"], recipe["num_frames"]
            read_frames(video[0], k, size)                                 # warm-up
            samples = decode_audio(audio[0], recipe["sample_rate"])
            decode = per_clip(lambda p: decode_audio(p, recipe["sample_rate"]), audio)
            features = per_clip(lambda _: audio_features(samples, recipe), audio)
            grab = per_clip(lambda p: read_frames(p, k, size), video)
            seek = per_clip(lambda p: seek_frames(p, k, size), video)
            same = all(np.array_equal(read_frames(p, k, size), seek_frames(p, k, size)) for p in video)
            print(f"{dataset} ({len(video)} clips, {size} px): audio decode {decode:.3f} s, {recipe['audio']} "
                  f"{features:.3f} s, {k} frames by grabbing {grab:.3f} s, by seeking {seek:.3f} s "
                  f"(identical frames: {same})")


if __name__ == "__main__":
    main()
