"""Decision-layer measures on constructed weights and features with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from avbias.analysis import decision_layer as dl
from avbias.analysis.metrics import accuracy, macro_f1, per_class_accuracy
from avbias.analysis.runs import aggregate, dominance

# 2 classes; audio block is 2 columns, visual block 1 column.
W = np.array([[3.0, 4.0, 1.0],
              [0.0, 0.0, 2.0]])
DIMS, MODS = [2, 1], ["audio", "visual"]


def test_weight_blocks_and_norms() -> None:
    blocks = dl.weight_blocks(W, DIMS, MODS)
    assert blocks["audio"].shape == (2, 2) and blocks["visual"].shape == (2, 1)
    norms = dl.decision_weight_norms(blocks)
    assert norms["audio"]["overall"] == pytest.approx(5.0)            # sqrt(9 + 16)
    assert norms["visual"]["overall"] == pytest.approx(np.sqrt(5.0))  # sqrt(1 + 4)
    np.testing.assert_allclose(norms["audio"]["per_class"], [5.0, 0.0])
    np.testing.assert_allclose(norms["visual"]["per_class"], [1.0, 2.0])


def test_weight_blocks_reject_wrong_dims() -> None:
    with pytest.raises(ValueError, match="3 columns"):
        dl.weight_blocks(W, [2, 2], MODS)


def test_logit_contributions_add_up_to_the_fused_logits() -> None:
    rng = np.random.default_rng(0)
    f_a, f_v = rng.normal(size=(5, 2)), rng.normal(size=(5, 1))
    bias = np.array([0.5, -0.5])
    blocks = dl.weight_blocks(W, DIMS, MODS)
    fused = np.concatenate([f_a, f_v], axis=1) @ W.T + bias
    parts = dl.logit_contributions(f_a, blocks["audio"]) + dl.logit_contributions(f_v, blocks["visual"])
    np.testing.assert_allclose(parts + bias, fused)
    assert dl.mean_abs_contribution(np.array([[1.0, -3.0], [2.0, -2.0]])) == pytest.approx(2.0)


def test_feature_norms_and_branch_accuracy() -> None:
    np.testing.assert_allclose(dl.feature_norms(np.array([[3.0, 4.0], [0.0, 1.0]])), [5.0, 1.0])
    logits = np.array([[2.0, 1.0], [0.0, 1.0], [5.0, 0.0]])
    assert dl.branch_accuracy(logits, np.array([0, 1, 1])) == pytest.approx(2 / 3)


@pytest.mark.parametrize(("values", "expected"), [
    ({"audio": 3.0, "visual": 1.0}, "audio"),
    ({"audio": 1.0, "visual": 3.0}, "visual"),     # visual dominates: nothing assumes audio
    ({"audio": 1.0, "visual": 1.0}, "balanced"),
])
def test_dominant_modality_either_way(values: dict[str, float], expected: str) -> None:
    assert dl.dominant_modality(values) == expected


def test_dominance_margin_and_shares() -> None:
    assert dl.shares({"audio": 3.0, "visual": 1.0}) == {"audio": 0.75, "visual": 0.25}
    assert dl.dominant_modality({"audio": 0.55, "visual": 0.45}, margin=0.1) == "balanced"
    assert dl.dominant_modality({"audio": 0.65, "visual": 0.35}, margin=0.1) == "audio"


def test_aggregate_and_dominance_over_seeds() -> None:
    runs = pd.DataFrame([
        {"method": "baseline", "seed": 0, "modalities": "audio+visual", "test_acc": 0.8,
         "weight_norm_audio": 1.0, "weight_norm_visual": 3.0, "logit_contrib_audio": 0.2, "logit_contrib_visual": 0.6},
        {"method": "baseline", "seed": 1, "modalities": "audio+visual", "test_acc": 0.6,
         "weight_norm_audio": 1.0, "weight_norm_visual": 5.0, "logit_contrib_audio": 0.4, "logit_contrib_visual": 0.2},
    ])
    summary = aggregate(runs)
    acc = summary[(summary["method"] == "baseline") & (summary["measure"] == "test_acc")].iloc[0]
    assert acc["mean"] == pytest.approx(0.7) and acc["std"] == pytest.approx(np.std([0.8, 0.6], ddof=1)) and acc["n"] == 2
    verdict = dominance(summary, margin=0.0)["baseline"]
    assert verdict["weight_norm"] == "visual"            # 1 vs 4 on average
    assert verdict["logit_contrib"] == "visual"          # 0.3 vs 0.4 on average


def test_classification_metrics() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0])
    assert accuracy(preds, labels) == pytest.approx(0.6)
    np.testing.assert_allclose(per_class_accuracy(preds, labels, 4), [0.5, 1.0, 0.0, np.nan])
    # F1: class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fn1 -> 0.
    assert macro_f1(preds, labels, 4) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
