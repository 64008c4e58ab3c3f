"""Decision-layer measures, as pure functions on arrays.

The decision layer of a concat-fusion model is z = sum_m W_m f_m + b, with W_m the columns of W that
read modality m's features. Nothing here assumes which modality dominates: every measure is computed
per modality, and dominance is whichever modality's share is larger.
"""

from __future__ import annotations

from typing import Sequence

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
