"""The synthetic generator's per-class plans, read by the generator (acquire) and the analysis alike:
dB offsets and cue probabilities per class, and the cue a clip draws (docs/synthetic.md). numpy only."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from avbias.datasets import CREMAD_EMOTIONS
from avbias.errors import ParamsError


def per_class_values(params: Mapping[str, Any], key: str, num_classes: int, unit: str) -> np.ndarray | None:
    """synth.<key>: one number per class in label order; None when absent, null or an empty list.

    Raises ParamsError naming the key when the list does not hold one number per class."""
    values = params.get(key) or []
    if not values:
        return None
    if len(values) != num_classes:
        raise ParamsError(
            f"synth.{key}: {len(values)} values given, but the dataset has {num_classes} classes; give one "
            f"{unit} per class in label order (CREMA-D: {', '.join(CREMAD_EMOTIONS)}), or [] for none")
    try:
        return np.array([float(v) for v in values])
    except (TypeError, ValueError):
        raise ParamsError(f"synth.{key}: expected numbers ({unit}), got {values!r}") from None


def cue_key(modality: str) -> str:
    return f"{modality}_class_cue_prob"


def cue_probs(params: Mapping[str, Any], modality: str, num_classes: int) -> np.ndarray | None:
    """The per-class probabilities q_c that a clip carries its own class's cue in a modality; None when the
    key is absent, null or an empty list (every clip carries its own class's cue: no draw, today's bytes).

    Raises ParamsError naming the key when the list does not hold one probability in [0, 1] per class."""
    probs = per_class_values(params, cue_key(modality), num_classes, "probability")
    if probs is not None and not np.all((probs >= 0) & (probs <= 1)):
        raise ParamsError(f"synth.{cue_key(modality)}: probabilities must lie in [0, 1], got {probs.tolist()!r}")
    return probs


def drawn_cue(seed: int, clip_id: str, modality: str, label: int, q: np.ndarray | None) -> int:
    """The class whose cue a clip carries in a modality: its own with probability q[label], else another
    class drawn uniformly. Its own random stream [seed, crc32(clip id + "/cue/<modality>")], so the rendering
    streams, and with no probabilities the bytes, are those of a clip without corruption."""
    if q is None:
        return label
    rng = np.random.default_rng([seed, zlib.crc32(f"{clip_id}/cue/{modality}".encode())])
    if rng.random() < q[label]:
        return label
    other = int(rng.integers(len(q) - 1))
    return other + (other >= label)                 # uniform over the classes other than its own
