"""Statistics over seeds: bootstrap confidence intervals, an exact paired sign-flip test and a t-test (pure numpy)."""

from __future__ import annotations

import math
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


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz's method)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((qam + 2 * m) * (a + 2 * m)),
                    -(a + m) * (qab + m) * x / ((a + 2 * m) * (qap + 2 * m))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-14:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0 or x >= 1:
        return float(x >= 1)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_test_p(diff: np.ndarray) -> float:
    """Two-sided one-sample t-test of mean(diff) = 0 (a paired t-test when diff = a - b over the same seeds):
    unlike the sign-flip test it can reach p < 0.05 with 3 to 5 seeds, at the price of assuming normal
    differences. NaN for fewer than 2 values; 0 when all differences are equal and non-zero."""
    diff = np.asarray(diff, float)
    diff = diff[~np.isnan(diff)]
    n = len(diff)
    if n < 2:
        return float("nan")
    sd = float(diff.std(ddof=1))
    if sd == 0:
        return 0.0 if diff.mean() != 0 else 1.0
    t = float(diff.mean()) / (sd / math.sqrt(n))
    df = n - 1
    return incomplete_beta(df / 2, 0.5, df / (df + t * t))


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The t-based confidence interval of the mean, the interval the t-test's p matches (percentile
    bootstrap intervals are too narrow with 3 to 5 seeds); NaN for fewer than 2 values."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    df, alpha = n - 1, 1 - level
    low, high = 0.0, 1e3
    for _ in range(200):        # the quantile t with two-sided p(t) = alpha, by bisection
        mid = (low + high) / 2
        if incomplete_beta(df / 2, 0.5, df / (df + mid * mid)) > alpha:
            low = mid
        else:
            high = mid
    half = (low + high) / 2 * float(values.std(ddof=1)) / math.sqrt(n)
    return float(values.mean() - half), float(values.mean() + half)


def welch_p(mean_a: float, se_a: float, n_a: int, mean_b: float, se_b: float, n_b: int) -> float:
    """Two-sided Welch test of equal means from two summaries (mean, standard error of the mean, count):
    are two runs of one study's estimates further apart than their seeds' spread allows? NaN when a
    summary is missing or has under 2 values; 0 or 1 when both spreads are zero."""
    if min(n_a, n_b) < 2 or any(math.isnan(x) for x in (mean_a, se_a, mean_b, se_b)):
        return float("nan")
    var = se_a ** 2 + se_b ** 2
    if var == 0:
        return 0.0 if mean_a != mean_b else 1.0
    t = (mean_a - mean_b) / math.sqrt(var)
    df = var ** 2 / (se_a ** 4 / (n_a - 1) + se_b ** 4 / (n_b - 1))     # Welch-Satterthwaite
    return incomplete_beta(df / 2, 0.5, df / (df + t * t))


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error rate at alpha when
    every adjusted p < alpha is rejected): the k-th smallest p times (m - k + 1), made non-decreasing, capped
    at 1. NaN p-values (comparisons that could not be made) stay NaN and do not count in m."""
    p = np.asarray(p, float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if not m:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    adjusted = np.minimum(np.maximum.accumulate(p[order] * (m - np.arange(m))), 1.0)
    out[order] = adjusted
    return out
