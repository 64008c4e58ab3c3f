"""Train / val / test assignment: the literature split, a speaker-disjoint split, or a random one."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from avbias.errors import DataError

log = logging.getLogger(__name__)


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


def group_split(groups: pd.Series, test_fraction: float, val_fraction: float, seed: int) -> pd.Series:
    """Whole groups (CREMA-D actors) go to one split, so no speaker is seen in training and testing."""
    names = np.array(sorted(groups.unique()))
    names = names[np.random.default_rng(seed).permutation(len(names))]
    n_test = max(1, int(round(len(names) * test_fraction)))
    n_val = max(1, int(round(len(names) * val_fraction))) if val_fraction > 0 else 0   # 0: train on the rest
    if n_test + n_val >= len(names):
        raise DataError(f"splits.scheme=speaker: {len(names)} speakers are too few for test and val speakers")
    assignment = {g: "test" for g in names[:n_test]} | {g: "val" for g in names[n_test : n_test + n_val]}
    return groups.map(lambda g: assignment.get(g, "train"))


def literature_split(official: pd.Series, labels: pd.Series, val_fraction: float, seed: int) -> pd.Series:
    """The dataset's published split; when it has no validation set, carve one out of train per class."""
    split = official.copy()
    if not (split == "val").any():
        train = split == "train"
        carved = stratified_split(labels[train], 0.0, val_fraction, seed)
        split[train] = carved
    return split


def assign_splits(clips: pd.DataFrame, cfg: dict, dataset: str) -> pd.Series:
    """The split of each clip (indexed like clips; None for clips outside the literature split)."""
    indexed = clips.set_index("clip_id")
    if cfg["scheme"] == "literature":
        official = indexed["official_split"].where(indexed["official_split"].notna(), None)
        inside = official.notna()
        if not inside.any():
            raise DataError(f"{dataset}: splits.scheme=literature, but no clip is in the dataset's literature split")
        if (~inside).any():
            log.warning("%s: %d clips are not in the literature split and are left out, e.g. %s",
                        dataset, int((~inside).sum()), list(official.index[~inside][:3]))
        split = pd.Series(None, index=indexed.index, dtype=object)
        split[inside] = literature_split(official[inside], indexed["label"][inside], cfg["val_fraction"], cfg["seed"])
    elif cfg["scheme"] == "speaker":
        split = group_split(indexed["group"].astype(str), cfg["test_fraction"], cfg["val_fraction"], cfg["seed"])
    else:
        split = stratified_split(indexed["label"], cfg["test_fraction"], cfg["val_fraction"], cfg["seed"])
    return split
