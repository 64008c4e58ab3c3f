"""Shared fixtures: a copy of the project in a temporary folder, tiny parameters, and tool runners."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from avbias.io import write_json
from avbias.shards import MANIFEST, write_shard

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT_FILES = ["Snakefile", "dvc.yaml", "params.yaml", "config", "workflow", "profiles", "src", "pyproject.toml",
                 ".gitignore"]

# Small enough that a whole pipeline (96 clips, 1 s of audio, 32 px frames, width-8 ResNets) runs in about
# a minute on 2 cores, large enough that the strong modality is learned and the weak one is not.
TINY: dict[str, Any] = {
    "paths": {"data": "data/tiny", "results": "results/tiny", "logs": "logs/tiny"},
    "run": {"datasets": ["synth_cremad"], "methods": ["unimodal_audio", "unimodal_visual", "baseline"],
            "seeds": [0, 1]},
    # Audio clearly stronger: audio at 0 dB is learned, visual at -10 dB is near chance (docs/synthetic.md).
    "synth": {"num_actors": 4, "num_sentences": 4, "audio_snr_db": 0.0, "visual_snr_db": -10.0},
    "splits": {"scheme": "random"},
    "extract": {"cremad": {"duration_s": 1.0, "num_frames": 2}, "frame_size": 32, "shard_size": 32,
                "kinetics_sounds": {"duration_s": 2.0, "target_frames": 200, "num_frames": 2}},
    "model": {"width": 8},
    "train": {"epochs": 15, "batch_size": 16, "lr": 0.05, "lr_step": 12},
    "resources": {"acquire_threads": 2, "extract_threads": 2, "train_threads": 1, "train_gpus": 0,
                  "train_mem_mb": 1500, "extract_mem_mb": 1500, "train_runtime_min": 30, "extract_runtime_min": 30},
}


def tool_env() -> dict[str, str]:
    """The environment of the venv running the tests, so `avbias`, `snakemake` and `dvc` resolve there."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def make_project(dest: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Copy the project's workflow files to dest and write tiny override params (tiny.yaml)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    from avbias.config import deep_merge

    (dest / "tiny.yaml").write_text(yaml.safe_dump(deep_merge(TINY, overrides or {})))
    return dest


def snakemake(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # Targets and flags first: --configfile takes every word after it.
    return run(["snakemake", *args, "--cores", "2", "--configfile", "params.yaml", "tiny.yaml"], project, check=check)


def avbias_in_process(*argv: str) -> None:
    """An `avbias` command as a rule runs it, called in this process: the same code and arguments without an
    interpreter, torch and Snakemake start-up per job (seconds each; minutes over a test's jobs)."""
    from avbias.cli import main

    assert main(list(argv)) == 0, f"avbias {' '.join(argv[:1])} failed"


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline run once by Snakemake with the default knobs (audio stronger)."""
    project = make_project(tmp_path_factory.mktemp("pipeline"))
    snakemake(project, "all")
    return project


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny constructed shards for training tests: the spectrogram carries the label (a bright row), the
    frames are noise; 32 train, 8 val, 8 test clips."""
    out = tmp_path_factory.mktemp("features")
    rng = np.random.default_rng(0)
    n = 48
    labels = np.arange(n) % 6
    spec = rng.normal(size=(n, 16, 12)).astype(np.float16)
    spec[np.arange(n), labels * 2, :] += 4
    frames = rng.integers(0, 255, size=(n, 2, 16, 16, 3), dtype=np.uint8)
    split = np.array(["train"] * 32 + ["val"] * 8 + ["test"] * 8)
    rows = []
    for shard, start in enumerate(range(0, n, 20)):
        idx = np.arange(start, min(start + 20, n))
        write_shard(out, shard, spec[idx], frames[idx])
        rows += [{"clip_id": f"c{i:03d}", "label": int(labels[i]), "split": split[i], "shard": shard,
                  "row": r, "params_hash": "x"} for r, i in enumerate(idx)]
    pd.DataFrame(rows).to_parquet(out / MANIFEST, index=False)
    write_json(out / "extract.json", {"classes": [f"class{c}" for c in range(6)]})   # class names travel with the data
    return out
