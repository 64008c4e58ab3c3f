"""Benchmark: input overhead of the training loop against the compute floor, same model, same run.

Loop: each step gathers a batch from the in-memory split (`avbias.train.batch_inputs`: index, frame window,
flip, normalise) and runs forward, backward and an SGD step. Floor: the same steps on one batch prepared
beforehand. Ratio = loop / floor (target 1.1). Random tensors of the demo's shapes stand in for shards.

    python benchmarks/training_input_overhead.py --width 8 --frame-size 48 --steps 20
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from avbias.features.shards import SplitArrays
from avbias.models.fusion import AVClassifier
from avbias.train import SplitTensors, batch_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--frame-size", type=int, default=48)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--clips", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(0)
    arrays = SplitArrays([f"c{i}" for i in range(args.clips)], rng.integers(0, 6, args.clips),
                         rng.normal(size=(args.clips, 257, 188)).astype(np.float16),
                         rng.integers(0, 255, (args.clips, 3, args.frame_size, args.frame_size, 3), dtype=np.uint8))
    split = SplitTensors.from_arrays(arrays, device)
    model = AVClassifier(("audio", "visual"), 6, args.width).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    generator = torch.Generator().manual_seed(0)

    def step(inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        loss = torch.nn.functional.cross_entropy(model(inputs).logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(run) -> float:
        run(3)                                               # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run(args.steps)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / args.steps

    def loop(n: int) -> None:
        for _ in range(n):
            idx = torch.randint(0, len(split), (args.batch,), generator=generator)
            step(batch_inputs(split, idx, model.modalities, 1, generator), split.labels[idx])

    fixed_idx = torch.arange(args.batch)
    fixed = batch_inputs(split, fixed_idx, model.modalities, 1, generator)

    def floor(n: int) -> None:
        for _ in range(n):
            step(fixed, split.labels[fixed_idx])

    floor_s, loop_s = timed(floor), timed(loop)
    print(f"{device.type}, width {args.width}, frames {args.frame_size}px, batch {args.batch}, {args.threads} threads: "
          f"compute floor {floor_s * 1000:.1f} ms/step; training loop {loop_s * 1000:.1f} ms/step; "
          f"ratio {loop_s / floor_s:.3f}")


if __name__ == "__main__":
    main()
