"""Deterministic stratified splits."""

from __future__ import annotations

import numpy as np
import pandas as pd


def stratified_split(labels: pd.Series, test_fraction: float, val_fraction: float, seed: int) -> pd.Series:
    """Assign 'train' / 'val' / 'test' per row, the same fractions in every class.

    Within a class, rows are ordered by index (clip id) and shuffled by a generator seeded by
    (seed, class), so adding a class never reshuffles the others.
    """
    split = pd.Series("train", index=labels.index, dtype=object)
    for label in sorted(labels.unique()):
        members = np.array(sorted(labels.index[labels == label]))
        order = np.random.default_rng([seed, int(label)]).permutation(len(members))
        members = members[order]
        n_test = int(round(len(members) * test_fraction))
        n_val = int(round(len(members) * val_fraction))
        split[members[:n_test]] = "test"
        split[members[n_test : n_test + n_val]] = "val"
    return split
