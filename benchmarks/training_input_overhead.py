"""Benchmark: input overhead of the real training loop against the compute floor, same model, same run.

Loop: `avbias.train.loop.Trainer.train_epoch` (the loop every method uses: batches from the loader, frame window,
RandomResizedCrop + flip, normalisation, forward, backward, SGD step; bf16 + channels_last on a GPU). Floor:
the same number of steps of the same model on one batch already prepared on the device. Ratio = loop / floor
(target <= 1.1). Random shards with real shapes stand in for extracted clips.

    python benchmarks/training_input_overhead.py --width 8 --frame-size 48 --clips 320          # the demo's sizes
    python benchmarks/training_input_overhead.py --width 64 --frame-size 224 --clips 6698      # CREMA-D, GPU
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml
from _common import random_features, timed_epoch

from avbias.config import REPO_ROOT
from avbias.methods import create_method
from avbias.train.loop import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--frame-size", type=int, default=48)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--clips", type=int, default=320, help="clips in all splits (80%% train)")
    parser.add_argument("--method", default="baseline")
    parser.add_argument("--in-memory", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["model"]["width"] = args.width
    params["train"].update(batch_size=args.batch, epochs=1)
    with tempfile.TemporaryDirectory() as tmp:
        features = random_features(Path(tmp), args.clips, (257, 188), args.frame_size)
        trainer = Trainer(create_method(args.method, params), features, params, 0, [], args.in_memory, args.workers)
        cuda = trainer.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        loop_s = timed_epoch(trainer)
        steps = -(-len(trainer.data["train"]) // args.batch)

        _, spec, frames, labels = next(trainer.data["train"].batches(torch.arange(args.batch), args.batch))
        inputs = trainer.inputs(spec, frames, trainer.method.modalities, train=True)
        model, optimizer = trainer.model, trainer.optimizer

        def floor_step() -> None:
            with trainer.autocast():
                loss = torch.nn.functional.cross_entropy(model(inputs).logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        floor_step()
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            floor_step()
        sync()
        floor_s = time.perf_counter() - start
        memory = f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda else ""
        print(f"{trainer.device.type}, {args.method}, width {args.width}, frames {args.frame_size}px, "
              f"batch {args.batch}, "
              f"{len(trainer.data['train'])} train clips ({steps} steps), {args.threads} threads: compute floor "
              f"{floor_s:.2f} s/epoch; training loop {loop_s:.2f} s/epoch; ratio {loop_s / floor_s:.3f}{memory}")


if __name__ == "__main__":
    main()
