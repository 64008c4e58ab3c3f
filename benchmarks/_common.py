"""Shared set-up of the benchmarks: a synthetic CREMA-D-format dataset as an extraction-ready clip table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from avbias.data import cremad, synthetic
from avbias.data.datasets import CREMAD_EMOTIONS


def cremad_table(root: Path, synth: dict, clips: int, workers: int, repeat: int = 1) -> pd.DataFrame:
    """Generate about `clips` clips (whole actors) under root; list each `repeat` times under distinct ids."""
    actors = max(1, clips // (6 * synth["num_sentences"]))
    plan = synthetic.generate(root, {**synth, "num_actors": actors}, "cremad", workers=workers)
    table = cremad.clips_table(root, [c.clip_id for c in plan])
    table = table.assign(label=[CREMAD_EMOTIONS.index(n) for n in table["label_name"]], split="train")
    return pd.concat([table.assign(clip_id=table["clip_id"] + f"#{r}") for r in range(repeat)], ignore_index=True)
