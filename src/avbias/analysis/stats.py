"""Statistics over seeds: bootstrap confidence intervals and an exact paired test (pure numpy)."""

from __future__ import annotations

from itertools import product

import numpy as np


def bootstrap_ci(values: np.ndarray, level: float = 0.95, resamples: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (resampling seeds with replacement); NaN for fewer than 2 values."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(resamples, len(values)), replace=True).mean(1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def paired_permutation_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact sign-flip test of mean(a - b) = 0 over paired values (same seeds). With n pairs the
    smallest attainable p is 2 / 2^n (0.5 for 2 seeds): report it with n."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    diff = diff[~np.isnan(diff)]
    if len(diff) == 0:
        return float("nan")
    observed = abs(diff.mean())
    signs = np.array(list(product((1, -1), repeat=len(diff))))
    flipped = np.abs((signs * diff).mean(1))
    return float(np.mean(flipped >= observed - 1e-12))
