"""Decision-layer measures, as pure functions on arrays.

The decision layer of a concat-fusion model is z = sum_m W_m f_m + b, with W_m the columns of W that
read modality m's features. Nothing here assumes which modality dominates: every measure is computed
per modality, and dominance is whichever modality's share is larger.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def weight_blocks(weight: np.ndarray, dims: Sequence[int], modalities: Sequence[str]) -> dict[str, np.ndarray]:
    """Split W (C, sum D_m) into its per-modality column blocks W_m (C, D_m)."""
    if weight.shape[1] != sum(dims):
        raise ValueError(f"weight has {weight.shape[1]} columns but the feature dims sum to {sum(dims)}")
    bounds = np.cumsum([0, *dims])
    return {m: weight[:, bounds[i] : bounds[i + 1]] for i, m in enumerate(modalities)}


def decision_weight_norms(blocks: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray | float]]:
    """Per modality: the Frobenius norm of W_m ('overall') and the L2 norm of each class row ('per_class')."""
    return {
        m: {"overall": float(np.linalg.norm(w)), "per_class": np.linalg.norm(w, axis=1)}
        for m, w in blocks.items()
    }


def logit_contributions(features: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Modality m's contribution W_m f_m to every class logit: (N, C)."""
    return features @ block.T


def mean_abs_contribution(contributions: np.ndarray) -> float:
    """Mean |W_m f_m| over samples and classes: the scale at which a modality moves the logits."""
    return float(np.mean(np.abs(contributions)))


def feature_norms(features: np.ndarray) -> np.ndarray:
    """||f_m|| per sample."""
    return np.linalg.norm(features, axis=1)


def branch_accuracy(modality_logits: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of one modality's logits alone through the fused head."""
    return float(np.mean(modality_logits.argmax(axis=1) == labels))


def shares(values: dict[str, float]) -> dict[str, float]:
    """Each modality's share of a non-negative measure (shares sum to 1)."""
    total = sum(values.values())
    if total <= 0:
        return {m: 1.0 / len(values) for m in values}
    return {m: v / total for m, v in values.items()}


def dominant_modality(values: dict[str, float], margin: float = 0.0) -> str:
    """The modality with the largest share, or 'balanced' when no share exceeds 1/M + margin."""
    share = shares(values)
    top = max(share, key=share.__getitem__)
    return top if share[top] > 1.0 / len(share) + margin else "balanced"


def weight_norm_ratio(norms: dict[str, dict[str, np.ndarray | float]], a: str, b: str) -> tuple[float, np.ndarray]:
    """||W_a|| / ||W_b|| overall, and per class (the distribution of per-class ratios)."""
    per_class = np.asarray(norms[a]["per_class"]) / np.maximum(np.asarray(norms[b]["per_class"]), 1e-12)
    return float(norms[a]["overall"]) / max(float(norms[b]["overall"]), 1e-12), per_class


def per_class_mean(values: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Mean of a per-sample value over the samples of each class (NaN for absent classes)."""
    return np.array([values[labels == c].mean() if (labels == c).any() else np.nan for c in range(num_classes)])


def logit_scale(row_norms: np.ndarray, mean_feature_norm: np.ndarray | float) -> np.ndarray:
    """||W_m,c|| * ||f_m||: the bound on modality m's logit for class c (Cauchy-Schwarz), per class."""
    return np.asarray(row_norms) * mean_feature_norm


def contribution_at(contributions: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Each sample's contribution to the logit of the given class (N,)."""
    return contributions[np.arange(len(classes)), classes]


def runner_up(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The highest-scoring class other than the true one, per sample."""
    masked = logits.astype(float).copy()
    masked[np.arange(len(labels)), labels] = -np.inf
    return masked.argmax(1)


def margin_contribution(contributions: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Modality m's share of the fused margin z_y - z_k (k: the fused runner-up): (W_m f_m)_y - (W_m f_m)_k."""
    k = runner_up(logits, labels)
    return contribution_at(contributions, labels) - contribution_at(contributions, k)


def who_decides(fused_logits: np.ndarray, modality_logits: dict[str, np.ndarray]) -> dict[str, float | int]:
    """Where the modalities' own predictions disagree, the share of samples whose fused prediction equals
    each modality's prediction ('who decides'), and how many samples disagree."""
    preds = {m: z.argmax(1) for m, z in modality_logits.items()}
    first, *rest = preds.values()
    disagree = np.zeros(len(first), bool)
    for p in rest:
        disagree |= p != first
    fused = fused_logits.argmax(1)
    n = int(disagree.sum())
    out: dict[str, float | int] = {m: float(np.mean(fused[disagree] == p[disagree])) if n else float("nan")
                                   for m, p in preds.items()}
    out["n_disagree"] = n
    return out


def subset_accuracy(contributions: dict[str, np.ndarray], bias: np.ndarray, labels: np.ndarray,
                    subset: tuple[str, ...]) -> float:
    """Accuracy of sum_{m in subset} W_m f_m + b: the modalities outside the subset have zero features."""
    logits = np.broadcast_to(bias, (len(labels), len(bias))).astype(float)
    for m in subset:
        logits = logits + contributions[m]
    return float(np.mean(logits.argmax(1) == labels))


def shapley_values(value: dict[tuple[str, ...], float], modalities: Sequence[str]) -> dict[str, float]:
    """Each modality's Shapley value given the value v(S) of every coalition S (tuples in `modalities`
    order): phi_m = sum_S |S|! (n - |S| - 1)! / n! (v(S + m) - v(S)); they sum to v(all) - v(none)."""
    from itertools import combinations
    from math import factorial

    mods = list(modalities)
    n = len(mods)
    out = {}
    for m in mods:
        others = [x for x in mods if x != m]
        total = 0.0
        for k in range(n):
            for s in combinations(others, k):
                with_m = tuple(x for x in mods if x in s or x == m)
                total += factorial(k) * factorial(n - k - 1) / factorial(n) * (value[with_m] - value[s])
        out[m] = total
    return out


def shapley_accuracy(contributions: dict[str, np.ndarray], bias: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Shapley value of accuracy with absent modalities' *features* zeroed at the decision layer
    (v(S) = accuracy of sum_{m in S} W_m f_m + b; v(none) = accuracy of the bias alone): avbias's measure,
    which asks what the decision layer does with each modality's features."""
    from itertools import combinations

    mods = list(contributions)
    value = {s: subset_accuracy(contributions, bias, labels, s) for k in range(len(mods) + 1)
             for s in combinations(mods, k)}
    return shapley_values(value, mods)


def shapley_input_accuracy(logits_by_absent: dict[tuple[str, ...], np.ndarray], labels: np.ndarray,
                           modalities: Sequence[str]) -> dict[str, float]:
    """BalanceBenchmark's Shapley value of accuracy (evaluation/modalitys.py Calculate_Shapley): v(S) is the
    accuracy with every modality outside S given an all-zero *input* that still runs through its encoder;
    `logits_by_absent` maps each set of absent modalities (() for the full model) to the fused logits."""
    mods = tuple(modalities)
    value = {}
    for absent, logits in logits_by_absent.items():
        present = tuple(m for m in mods if m not in absent)
        value[present] = float(np.mean(logits.argmax(1) == labels))
    return shapley_values(value, mods)


def centred(contributions: np.ndarray) -> np.ndarray:
    """A contribution minus its mean over classes, per sample: the part softmax does not ignore."""
    return contributions - contributions.mean(1, keepdims=True)
