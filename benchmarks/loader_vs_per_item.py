"""Benchmark: avbias' in-memory batch loader against an OGM-GE-style per-item loader, same clips, same run.

Per-item baseline (written here, after OGM-GE's CREMA-D dataset): every __getitem__ reads the wav, resamples
it to 22,050 Hz, tiles it to 3 s, computes the log |STFT| (n_fft 512, hop 353), reads one JPEG frame
(pre-extracted, as OGM-GE does, untimed), applies RandomResizedCrop 224 + flip + ImageNet normalisation;
a torch DataLoader batches it. avbias: the training loader (`avbias.train.loader.BatchStream`, split held in
memory, on the GPU when there is one) and its batched augmentation (`visual_inputs`: frame window,
RandomResizedCrop 224 + flip as one grid_sample, normalisation), spectrograms cast to float32.
Both: batch 64, the same worker count for the baseline's DataLoader, samples/s over 2 epochs after a warm-up.
With --random-files (no ffmpeg needed, e.g. on a GPU machine): random 16 kHz wavs (1.3-5 s) and random
480x360 JPEGs for the baseline, random shards of the recipe's shapes for avbias; same counts, same work.

    python benchmarks/loader_vs_per_item.py --clips 72 --workers 2
    python benchmarks/loader_vs_per_item.py --clips 288 --repeat 1 --workers 16 --random-files   # GPU machine
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import wave
from pathlib import Path

import cv2
import numpy as np
import torch
import torchaudio
from _common import cremad_table, random_features

from avbias.train.loader import IMAGENET_MEAN, IMAGENET_STD, Augment, BatchStream, visual_inputs

SIZE = 224


def random_resized_crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """torchvision's RandomResizedCrop(224), scale (0.08, 1), ratio (3/4, 4/3), with a fallback centre crop."""
    h, w = image.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(0.08, 1.0)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            return cv2.resize(image[y : y + ch, x : x + cw], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return cv2.resize(image[y : y + side, x : x + side], (SIZE, SIZE))


class PerItemDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[tuple[str, list[str], int]]) -> None:
        self.items = items
        self.window = torch.hann_window(512)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        wav_path, jpgs, label = self.items[i]
        with wave.open(wav_path) as wav:
            rate = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float32) / 32768
        audio = torchaudio.functional.resample(torch.from_numpy(samples), rate, 22050)
        audio = audio.repeat(-(-66150 // audio.numel()))[:66150]
        spec = torch.stft(audio, 512, 353, window=self.window, return_complex=True).abs()
        spec = torch.log(spec + 1e-7)
        rng = np.random.default_rng()
        image = cv2.cvtColor(cv2.imread(jpgs[rng.integers(len(jpgs))]), cv2.COLOR_BGR2RGB)
        image = random_resized_crop(image, rng)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        frame = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255)
        frame = (frame - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return spec.unsqueeze(0), frame.unsqueeze(0), label


def rate(run_epoch, n: int, epochs: int = 2) -> float:
    run_epoch()                                                   # warm-up (worker start, caches)
    start = time.perf_counter()
    for _ in range(epochs):
        run_epoch()
    return n * epochs / (time.perf_counter() - start)


def random_items(tmp: Path, n: int) -> list[tuple[str, list[str], int]]:
    """n clips of random content: a wav and 3 JPEG frames each, and shards whose train split holds n clips."""
    rng = np.random.default_rng(0)
    random_features(tmp / "features", int(np.ceil(n / 0.8)), (257, 188), SIZE, shard_size=128)
    items = []
    for i in range(n):
        wav_path = tmp / f"{i:05d}.wav"
        with wave.open(str(wav_path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(16000)
            wav.writeframes(rng.normal(0, 3000, int(16000 * rng.uniform(1.3, 5.0))).astype("<i2").tobytes())
        jpgs = [str(tmp / f"{i:05d}_{k}.jpg") for k in range(3)]
        for jpg in jpgs:
            cv2.imwrite(jpg, rng.integers(0, 255, (360, 480, 3), dtype=np.uint8))
        items.append((str(wav_path), jpgs, i % 6))
    return items


def extracted_items(tmp: Path, clips: int, repeat: int, workers: int) -> list[tuple[str, list[str], int]]:
    """Synthetic CREMA-D-format clips extracted into shards; OGM-GE-style JPEG frames for the baseline."""
    from avbias.config import REPO_ROOT, deep_merge, load_params
    from avbias.datasets import CREMAD_EMOTIONS
    from avbias.extract.features import extract_features

    params = load_params(REPO_ROOT / "params.yaml")
    params["extract"] = deep_merge(params["extract"], {"frame_size": SIZE, "shard_size": 128})
    table = cremad_table(tmp / "media", params["synth"], clips, workers, repeat)
    extract_features(table, list(CREMAD_EMOTIONS), tmp / "features", params, "synth_cremad", workers)
    # OGM-GE's preprocessing: frames extracted once to JPEG (1 fps; here the same 3 evenly spaced frames).
    items = []
    for row in table.itertuples(index=False):
        folder = tmp / "jpg" / row.clip_id.split("#")[0]
        if not folder.exists():
            folder.mkdir(parents=True)
            capture = cv2.VideoCapture(row.video_path)
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            for k in range(3):
                capture.set(cv2.CAP_PROP_POS_FRAMES, int((k + 0.5) * count / 3))
                ok, frame = capture.read()
                cv2.imwrite(str(folder / f"frame_{k:05d}.jpg"), frame)
            capture.release()
        items.append((row.audio_path, sorted(str(p) for p in folder.glob("*.jpg")), int(row.label)))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=72)
    parser.add_argument("--repeat", type=int, default=4, help="list each clip this often (both loaders)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--random-files", action="store_true", help="random wav/JPEG files and shards (no ffmpeg)")
    args = parser.parse_args()
    torch.set_num_threads(args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        items = (random_items(Path(tmp), args.clips * args.repeat) if args.random_files
                 else extracted_items(Path(tmp), args.clips, args.repeat, args.workers))
        loader = torch.utils.data.DataLoader(PerItemDataset(items), batch_size=args.batch, shuffle=True,
                                             num_workers=args.workers, persistent_workers=args.workers > 0)

        def per_item_epoch() -> None:
            for _ in loader:
                pass

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        stream = BatchStream(Path(tmp) / "features", "train", device, in_memory="true")
        generator, augment = torch.Generator().manual_seed(0), Augment()

        def ours_epoch() -> None:
            for _, spec, frames, _ in stream.batches(torch.randperm(len(stream), generator=generator), args.batch):
                spec.float(), visual_inputs(frames, 1, generator, augment)
            if device.type == "cuda":
                torch.cuda.synchronize()

        baseline = rate(per_item_epoch, len(items))
        ours = rate(ours_epoch, len(stream))
        print(f"{device.type}, {len(items)} / {len(stream)} samples, batch {args.batch}, "
              f"{args.workers} workers/threads: "
              f"per-item loader {baseline:.0f} samples/s; avbias {ours:.0f} samples/s; ratio {ours / baseline:.1f}x")


if __name__ == "__main__":
    main()
