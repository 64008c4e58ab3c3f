"""Benchmark: the synthetic CREMA-D generator against its ffmpeg encode floor, on the same clips, in one run.

Floor: ffmpeg alone encoding each clip (FLV1 + AAC, the generator's exact command) from its frames and wav
already on disk, one process at a time. Generator: `write_cremad_clip` on the same clips, one at a time
(render audio and frames in Python, write the wav, pipe the frames to ffmpeg). Also reported: the Python
rendering alone (audio + frames, no encoding). Ratio = generator / floor (lower is better; 1.0 would mean
rendering costs nothing beyond encoding). `--baseline REV` also times the generator of a git revision
(its src/avbias/acquire/synthetic.py, loaded beside the current one) on the same clips.

    python benchmarks/synth_speed.py --clips 24 [--baseline HEAD] [--out /tmp/issue15_bench.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from avbias.acquire import synthetic
from avbias.config import REPO_ROOT, read_yaml


def load_revision(rev: str, folder: Path) -> ModuleType:
    source = subprocess.run(["git", "-C", str(REPO_ROOT), "show", f"{rev}:src/avbias/acquire/synthetic.py"],
                            check=True, capture_output=True, text=True).stdout
    path = folder / "synthetic_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("synthetic_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def time_generator(module: ModuleType, clips: list, params: dict, out: Path) -> float:
    start = time.perf_counter()
    for clip in clips:
        module.write_cremad_clip(out, clip, params)
    return time.perf_counter() - start


def time_rendering(clips: list, params: dict) -> float:
    start = time.perf_counter()
    for clip in clips:
        synthetic.render_audio(clip, params["audio_snr_db"], params["seed"])
        for _ in synthetic.render_frames(clip, params["visual_snr_db"], params["seed"]):
            pass
    return time.perf_counter() - start


def time_floor(clips: list, params: dict, folder: Path) -> float:
    """ffmpeg only: each clip's raw frames and wav are written first (untimed), then encoded (timed)."""
    total = 0.0
    raw, wav, out = folder / "frames.rgb", folder / "audio.wav", folder / "out.flv"
    for clip in clips:
        synthetic.write_wav(wav, synthetic.render_audio(clip, params["audio_snr_db"], params["seed"]))
        with open(raw, "wb") as fh:
            for frame in synthetic.render_frames(clip, params["visual_snr_db"], params["seed"]):
                fh.write(frame.data)
        cmd = synthetic.encode_command(wav, synthetic.CREMAD_VIDEO, str(raw))
        start = time.perf_counter()
        subprocess.run([*cmd, str(out)], check=True)
        total += time.perf_counter() - start
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24, help="clips (whole sentences of one actor: multiples of 6)")
    parser.add_argument("--baseline", default=None, help="also time the generator of this git revision")
    parser.add_argument("--out", default=None, help="write the markdown table here too")
    args = parser.parse_args()

    params = read_yaml(REPO_ROOT / "params.yaml")["synth"]
    plan = synthetic.plan_clips({**params, "num_actors": max(1, -(-args.clips // 72)), "num_sentences": 12})
    clips = plan[: args.clips]
    seconds = sum(c.duration_s for c in clips)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        time_generator(synthetic, clips[:1], params, tmp / "warmup")      # imports, caches, ffmpeg in the page cache
        floor = time_floor(clips, params, tmp)
        rows.append(("ffmpeg encode alone (floor)", floor))
        rows.append(("Python rendering alone (audio + frames)", time_rendering(clips, params)))
        rows.append(("generator (this tree)", time_generator(synthetic, clips, params, tmp / "new")))
        if args.baseline:
            old = load_revision(args.baseline, tmp)
            time_generator(old, clips[:1], params, tmp / "warmup-old")
            rows.append((f"generator ({args.baseline})", time_generator(old, clips, params, tmp / "old")))
    lines = [
        f"Synthetic CREMA-D generator, {len(clips)} clips ({seconds:.0f} s of media, 480x360 30 fps FLV1 + AAC), "
        f"one clip at a time, {platform.machine()} {platform.python_version()}:",
        "",
        "| step | total s | ms / clip | clips / s | x floor |",
        "|---|---|---|---|---|",
    ]
    for name, total in rows:
        lines.append(f"| {name} | {total:.2f} | {1000 * total / len(clips):.0f} | {len(clips) / total:.2f} "
                     f"| {total / floor:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
