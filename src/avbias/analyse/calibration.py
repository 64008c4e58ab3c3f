"""Each branch's calibration before fusion: the paper's mechanism, measured (issue 20).

arXiv 2510.14411 blames "aggregating uncalibrated modality outputs at the fusion stage". A joint model's
branch m predicts softmax(C_m + b/M) (remedies.branch_logits: C_m = W_m f_m its contribution to the fused
logits, b/M its even share of the bias). Per branch: its test NLL and expected calibration error as trained,
and after temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks") fit on that
branch's validation NLL alone (remedies.branch_temperature_weights, the same fit the remedy
calibrate_branches fuses). Pure functions on arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from avbias.analyse.contract import ECE_BINS
from avbias.analyse.remedies import Contributions, branch_logits, branch_temperature_weights, log_softmax, nll


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE (Guo et al. 2017): each sample's confidence (its top probability) falls in one of `bins` equal-width
    intervals ((b - 1)/B, b/B] (a confidence on an edge in the lower one); the sum over bins of |accuracy - mean
    confidence| in the bin, weighted by the bin's share of the samples (n_b / N)."""
    probs = np.asarray(probs, float)
    confidence = probs.max(1)
    correct = probs.argmax(1) == np.asarray(labels)
    which = np.digitize(confidence, np.linspace(0, 1, bins + 1)[1:-1], right=True)
    ece = 0.0
    for b in np.unique(which):                      # empty bins weigh nothing
        inside = which == b
        ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def branch_scores(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """NLL and ECE of softmax(logits)."""
    return nll(logits, labels), expected_calibration_error(np.exp(log_softmax(logits)), labels)


def branch_calibration(val: Contributions, test: Contributions, bias: np.ndarray, val_labels: np.ndarray,
                       test_labels: np.ndarray) -> list[dict[str, Any]]:
    """One row per branch: test NLL and ECE of softmax(C_m + b/M), the temperature T_m fit on the branch's
    validation NLL, and test NLL and ECE of softmax(C_m / T_m + b/M)."""
    alpha = branch_temperature_weights(val, bias, val_labels)
    trained, calibrated = branch_logits(test, bias), branch_logits(test, bias, alpha)
    rows = []
    for m in test:
        before, after = branch_scores(trained[m], test_labels), branch_scores(calibrated[m], test_labels)
        rows.append({"modality": m, "test_nll": before[0], "test_ece": before[1], "temperature": float(1 / alpha[m]),
                     "test_nll_calibrated": after[0], "test_ece_calibrated": after[1]})
    return rows
