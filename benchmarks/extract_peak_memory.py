"""Benchmark: peak memory of extraction does not grow with the dataset.

Extracts the same synthetic CREMA-D-format clips listed R times and 4R times (distinct ids), each run in a
fresh process, and reports the peak resident memory of the main process (getrusage maxrss) and the peak
of the whole process tree, main process and workers together (sampled every 50 ms with psutil, which
DVC already installs). Bounded memory means the 4x dataset's peaks stay within a few percent of the 1x ones:
shards are streamed (extract.shard_size clips at a time), nothing is held per clip beyond its manifest row.

    python benchmarks/extract_peak_memory.py --clips 48 --repeat 4 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pandas as pd
import psutil
from _common import cremad_table

from avbias.config import REPO_ROOT, deep_merge, load_params
from avbias.datasets import CREMAD_EMOTIONS
from avbias.extract.features import extract_features


def child(table_path: str, out: str, workers: int, frame_size: int) -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    params["extract"] = deep_merge(params["extract"], {"frame_size": frame_size, "shard_size": 64})
    table = pd.read_parquet(table_path)
    peak, done = [0], threading.Event()

    def sample_tree() -> None:
        me = psutil.Process()
        while not done.wait(0.05):
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            peak[0] = max(peak[0], total)

    sampler = threading.Thread(target=sample_tree, daemon=True)
    sampler.start()
    extract_features(table, list(CREMAD_EMOTIONS), out, params, "synth_cremad", workers=workers)
    done.set()
    sampler.join()
    kib = {"main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "process_tree": peak[0] // 1024}
    print(json.dumps(kib))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=4, help="the small dataset lists each clip this often")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--frame-size", type=int, default=224)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.workers, args.frame_size)
        return
    synth = load_params(REPO_ROOT / "params.yaml")["synth"]
    with tempfile.TemporaryDirectory() as tmp:
        table = cremad_table(Path(tmp) / "media", synth, args.clips, args.workers)
        results = {}
        for factor in (1, 4):
            repeats = args.repeat * factor
            listed = pd.concat([table.assign(clip_id=table["clip_id"] + f"#{r}") for r in range(repeats)])
            path = Path(tmp) / f"table-{factor}.parquet"
            listed.to_parquet(path, index=False)
            proc = subprocess.run([sys.executable, __file__, "--child", str(path), str(Path(tmp) / f"out-{factor}"),
                                   "--workers", str(args.workers), "--frame-size", str(args.frame_size)],
                                  capture_output=True, text=True, check=True)
            results[factor] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{len(listed)} clips: peak main process {results[factor]['main'] / 1024:.0f} MiB, "
                  f"peak of main + workers {results[factor]['process_tree'] / 1024:.0f} MiB")
        for key in ("main", "process_tree"):
            print(f"{key}: 4x dataset / 1x dataset peak = {results[4][key] / results[1][key]:.3f}")


if __name__ == "__main__":
    main()
