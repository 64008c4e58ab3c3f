"""Decision-layer remedies applied to a trained joint model: fit on validation, evaluate on test.

All work on the additive decomposition z = sum_m C_m + b, with C_m = W_m f_m (N, C) each modality's
contribution: they reweight the contributions per modality (and per class) without touching the encoders.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Contributions = dict[str, np.ndarray]


def combine(contributions: Contributions, bias: np.ndarray, alpha: dict[str, np.ndarray | float]) -> np.ndarray:
    """sum_m alpha_m * C_m + b, with alpha_m a scalar or one weight per class."""
    return sum(np.asarray(alpha[m]) * c for m, c in contributions.items()) + bias


def branch_logits(contributions: Contributions, bias: np.ndarray,
                  alpha: dict[str, np.ndarray | float] | None = None) -> Contributions:
    """Each branch's own logits alpha_m C_m + b/M (alpha_m = 1 unless given): its contribution with an even share
    of the bias over the M modalities, as OGM-GE scores a branch (W_m f_m + b/2); they sum to
    combine(contributions, bias, alpha)."""
    return {m: np.asarray((alpha or {}).get(m, 1.0)) * c + bias / len(contributions)
            for m, c in contributions.items()}


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits), each row shifted by its maximum."""
    z = logits - logits.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels]))


TEMPERATURE_GRID = np.geomspace(0.05, 20, 41)


def temperature_weights(val: Contributions, bias: np.ndarray, labels: np.ndarray,
                        grid: np.ndarray = TEMPERATURE_GRID) -> dict[str, float]:
    """Per-modality logit scaling: 1/T_m for each modality, fit jointly by grid search over every combination,
    minimising the fused validation NLL of sum_m C_m / T_m + b (not each branch's own calibration:
    branch_temperature_weights). The first grid point of a tie is kept."""
    mods = list(val)
    best, best_alpha = np.inf, {m: 1.0 for m in mods}
    for values in np.array(np.meshgrid(*[grid] * len(mods))).reshape(len(mods), -1).T:
        alpha = dict(zip(mods, 1 / values, strict=True))
        loss = nll(combine(val, bias, alpha), labels)
        if loss < best - 1e-12:
            best, best_alpha = loss, alpha
    return best_alpha


def branch_temperature_weights(val: Contributions, bias: np.ndarray, labels: np.ndarray,
                               grid: np.ndarray = TEMPERATURE_GRID) -> dict[str, float]:
    """Calibration before fusion: 1/T_m for each modality fit on its own branch, C_m / T_m + b/M (M modalities,
    the bias shared evenly and left unscaled), by grid search minimising that branch's validation NLL. Unlike
    temperature_weights, no T_m sees the other branches: the fused logits sum_m C_m / T_m + b are the sum of
    the calibrated branches (the paper blames "aggregating uncalibrated modality outputs at the fusion stage")."""
    share = bias / len(val)
    return {m: temperature_weights({m: c}, share, labels, grid)[m] for m, c in val.items()}


def standardise_weights(val: Contributions) -> dict[str, float]:
    """Per-modality standardisation: divide each modality's contributions by their validation std."""
    return {m: 1 / max(float(c.std()), 1e-12) for m, c in val.items()}


def norm_equalisation(row_norms: dict[str, np.ndarray], per_class: bool) -> dict[str, np.ndarray | float]:
    """Rescale each modality's block of W to the mean norm over modalities: globally (Frobenius norms) or
    per class (row norms). Uses the weights only: nothing is fitted."""
    if per_class:
        mean = np.mean([r for r in row_norms.values()], axis=0)
        return {m: mean / np.maximum(r, 1e-12) for m, r in row_norms.items()}
    overall = {m: float(np.sqrt((r**2).sum())) for m, r in row_norms.items()}
    mean = float(np.mean(list(overall.values())))
    return {m: mean / max(v, 1e-12) for m, v in overall.items()}


def fit_class_weights(val: Contributions, bias: np.ndarray, labels: np.ndarray, l2: float = 1e-2,
                      iters: int = 2000, tol: float = 1e-7) -> dict[str, np.ndarray]:
    """Capability-aware allocation: per-class, per-modality weights alpha_{c,m} = exp(theta_{c,m}) that minimise
    validation cross-entropy + l2 * ||theta||^2, from alpha = 1, by gradient descent with backtracking (numpy:
    a torch optimiser would import torch._dynamo, ~9 s per analyse job)."""
    mods = list(val)
    c = np.stack([val[m] for m in mods]).astype(float)                     # (M, N, C)
    onehot = np.eye(c.shape[2])[labels]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logits = (np.exp(theta)[:, None, :] * c).sum(0) + bias
        z = logits - logits.max(1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
        loss = -(onehot * log_p).sum(1).mean() + l2 * (theta**2).sum()
        g_logits = (np.exp(log_p) - onehot) / len(labels)                     # (N, C)
        grad = np.exp(theta) * (g_logits[None] * c).sum(1) + 2 * l2 * theta
        return loss, grad

    theta = np.zeros((len(mods), c.shape[2]))
    loss, grad = objective(theta)
    step = 1.0
    for _ in range(iters):
        while step > 1e-12:                                                  # Armijo backtracking
            candidate = theta - step * grad
            new_loss, new_grad = objective(candidate)
            if new_loss <= loss - 1e-4 * step * (grad**2).sum():
                break
            step /= 2
        if loss - new_loss < tol:
            theta = candidate
            break
        theta, loss, grad, step = candidate, new_loss, new_grad, step * 2
    return {m: np.exp(theta[i]) for i, m in enumerate(mods)}


Remedy = Callable[[Contributions, np.ndarray, np.ndarray, dict[str, np.ndarray]], dict[str, np.ndarray | float]]

REMEDIES: dict[str, Remedy] = {
    "temperature": lambda val, bias, labels, norms: temperature_weights(val, bias, labels),
    "calibrate_branches": lambda val, bias, labels, norms: branch_temperature_weights(val, bias, labels),
    "standardise": lambda val, bias, labels, norms: standardise_weights(val),
    "norm_equal_global": lambda val, bias, labels, norms: norm_equalisation(norms, per_class=False),
    "norm_equal_per_class": lambda val, bias, labels, norms: norm_equalisation(norms, per_class=True),
    "class_weights": lambda val, bias, labels, norms: fit_class_weights(val, bias, labels),
}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, float)
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def late_fusion(val_logits: dict[str, np.ndarray], val_labels: np.ndarray,
                test_logits: dict[str, np.ndarray]) -> np.ndarray:
    """A reachable reference for a fused model: the unimodal models' log-probabilities summed with one
    temperature per modality fit on validation (product of experts; the Bayes-optimal fusion when the
    modalities are independent given the class and each model is calibrated). Returns the test logits."""
    val = {m: log_softmax(z) for m, z in val_logits.items()}
    zero = np.zeros(next(iter(val.values())).shape[1])
    alpha = temperature_weights(val, zero, np.asarray(val_labels))
    return combine({m: log_softmax(z) for m, z in test_logits.items()}, zero, alpha)
