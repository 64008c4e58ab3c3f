"""Truths exact by construction: the Bayes-optimal accuracies of a cue-corruption plan.

With `synth.<m>_class_cue_prob` set (src/avbias/acquire/synthetic.py), a clip of class c shows its own class's
cue in modality m with probability q_{c,m}, and otherwise the cue of one of the other C - 1 classes drawn
uniformly; the two modalities draw independently given the class. At an SNR both modalities read easily,
what a modality observes is its cue j, so

    P_m(j | c) = q_{c,m} if j = c, else (1 - q_{c,m}) / (C - 1),

and with balanced classes the Bayes-optimal classifier picks argmax_c P(observation | c). Its accuracy on
class c is the probability mass of the observations it assigns to c (ties split evenly between the tied
classes, so the value does not depend on a tie-breaking rule). Fused: the observation is the pair
(j_audio, j_visual), P(j_a, j_v | c) = P_a(j_a | c) P_v(j_v | c); a linear decision layer on one-hot cues
(logit_c = log P_a(j_a | c) + log P_v(j_v | c)) attains it, so it is a reachable reference for a
concat-fusion model whose encoders read the cues.

Pure: numpy only. Classes in label order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from avbias.class_plan import cue_key, cue_probs, drawn_cue  # noqa: F401 (drawn_cue: runs.py reads it here)

MODALITIES = ("audio", "visual")


def is_cue_plan(synth: Mapping[str, Any]) -> bool:
    """Whether the plan corrupts cues in at least one modality (its truths are then exact)."""
    return any(synth.get(cue_key(m)) for m in MODALITIES)


def cue_likelihood(q: np.ndarray) -> np.ndarray:
    """L[c, j] = P(cue j | class c): q_c on the diagonal, (1 - q_c) / (C - 1) elsewhere."""
    q = np.asarray(q, dtype=float)
    if q.ndim != 1 or q.size < 2:
        raise ValueError(f"cue_likelihood: one probability per class (at least 2 classes), got shape {q.shape}")
    if np.any((q < 0) | (q > 1)):
        raise ValueError(f"cue_likelihood: probabilities must lie in [0, 1], got {q.tolist()}")
    c = q.size
    off = (1 - q) / (c - 1)
    return off[:, None] * (1 - np.eye(c)) + np.diag(q)


def bayes_class_accuracy(likelihood: np.ndarray) -> np.ndarray:
    """Per-class accuracy of the Bayes-optimal classifier with balanced classes, from L[c, o] = P(o | c) over
    any finite set of observations o (columns); ties split evenly between the tied classes."""
    lik = np.asarray(likelihood, dtype=float)
    best = lik.max(0, keepdims=True)
    wins = np.isclose(lik, best, rtol=1e-12, atol=1e-15) & (best > 0)
    share = wins / np.maximum(wins.sum(0, keepdims=True), 1)          # each observation split among its winners
    return (lik * share).sum(1)


def fused_likelihood(likelihoods: list[np.ndarray]) -> np.ndarray:
    """L[c, (j_1, j_2, ...)] = prod_m L_m[c, j_m]: modalities independent given the class, one column per
    combination of cues (row-major over the modalities)."""
    out = np.ones((likelihoods[0].shape[0], 1))
    for lik in likelihoods:
        out = (out[:, :, None] * lik[:, None, :]).reshape(out.shape[0], -1)
    return out


def bayes_accuracies(synth: Mapping[str, Any], num_classes: int) -> dict[str, np.ndarray]:
    """Per class, the Bayes-optimal accuracy of each modality alone and of the two fused ('fused'). A modality
    without corruption (no probabilities set) carries its own cue on every clip (q = 1)."""
    liks = {}
    for m in MODALITIES:
        q = cue_probs(synth, m, num_classes)
        liks[m] = cue_likelihood(np.ones(num_classes) if q is None else q)
    out = {m: bayes_class_accuracy(lik) for m, lik in liks.items()}
    out["fused"] = bayes_class_accuracy(fused_likelihood([liks[m] for m in MODALITIES]))
    return out


def at_risk_classes(accuracies: Mapping[str, np.ndarray], reference: str, margin: float) -> np.ndarray:
    """Classes (indices) where following `reference` alone costs: the Bayes-optimal fused accuracy exceeds
    that modality's own by more than margin. Where a fused model that under-uses the other modality loses;
    the planted failure mode of a cue plan with `reference` the overall dominant modality."""
    gain = np.asarray(accuracies["fused"]) - np.asarray(accuracies[reference])
    return np.flatnonzero(gain > margin)


def bayes_correct(likelihoods: list[np.ndarray], cues: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Per clip, the probability that the Bayes-optimal fused classifier is right given the clip's actual cues
    (one array of cue indices per modality): 1 / (number of tied best classes) when the true class is among
    them, else 0. Its mean over a class's clips is the Bayes-optimal accuracy realised on those clips."""
    score = np.ones((len(labels), likelihoods[0].shape[0]))
    for lik, cue in zip(likelihoods, cues, strict=True):
        score = score * lik.T[np.asarray(cue)]
    best = score.max(1, keepdims=True)
    wins = np.isclose(score, best, rtol=1e-12, atol=1e-15)
    return wins[np.arange(len(labels)), labels] / wins.sum(1)


