"""Batches from the feature shards: no decoding, no per-item file opens, augmentation on whole batches.

A split is held as tensors (on the GPU when there is one and it fits, else in RAM), or read from the
memory-mapped shards batch by batch, optionally in DataLoader workers. Every random choice is drawn in the
main process from one generator, so where the data lives and how many workers read it never change a result.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from avbias.shards import SplitArrays, load_split, read_manifest, shard_paths

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FRAME_AUGMENTS = ("random_resized_crop", "flip", "none")


@dataclass
class SplitTensors:
    """A split held as tensors; frames stay uint8 until a batch is formed."""

    labels: torch.Tensor
    spec: torch.Tensor      # (N, F, T) float16/float32
    frames: torch.Tensor    # (N, K, S, S, 3) uint8
    clip_ids: list[str]

    @classmethod
    def from_arrays(cls, arrays: SplitArrays, device: torch.device) -> SplitTensors:
        return cls(
            labels=torch.from_numpy(arrays.labels).to(device),
            spec=torch.from_numpy(np.ascontiguousarray(arrays.spec)).to(device),
            frames=torch.from_numpy(np.ascontiguousarray(arrays.frames)).to(device),
            clip_ids=arrays.clip_ids,
        )

    def __len__(self) -> int:
        return len(self.labels)


class MappedSplit(torch.utils.data.Dataset):
    """A split read straight from the memory-mapped shards; item i is a whole batch (an index array).

    Each DataLoader worker opens the shards once (lazily, after the fork) and gathers rows with numpy.
    """

    def __init__(self, features_dir: str | Path, split: str) -> None:
        manifest = read_manifest(features_dir)
        rows = manifest[manifest["split"] == split].sort_values(["shard", "row"])
        self.features_dir = Path(features_dir)
        self.shards = rows["shard"].to_numpy()
        self.rows = rows["row"].to_numpy()
        self.labels = torch.from_numpy(rows["label"].to_numpy(dtype=np.int64, copy=True))
        self.clip_ids = rows["clip_id"].tolist()
        self._maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def _shard(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        if shard not in self._maps:
            spec_path, frames_path = shard_paths(self.features_dir, shard)
            self._maps[shard] = (np.load(spec_path, mmap_mode="r"), np.load(frames_path, mmap_mode="r"))
        return self._maps[shard]

    def __getitem__(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = np.asarray(idx)
        shards, rows = self.shards[idx], self.rows[idx]
        specs, frames = [], []
        for shard, row in zip(shards, rows, strict=True):
            spec_map, frames_map = self._shard(int(shard))
            specs.append(spec_map[row])
            frames.append(frames_map[row])
        return torch.from_numpy(np.stack(specs)), torch.from_numpy(np.stack(frames)), self.labels[idx]


def split_nbytes(features_dir: str | Path, split: str) -> int:
    """Bytes a split takes in memory (spectrograms + frames), from one shard's row size."""
    manifest = read_manifest(features_dir)
    n = int((manifest["split"] == split).sum())
    spec_path, frames_path = shard_paths(Path(features_dir), int(manifest["shard"].iloc[0]))
    per_row = sum(a[0].nbytes for a in (np.load(spec_path, mmap_mode="r"), np.load(frames_path, mmap_mode="r")))
    return n * per_row


def free_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def random_resized_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float],
                              generator: torch.Generator, ratio: tuple[float, float] = (3 / 4, 4 / 3),
                              tries: int = 10) -> torch.Tensor:
    """(n, 4) crop boxes (x0, y0, w, h) in pixels, drawn as torchvision's RandomResizedCrop draws them:
    area fraction uniform in `scale`, log aspect ratio uniform in `ratio`, first of `tries` draws that fits,
    else a centre crop of the whole image (clamped to `ratio`)."""
    area = height * width * torch.empty(n, tries).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(area * aspect).round()
    h = torch.sqrt(area / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1))
    u = torch.rand(n, 2, generator=generator)
    boxes = torch.empty(n, 4)
    ok = first >= 0
    rows = torch.arange(n)[ok]
    cw, ch = w[rows, first[ok]], h[rows, first[ok]]
    boxes[ok] = torch.stack([(u[ok, 0] * (width - cw + 1)).floor(), (u[ok, 1] * (height - ch + 1)).floor(), cw, ch], 1)
    if (~ok).any():                                     # fallback: centre crop within the ratio bounds
        in_ratio = width / height
        cw = min(width, round(height * ratio[1])) if in_ratio > ratio[1] else width
        ch = min(height, round(width / ratio[0])) if in_ratio < ratio[0] else height
        boxes[~ok] = torch.tensor([(width - cw) // 2, (height - ch) // 2, cw, ch], dtype=torch.float)
    return boxes


def crop_resize_flip(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image (B, C, H, W) to its box, resize to size x size (bilinear) and mirror where `flip`,
    as one batched grid_sample (so it runs on the GPU with the batch)."""
    b, _, height, width = images.shape
    boxes = boxes.to(images.device, images.dtype)
    x0, y0, cw, ch = boxes.unbind(1)
    theta = torch.zeros(b, 2, 3, device=images.device, dtype=images.dtype)
    sign = 1 - 2 * flip.to(images.device, images.dtype)
    theta[:, 0, 0] = sign * cw / width
    theta[:, 0, 2] = (2 * x0 + cw) / width - 1
    theta[:, 1, 1] = ch / height
    theta[:, 1, 2] = (2 * y0 + ch) / height - 1
    grid = F.affine_grid(theta, [b, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


@dataclass
class Augment:
    """Training-time frame augmentation (train.frame_augment); audio is not augmented, as in the literature.
    `scope` (train.frame_augment_scope): `frame`, each frame its own crop and flip, as the reference loaders
    apply their torchvision transform to each frame; `clip`, one crop and flip shared by a clip's frames."""

    frames: str = "random_resized_crop"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    scope: str = "frame"


def visual_inputs(frames: torch.Tensor, frames_per_sample: int, generator: torch.Generator | None,
                  augment: Augment, random_window: bool = True) -> torch.Tensor:
    """uint8 frames (B, K, S, S, 3) -> normalised float (B, T, 3, S, S). With a generator (training): a random
    window of T frames (the centred one when not random_window: OGM-GE trains on fixed frames) and the
    augmentation; without: the centred window, no augmentation."""
    b, k, size = frames.shape[0], frames.shape[1], frames.shape[2]
    t = min(frames_per_sample, k)
    if generator is None or not random_window:
        start = torch.full((b,), (k - t) // 2, dtype=torch.long)
    else:
        start = torch.randint(0, k - t + 1, (b,), generator=generator)
    window = (start[:, None] + torch.arange(t)[None, :]).to(frames.device)
    x = frames[torch.arange(b, device=frames.device)[:, None], window]          # (B, T, S, S, 3)
    x = x.flatten(0, 1).permute(0, 3, 1, 2).float()                            # (B*T, 3, S, S), channels-last
    if generator is not None and augment.frames != "none":
        draws, repeat = (b * t, 1) if augment.scope == "frame" else (b, t)   # per frame, or shared by a clip
        flip = (torch.rand(draws, generator=generator) < 0.5).repeat_interleave(repeat)
        if augment.frames == "random_resized_crop":
            boxes = random_resized_crop_boxes(draws, size, size, augment.crop_scale, generator)
            x = crop_resize_flip(x, boxes.repeat_interleave(repeat, 0), flip, size)
        else:
            x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    mean, scale = normalisation(x.device)
    return x.sub_(mean).mul_(scale).view(b, t, 3, size, size)       # in place: one pass fewer over the batch


@functools.cache
def normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and 1/std on the 0-255 scale, made once per device (not a host-to-device copy per batch)."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    return mean, 1 / (torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255)


class BatchStream:
    """The batches of one split for one pass, in a given order, from memory or from the shards."""

    def __init__(self, features_dir: str | Path, split: str, device: torch.device, in_memory: str = "auto",
                 num_workers: int = 0) -> None:
        self.device = device
        self.num_workers = num_workers
        if in_memory == "auto":
            need, free = split_nbytes(features_dir, split), free_memory(device)
            in_memory = "true" if need < 0.5 * free else "false"
            log.info("%s split: %.2f GB, %.2f GB free on %s -> in memory: %s", split, need / 1e9, free / 1e9,
                     device, in_memory)
        self.memory = SplitTensors.from_arrays(load_split(features_dir, split), device) if in_memory == "true" else None
        self.mapped = None if self.memory is not None else MappedSplit(features_dir, split)
        source = self.memory if self.memory is not None else self.mapped
        self.labels = source.labels.to(device)
        self.clip_ids = source.clip_ids

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, order: torch.Tensor,
                batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(idx, spec, frames, labels) per batch; spec and frames in their stored dtypes, on the device."""
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if self.memory is not None:
            for idx in chunks:
                on_device = idx.to(self.device)
                yield idx, self.memory.spec[on_device], self.memory.frames[on_device], self.memory.labels[on_device]
            return
        loader = torch.utils.data.DataLoader(
            self.mapped, sampler=[c.numpy() for c in chunks], batch_size=None, num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if self.num_workers else None,
        )
        for idx, (spec, frames, labels) in zip(chunks, loader, strict=True):
            yield (idx, spec.to(self.device, non_blocking=True), frames.to(self.device, non_blocking=True),
                   labels.to(self.device, non_blocking=True))
