"""Golden tests for the analysis core (decision-layer measures, remedies, statistics, findings, planted truths,
metrics): each expected value is computed by hand here from the reference formula, so that a one-token
change in the code (a flipped sign, an off-by-one bound, a dropped key) fails a test. `make mutation` runs
them against every such change (docs/benchmarks.md, "Mutation testing")."""

from __future__ import annotations

import math
from itertools import product
from typing import Any

import numpy as np
import pandas as pd
import pytest

from avbias import metrics as mt
from avbias.analyse import calibration, capability, cues, findings, planted, remedies, stats
from avbias.analyse import decision_layer as dl
from avbias.errors import ParamsError

# --- statistics ------------------------------------------------------------------------------------------------


def t2_p(t: float) -> float:
    """Two-sided p of Student's t on 2 degrees of freedom, closed form: 1 - |t| / sqrt(t^2 + 2)."""
    return 1 - abs(t) / math.sqrt(t * t + 2)


def t1_p(t: float) -> float:
    """Two-sided p on 1 degree of freedom (Cauchy): 1 - 2 atan(|t|) / pi."""
    return 1 - 2 * math.atan(abs(t)) / math.pi


def test_t_test_p_closed_forms_on_one_and_two_degrees_of_freedom() -> None:
    # [0, 1, 2]: mean 1, sd exactly 1, t = sqrt(3) on 2 df (an sd of 1 is not a zero spread).
    assert stats.t_test_p(np.array([0.0, 1.0, 2.0])) == pytest.approx(t2_p(math.sqrt(3)), abs=1e-10)
    # [1, 3]: mean 2, sd sqrt 2, se 1, t = 2 on 1 df: two values are enough for a p.
    assert stats.t_test_p(np.array([1.0, 3.0])) == pytest.approx(t1_p(2.0), abs=1e-10)
    # [0.5, 2.5, 1.5, -1]: mean 0.875, by hand.
    d = np.array([0.5, 2.5, 1.5, -1.0])
    t = d.mean() / (math.sqrt(((d - d.mean()) ** 2).sum() / 3) / 2)
    # 3 df: p = 1 - (2/pi) (atan(t/sqrt3) + sqrt3 t / (3 + t^2)) (closed form for odd df)
    x = t / math.sqrt(3)
    assert stats.t_test_p(d) == pytest.approx(1 - 2 / math.pi * (math.atan(x) + x / (1 + x * x)), abs=1e-10)


def test_t_test_p_edge_cases_and_missing_values() -> None:
    assert stats.t_test_p(np.array([0.5, 0.5, 0.5])) == 0.0          # equal and non-zero: certain
    assert stats.t_test_p(np.array([0.0, 0.0, 0.0])) == 1.0          # all zero: no effect
    assert math.isnan(stats.t_test_p(np.array([0.4])))
    # A missing seed (None from a JSON null, or NaN) is left out, not an error.
    assert stats.t_test_p([0.0, None, 1.0, 2.0]) == pytest.approx(t2_p(math.sqrt(3)), abs=1e-10)


@pytest.mark.parametrize(("a", "b", "x"), [(2.0, 1.0, 0.3), (2.0, 1.0, 0.9), (1.0, 3.0, 0.2), (1.0, 3.0, 0.8),
                                           (40.0, 1.0, 0.99), (1.0, 40.0, 0.01), (0.5, 0.5, 0.25),
                                           (0.5, 0.5, 0.9), (25.0, 1.0, 0.7), (1.0, 25.0, 0.3)])
def test_incomplete_beta_closed_forms(a: float, b: float, x: float) -> None:
    if b == 1.0:
        expected = x**a                                     # I_x(a, 1) = x^a
    elif a == 1.0:
        expected = 1 - (1 - x) ** b                         # I_x(1, b) = 1 - (1 - x)^b
    else:
        expected = 2 / math.pi * math.asin(math.sqrt(x))    # I_x(1/2, 1/2): the arcsine law
    assert stats.incomplete_beta(a, b, x) == pytest.approx(expected, rel=1e-10, abs=1e-13)


def test_incomplete_beta_bounds() -> None:
    assert stats.incomplete_beta(2.0, 3.0, 0.0) == 0.0
    assert stats.incomplete_beta(2.0, 3.0, 1.0) == 1.0
    assert stats.incomplete_beta(2.0, 3.0, -0.5) == 0.0
    assert stats.incomplete_beta(2.0, 3.0, 1.5) == 1.0


def test_t_interval_by_hand() -> None:
    # 2 values: t_{0.975, 1} = tan(0.95 pi / 2) = 12.706; [1, 4]: mean 2.5, sd 2.1213, half = t sd / sqrt 2.
    half = math.tan(0.95 * math.pi / 2) * (3 / math.sqrt(2)) / math.sqrt(2)
    low, high = stats.t_interval(np.array([1.0, 4.0]))
    assert (low, high) == (pytest.approx(2.5 - half, rel=1e-8), pytest.approx(2.5 + half, rel=1e-8))
    # 3 values with sd 2 ([0, 2, 4]): t_{0.975, 2} = sqrt(2 q^2 / (1 - q^2)), q = 0.95.
    t = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))
    half = t * 2 / math.sqrt(3)
    assert stats.t_interval([0.0, 2.0, None, 4.0]) == (pytest.approx(2 - half, rel=1e-8),
                                                       pytest.approx(2 + half, rel=1e-8))
    # 90%: q = 0.9.
    t90 = math.sqrt(2 * 0.9**2 / (1 - 0.9**2))
    assert stats.t_interval(np.array([0.0, 2.0, 4.0]), level=0.9)[1] == pytest.approx(2 + t90 * 2 / math.sqrt(3))
    low, high = stats.t_interval(np.array([3.0]))
    assert math.isnan(low) and math.isnan(high)


def test_bootstrap_ci_is_the_percentile_interval_of_resampled_means() -> None:
    values = np.array([0.1, 0.4, 0.35, 0.9, 0.6])
    means = np.random.default_rng(0).choice(values, size=(10000, 5), replace=True).mean(1)
    expected = (np.percentile(means, 2.5), np.percentile(means, 97.5))
    assert stats.bootstrap_ci(values) == pytest.approx(expected, abs=1e-12)
    assert stats.bootstrap_ci([0.1, None, 0.4, 0.35, 0.9, 0.6]) == pytest.approx(expected, abs=1e-12)
    means = np.random.default_rng(3).choice(values, size=(500, 5), replace=True).mean(1)
    assert stats.bootstrap_ci(values, level=0.8, resamples=500, seed=3) == pytest.approx(
        (np.percentile(means, 10), np.percentile(means, 90)), abs=1e-12)
    two = np.array([0.2, 0.6])
    means = np.random.default_rng(0).choice(two, size=(10000, 2), replace=True).mean(1)
    assert stats.bootstrap_ci(two) == pytest.approx((np.percentile(means, 2.5), np.percentile(means, 97.5)))
    assert all(math.isnan(x) for x in stats.bootstrap_ci(np.array([0.3, np.nan])))


def test_paired_permutation_p_enumerates_every_sign_flip() -> None:
    a, b = np.array([2.0, 3.0, 5.0]), np.array([1.0, 1.0, 2.0])          # differences 1, 2, 3
    flips = [abs(np.mean(np.array(s) * [1.0, 2.0, 3.0])) for s in product((1, -1), repeat=3)]
    assert stats.paired_permutation_p(a, b) == pytest.approx(np.mean(np.array(flips) >= 2.0 - 1e-12))   # 2 / 8
    assert stats.paired_permutation_p(a, b) == 0.25
    assert stats.paired_permutation_p([0.5], [0.2]) == 1.0              # one pair: both signs as extreme
    assert stats.paired_permutation_p([0.5, None, 1.0], [0.2, 0.1, 0.4]) == 0.5
    assert stats.paired_permutation_p([0.5, 0.3, 1.0], [0.2, None, 0.4]) == 0.5
    assert math.isnan(stats.paired_permutation_p(np.array([np.nan]), np.array([1.0])))


def test_welch_p_by_hand() -> None:
    # se 1/sqrt(2) each: var 1, df = 4 / (1/1 + 1/1) = 2 with 2 seeds each; t = 1.5.
    se = math.sqrt(0.5)
    assert stats.welch_p(2.0, se, 2, 0.5, se, 2) == pytest.approx(t2_p(1.5), abs=1e-10)
    assert stats.welch_p(0.5, se, 2, 2.0, se, 2) == pytest.approx(t2_p(1.5), abs=1e-10)
    assert stats.welch_p(1.0, 0.0, 3, 2.0, 0.0, 3) == 0.0
    assert stats.welch_p(1.0, 0.0, 3, 1.0, 0.0, 3) == 1.0
    assert math.isnan(stats.welch_p(1.0, 0.1, 1, 2.0, 0.1, 5))
    assert math.isnan(stats.welch_p(1.0, float("nan"), 4, 2.0, 0.1, 5))


# --- decision-layer measures -----------------------------------------------------------------------------------


def test_shares_of_nothing_are_even() -> None:
    assert dl.shares({"audio": 0.0, "visual": 0.0, "text": 0.0}) == {m: 1 / 3 for m in ("audio", "visual", "text")}
    assert dl.shares({"audio": 3.0, "visual": 1.0}) == {"audio": 0.75, "visual": 0.25}


def test_per_class_mean_and_absent_classes() -> None:
    out = dl.per_class_mean(np.array([1.0, 3.0, 5.0, 10.0]), np.array([0, 0, 2, 2]), 4)
    np.testing.assert_array_equal(out[[0, 2]], [2.0, 7.5])
    assert np.isnan(out[1]) and np.isnan(out[3])


def test_runner_up_on_integer_scores() -> None:
    np.testing.assert_array_equal(dl.runner_up(np.array([[5, 4, 1], [2, 9, 3]]), np.array([0, 1])), [1, 2])


def test_weight_norm_ratio_for_small_norms() -> None:
    norms = {"audio": {"overall": 0.3, "per_class": np.array([0.1, 0.2])},
             "visual": {"overall": 0.6, "per_class": np.array([0.4, 0.05])}}
    overall, per_class = dl.weight_norm_ratio(norms, "audio", "visual")
    assert overall == pytest.approx(0.5)
    np.testing.assert_allclose(per_class, [0.25, 4.0])


def test_who_decides_with_three_modalities() -> None:
    # b differs from a on sample 1 only, c on sample 2 only: samples 1 and 2 disagree (either pair counts).
    modality = {"a": np.array([[1, 0], [1, 0], [1, 0]]), "b": np.array([[1, 0], [0, 1], [1, 0]]),
                "c": np.array([[1, 0], [1, 0], [0, 1]])}
    fused = np.array([[1, 0], [0, 1], [1, 0]])
    out = dl.who_decides(fused, modality)
    assert out == {"a": 0.5, "b": 1.0, "c": 0.0, "n_disagree": 2}
    agree = dl.who_decides(fused, {"a": fused, "b": fused})
    assert agree["n_disagree"] == 0 and math.isnan(agree["a"]) and math.isnan(agree["b"])


def test_shapley_with_three_players_by_hand() -> None:
    mods = ("a", "b", "c")
    v = {(): 0.0, ("a",): 0.1, ("b",): 0.2, ("c",): 0.4, ("a", "b"): 0.5, ("a", "c"): 0.6, ("b", "c"): 0.7,
         ("a", "b", "c"): 1.0}
    # phi_a = 1/3 (v(a) - v()) + 1/6 (v(ab) - v(b)) + 1/6 (v(ac) - v(c)) + 1/3 (v(abc) - v(bc))
    phi_a = (0.1 - 0) / 3 + (0.5 - 0.2) / 6 + (0.6 - 0.4) / 6 + (1.0 - 0.7) / 3
    phi_b = (0.2 - 0) / 3 + (0.5 - 0.1) / 6 + (0.7 - 0.4) / 6 + (1.0 - 0.6) / 3
    phi_c = (0.4 - 0) / 3 + (0.6 - 0.1) / 6 + (0.7 - 0.2) / 6 + (1.0 - 0.5) / 3
    assert dl.shapley_values(v, mods) == pytest.approx({"a": phi_a, "b": phi_b, "c": phi_c})


# --- remedies --------------------------------------------------------------------------------------------------


def nll_by_hand(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean([math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(logits, labels,
                                                                                               strict=True)]))


def test_nll_is_stable_per_row() -> None:
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.3, 0.2]])
    labels = np.array([0, 2])
    assert remedies.nll(logits, labels) == pytest.approx(nll_by_hand(logits, labels))
    # Rows 2000 apart: each row is shifted by its own maximum (no overflow, no underflow to log 0).
    far = np.array([[1000.0, 999.0], [-1000.0, -1001.0]])
    expected = math.log(1 + math.exp(-1))
    assert remedies.nll(far, np.array([0, 1])) == pytest.approx((expected + expected + 1) / 2)


def test_combine_adds_the_bias() -> None:
    c = {"a": np.array([[1.0, 2.0]]), "v": np.array([[3.0, -1.0]])}
    out = remedies.combine(c, np.array([0.5, -0.5]), {"a": 2.0, "v": np.array([1.0, 3.0])})
    np.testing.assert_allclose(out, [[2 + 3 + 0.5, 4 - 3 - 0.5]])


def test_standardise_weights_are_inverse_stds() -> None:
    c = {"a": np.array([[1.0, 3.0], [1.0, 3.0]]), "v": np.array([[0.0, 4.0], [4.0, 0.0]])}
    assert remedies.standardise_weights(c) == {"a": pytest.approx(1.0), "v": pytest.approx(0.5)}


def test_norm_equalisation_by_hand_below_unit_norms() -> None:
    rows = {"a": np.array([0.2, 0.4, 0.1]), "v": np.array([0.6, 0.2, 0.3])}
    per_class = remedies.norm_equalisation(rows, per_class=True)
    mean = np.array([0.4, 0.3, 0.2])
    np.testing.assert_allclose(per_class["a"], mean / rows["a"])
    np.testing.assert_allclose(per_class["v"], mean / rows["v"])
    overall = remedies.norm_equalisation(rows, per_class=False)
    fa, fv = math.sqrt(0.04 + 0.16 + 0.01), math.sqrt(0.36 + 0.04 + 0.09)
    assert overall == {"a": pytest.approx((fa + fv) / 2 / fa), "v": pytest.approx((fa + fv) / 2 / fv)}


def test_temperature_weights_are_the_grid_argmin() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 40)
    val = {"a": rng.normal(size=(40, 3)) * 4 + 3 * np.eye(3)[labels], "v": rng.normal(size=(40, 3)) * 0.3}
    bias = np.array([0.1, -0.2, 0.0])
    grid = np.array([0.5, 1.0, 2.0, 4.0])
    best = min((nll_by_hand(val["a"] / ta + val["v"] / tv + bias, labels), ta, tv) for ta in grid for tv in grid)
    got = remedies.temperature_weights(val, bias, labels, grid)
    assert got == {"a": pytest.approx(1 / best[1]), "v": pytest.approx(1 / best[2])}
    assert got != {"a": 1.0, "v": 1.0}
    # A modality that contributes nothing ties on every temperature: the first (smallest) T is kept.
    zero = {"a": val["a"], "v": np.zeros((40, 3))}
    assert remedies.temperature_weights(zero, bias, labels, grid)["v"] == pytest.approx(1 / 0.5)


def test_branch_temperatures_recover_each_branchs_own_optimum() -> None:
    # Two classes, four samples, labels 0, 0, 0, 1: a branch whose logits are the same z on every sample has
    # NLL -3/4 log s(m) - 1/4 log s(-m) in its margin m = z_0 - z_1 (s the logistic), least at s(m) = 3/4,
    # m = log 3. With b = (0.5, -0.5) over M = 2 branches, each branch's share b/2 adds 0.5 to its margin:
    # C_m = (a_m, 0) with a_m / T_m + 0.5 = log 3 makes T_m its optimum exactly. T_a = 2, T_v = 0.5.
    labels = np.array([0, 0, 0, 1])
    bias = np.array([0.5, -0.5])
    a_audio, a_visual = 2.0 * (math.log(3) - 0.5), 0.5 * (math.log(3) - 0.5)
    val = {"audio": np.tile([a_audio, 0.0], (4, 1)), "visual": np.tile([a_visual, 0.0], (4, 1))}
    grid = np.array([0.25, 0.5, 1.0, 2.0, 4.0])

    def branch_nll(c: np.ndarray, t: float) -> float:
        return nll_by_hand(c / t + bias / 2, labels)

    for m, t in (("audio", 2.0), ("visual", 0.5)):          # the optimum, by hand, is the one on the grid
        assert min(grid, key=lambda g, m=m: branch_nll(val[m], g)) == t
    got = remedies.branch_temperature_weights(val, bias, labels, grid)
    assert got == {"audio": pytest.approx(1 / 2.0), "visual": pytest.approx(1 / 0.5)}
    # Each branch on its own: the joint fit of the fused NLL lands elsewhere (a_a / 2 + a_v / 0.5 + 1 != log 3).
    assert remedies.temperature_weights(val, bias, labels, grid) != got
    assert remedies.REMEDIES["calibrate_branches"](val, bias, labels, {}) == remedies.branch_temperature_weights(
        val, bias, labels)


def test_calibrate_branches_fuses_each_branch_scaled_by_its_own_temperature() -> None:
    # The remedy's weights are 1/T_m (T_a = 2, T_v = 0.5 as above); fused: C_a / 2 + C_v / 0.5 + b, the bias
    # whole and unscaled, which is the sum of the calibrated branches C_m / T_m + b/2.
    labels = np.array([0, 0, 0, 1])
    bias = np.array([0.5, -0.5])
    val = {"audio": np.tile([2.0 * (math.log(3) - 0.5), 0.0], (4, 1)),
           "visual": np.tile([0.5 * (math.log(3) - 0.5), 0.0], (4, 1))}
    alpha = remedies.branch_temperature_weights(val, bias, labels, np.array([0.25, 0.5, 1.0, 2.0, 4.0]))
    test = {"audio": np.array([[1.0, -2.0], [0.4, 3.0]]), "visual": np.array([[0.3, 0.1], [-1.0, 0.6]])}
    by_hand = np.array([[1.0 / 2 + 0.3 / 0.5 + 0.5, -2.0 / 2 + 0.1 / 0.5 - 0.5],
                        [0.4 / 2 - 1.0 / 0.5 + 0.5, 3.0 / 2 + 0.6 / 0.5 - 0.5]])
    np.testing.assert_allclose(remedies.combine(test, bias, alpha), by_hand)
    branches = remedies.branch_logits(test, bias, alpha)
    np.testing.assert_allclose(branches["audio"], test["audio"] / 2 + bias / 2)
    np.testing.assert_allclose(branches["visual"], test["visual"] / 0.5 + bias / 2)
    np.testing.assert_allclose(branches["audio"] + branches["visual"], by_hand)
    np.testing.assert_allclose(remedies.branch_logits(test, bias)["visual"], test["visual"] + bias / 2)


def test_expected_calibration_error_by_hand() -> None:
    # 5 bins of width 0.2, right-closed: (0, .2], (.2, .4], (.4, .6], (.6, .8], (.8, 1].
    probs = np.array([[0.90, 0.05, 0.05],      # conf .90, label 0: right   -> bin 5
                      [0.85, 0.10, 0.05],      # conf .85, label 1: wrong   -> bin 5
                      [0.70, 0.20, 0.10],      # conf .70, label 0: right   -> bin 4
                      [0.10, 0.50, 0.40],      # conf .50, label 1: right   -> bin 3
                      [0.45, 0.35, 0.20],      # conf .45, label 2: wrong   -> bin 3
                      [0.40, 0.30, 0.30]])     # conf .40 on an edge, label 1: wrong -> bin 2, not 3
    labels = np.array([0, 1, 0, 1, 2, 1])
    # bin 5: acc 1/2, conf .875 (2 of 6); bin 4: 1 vs .7 (1); bin 3: 1/2 vs .475 (2); bin 2: 0 vs .4 (1).
    expected = (2 * abs(0.5 - 0.875) + abs(1 - 0.7) + 2 * abs(0.5 - 0.475) + abs(0 - 0.4)) / 6     # 0.25
    assert calibration.expected_calibration_error(probs, labels, bins=5) == pytest.approx(expected)
    assert expected == pytest.approx(0.25)
    # Not the unweighted mean over bins (0.275), nor left-closed bins (.40 with .50 and .45: 1.4 / 6).
    assert expected != pytest.approx((0.375 + 0.3 + 0.025 + 0.4) / 4)
    assert expected != pytest.approx((0.75 + 0.3 + 3 * abs(1 / 3 - 0.45) + 0) / 6)
    # One bin: |overall accuracy - mean confidence| = |3/6 - 3.8/6|.
    assert calibration.expected_calibration_error(probs, labels, bins=1) == pytest.approx(0.8 / 6)
    assert calibration.ECE_BINS == 15                          # Guo et al. 2017
    assert calibration.expected_calibration_error(probs, labels) == pytest.approx(
        (abs(1 - 0.9) + abs(0 - 0.85) + abs(1 - 0.7) + abs(1 - 0.5) + abs(0 - 0.45) + abs(0 - 0.4)) / 6)


def test_expected_calibration_error_keeps_the_lowest_bins_apart() -> None:
    # 31 classes (Kinetics-Sounds): a top probability can fall in the first bins. Confidences .05 (bin 1 of 15,
    # (0, 1/15]) right and .10 (bin 2) wrong: (|1 - .05| + |0 - .10|) / 2 = .525; bins 1 and 2 merged: .425.
    probs = np.full((2, 31), 0.0)
    probs[0], probs[1] = 0.95 / 30, 0.90 / 30
    probs[0, 3], probs[1, 7] = 0.05, 0.10
    assert calibration.expected_calibration_error(probs, np.array([3, 0])) == pytest.approx(0.525)


def ece_by_hand(logits: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Softmax, then per sample its bin ceil(conf * bins) (right-closed), then sum_b n_b / N |acc_b - conf_b|."""
    probs = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in logits]
    binned: dict[int, list[tuple[float, float]]] = {}
    for p, y in zip(probs, labels, strict=True):
        binned.setdefault(math.ceil(max(p) * bins), []).append((max(p), float(p.index(max(p)) == y)))
    return sum(len(v) / len(labels) * abs(sum(ok for _, ok in v) / len(v) - sum(c for c, _ in v) / len(v))
               for v in binned.values())


def test_branch_calibration_scores_each_branch_before_and_after_its_temperature() -> None:
    labels = np.array([0, 0, 0, 1])
    bias = np.array([0.5, -0.5])
    val = {"audio": np.tile([2.0 * (math.log(3) - 0.5), 0.0], (4, 1)),
           "visual": np.tile([0.5 * (math.log(3) - 0.5), 0.0], (4, 1))}
    test = {"audio": np.array([[3.0, -1.0], [0.5, 1.5], [2.0, 0.0]]),
            "visual": np.array([[0.2, 0.0], [0.0, 0.1], [0.3, 0.3]])}
    test_labels = np.array([0, 1, 1])
    rows = calibration.branch_calibration(val, test, bias, labels, test_labels)
    assert [r["modality"] for r in rows] == ["audio", "visual"]
    for row in rows:
        m = row["modality"]
        # T_m: the grid point with the least validation NLL of the branch alone, C_m / T + b/2.
        fitted = min(remedies.TEMPERATURE_GRID, key=lambda g, m=m: nll_by_hand(val[m] / g + bias / 2, labels))
        assert row["temperature"] == pytest.approx(fitted)
        for suffix, logits in (("", test[m] + bias / 2), ("_calibrated", test[m] / fitted + bias / 2)):
            assert row[f"test_nll{suffix}"] == pytest.approx(nll_by_hand(logits, test_labels))
            assert row[f"test_ece{suffix}"] == pytest.approx(ece_by_hand(logits, test_labels))
    # Audio as trained, margins (b/2 adds 0.5): 4.5 (right), -0.5 (class 1, right), 2.5 (class 0, wrong); each
    # confidence s(|margin|) in a bin of its own, so ECE = mean |right - confidence|.
    conf = [1 / (1 + math.exp(-x)) for x in (4.5, 0.5, 2.5)]
    assert rows[0]["test_ece"] == pytest.approx((1 - conf[0] + 1 - conf[1] + conf[2]) / 3)


def class_weight_objective(theta: np.ndarray, c: np.ndarray, bias: np.ndarray, labels: np.ndarray,
                           l2: float) -> float:
    logits = sum(np.exp(theta[m]) * c[m] for m in range(len(c))) + bias
    return nll_by_hand(logits, labels) + l2 * float((theta**2).sum())


def test_fit_class_weights_reaches_the_penalised_optimum() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    c = np.stack([rng.normal(size=(60, 3)) + 1.5 * np.eye(3)[labels], rng.normal(size=(60, 3)) * 2])
    bias = np.array([0.3, 0.0, -0.3])
    alpha = remedies.fit_class_weights({"a": c[0], "v": c[1]}, bias, labels, l2=0.05, iters=20000, tol=1e-14)
    theta = np.log(np.stack([alpha["a"], alpha["v"]]))
    best = class_weight_objective(theta, c, bias, labels, 0.05)
    # Stationary for the objective written out here: no coordinate step of 1e-3 improves it.
    for i, j in product(range(2), range(3)):
        for step in (1e-3, -1e-3):
            moved = theta.copy()
            moved[i, j] += step
            assert class_weight_objective(moved, c, bias, labels, 0.05) > best - 1e-6
    assert best < class_weight_objective(np.zeros((2, 3)), c, bias, labels, 0.05) - 0.01
    # The penalty pulls towards alpha = 1: a larger l2 keeps the weights closer to 1.
    tight = remedies.fit_class_weights({"a": c[0], "v": c[1]}, bias, labels, l2=5.0)
    assert np.abs(np.log(tight["v"])).max() < np.abs(theta[1]).max()


def test_fit_class_weights_on_large_logits() -> None:
    labels = np.array([0, 1, 0, 1])
    c = {"a": np.array([[400.0, 399.0], [399.0, 400.0], [400.5, 399.0], [398.0, 400.0]]),
         "v": np.array([[-500.0, -500.5], [-500.0, -499.0], [-500.0, -501.0], [-499.0, -500.0]])}
    alpha = remedies.fit_class_weights(c, np.zeros(2), labels, iters=50)
    assert all(np.isfinite(w).all() for w in alpha.values())


# --- metrics and capability ------------------------------------------------------------------------------------


def test_accuracy_and_macro_f1_by_hand() -> None:
    assert math.isnan(mt.accuracy(np.array([], int), np.array([], int)))
    # class 0: F1 1; class 1 absent from both (skipped, the classes after it still count); classes 2 and 4:
    # tp 0, fp 1, fn 1 -> F1 0 (they count); class 3: F1 1. Mean over 4 classes: 0.5.
    pred, lab = np.array([0, 2, 3, 4]), np.array([0, 4, 3, 2])
    assert mt.macro_f1(pred, lab, 5) == pytest.approx(0.5)
    # class 0: tp 1, fp 2 -> 2/4; class 2: fn 1 -> 0; class 3: tp 1, fn 1 -> 2/3.
    assert mt.macro_f1(np.array([0, 0, 3, 0]), np.array([0, 2, 3, 3]), 4) == pytest.approx((0.5 + 0 + 2 / 3) / 3)
    assert math.isnan(mt.macro_f1(np.array([], int), np.array([], int), 3))


def test_human_accuracy_counts_a_missing_vote_as_wrong() -> None:
    table = pd.DataFrame({"FileName": ["1001_DFA_ANG_XX", "1001_DFA_HAP_XX"],
                          "VoiceVote": ["A", None], "FaceVote": ["A:H", "H"], "MultiModalVote": ["N", "H"]})
    out = capability.human_accuracy(table).set_index(["class", "modality"])["accuracy"]
    assert out[("ANG", "audio")] == 1.0 and out[("HAP", "audio")] == 0.0
    assert out[("ANG", "visual")] == 0.5 and out[("HAP", "audio+visual")] == 1.0


# --- findings --------------------------------------------------------------------------------------------------


def test_late_rise_is_the_tail_slope_times_its_span() -> None:
    assert findings.late_rise([0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]) == pytest.approx(2.0)   # last 3: 2, 3, 4 -> 2
    assert findings.late_rise(np.arange(12.0)) == pytest.approx(2.0)
    # 16 epochs: the last 4 (a quarter): 0, 0, 0, 3 -> slope 0.9 over a span of 3.
    assert findings.late_rise([1.0] * 12 + [0.0, 0.0, 0.0, 3.0]) == pytest.approx(2.7)
    assert findings.late_rise([0.0, 1.0, 2.0]) == pytest.approx(2.0)
    assert math.isnan(findings.late_rise([0.0, 1.0]))


def test_test_summary_by_hand() -> None:
    values = np.array([0.6, 0.8, None, 0.7])
    got = findings._test(values, null=0.5)
    low, high = stats.t_interval(np.array([0.6, 0.8, 0.7]))
    assert got == {"effect": pytest.approx(0.2), "ci_low": pytest.approx(low - 0.5),
                   "ci_high": pytest.approx(high - 0.5),
                   "se": pytest.approx(0.1 / math.sqrt(3)), "p": pytest.approx(t2_p(0.2 / (0.1 / math.sqrt(3)))),
                   "n_seeds": 3}
    two = findings._test(np.array([0.1, 0.3]))
    assert two["se"] == pytest.approx(0.1)
    one = findings._test(np.array([0.4]))
    assert one["effect"] == pytest.approx(0.4) and math.isnan(one["se"]) and one["n_seeds"] == 1
    empty = findings._test(np.array([np.nan]))
    assert math.isnan(empty["effect"]) and math.isnan(empty["ci_low"]) and math.isnan(empty["ci_high"])


def test_verdict_reasons() -> None:
    base = {"effect": 0.2, "p": 0.01, "n_seeds": 3}
    assert findings._verdict(base, False, "up", "down") == base | {
        "verdict": "inconclusive", "reason": "a run did not converge (see Convergence)"}
    assert findings._verdict(base | {"n_seeds": 2}, True, "up", "down") == base | {
        "n_seeds": 2, "verdict": "inconclusive", "reason": "2 seeds (a verdict needs 3)"}
    assert findings._verdict(base | {"p": 0.05}, True, "up", "down") == base | {
        "p": 0.05, "verdict": "inconclusive", "reason": "p = 0.05 >= 0.05"}
    assert findings._verdict(base | {"p": float("nan")}, True, "up", "down")["verdict"] == "inconclusive"
    assert findings._verdict(base, True, "up", "down") == base | {"verdict": "supported", "reason": "up"}
    assert findings._verdict(base | {"effect": 0.0}, True, "up", "down", ("A", "B")) == base | {
        "effect": 0.0, "verdict": "B", "reason": "down"}


def test_dominance_verdict_by_hand() -> None:
    # Shares of audio per seed: 0.7, 0.72, 0.68: mean 0.7, sd 0.02, t = 0.2 / (0.02 / sqrt 3) on 2 df.
    values = np.array([[7.0, 3.0], [7.2, 2.8], [6.8, 3.2]])
    got = findings.dominance_verdict(values, ["audio", "visual"])
    p = t2_p(0.2 / (0.02 / math.sqrt(3)))
    assert got == {"leans": "audio", "share": pytest.approx(0.7), "p": pytest.approx(p), "n_seeds": 3,
                   "se": pytest.approx(0.02 / math.sqrt(3)), "verdict": "audio",
                   "shares": {"audio": pytest.approx(0.7), "visual": pytest.approx(0.3)}}
    assert findings.dominance_verdict(values, ["audio", "visual"], margin=0.25)["verdict"] == "inconclusive"
    clipped = findings.dominance_verdict(np.array([[1.0, -1.0], [0.0, 0.0], [1.0, 1.0]]), ["a", "v"])
    assert clipped["shares"] == {"a": pytest.approx((1 + 0.5 + 0.5) / 3), "v": pytest.approx(1 / 3)}
    even = findings.dominance_verdict(np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]), ["a", "v"])
    assert even["leans"] == "balanced" and even["verdict"] == "inconclusive"
    # p just under 0.05 and the share exactly at 1/M + margin: no verdict (both strict).
    ints = findings.dominance_verdict([[3, 1], [3, 1], [3, 1]], ["a", "v"], margin=0.25)
    assert ints["p"] == 0.0 and ints["share"] == 0.75 and ints["verdict"] == "inconclusive"


def test_convergence_table_by_hand() -> None:
    rows = []
    for seed, tail in ((0, [0.5, 0.5, 0.5, 0.53]), (1, [0.5, 0.5, 0.5, 0.5])):
        rows += [{"method": "m", "seed": seed, "epoch": e, "train_acc": v, "val_acc": np.nan}
                 for e, v in enumerate([0.1] * 12 + tail)]
    rows += [{"method": "a", "seed": 0, "epoch": e, "train_acc": 0.2, "val_acc": np.nan} for e in range(2)]
    table = findings.convergence(pd.DataFrame(rows))
    assert list(table["method"]) == ["a", "m"]
    m = table.set_index("method").loc["m"]
    # Seed-mean tail 0.5, 0.5, 0.5, 0.515: least-squares slope 0.0045 over a span of 3.
    assert m["metric"] == "train_acc" and m["epochs"] == 16
    assert m["late_rise"] == pytest.approx(0.0135) and m["max_run_late_rise"] == pytest.approx(0.027)
    assert bool(m["converged"]) is True
    a = table.set_index("method").loc["a"]
    assert math.isnan(a["late_rise"]) and not a["converged"]
    at_limit = pd.DataFrame([{"method": "x", "seed": 0, "epoch": e, "val_acc": v}
                             for e, v in enumerate([0.0, 0.0, 0.0, 0.0, 0.01, 0.02])])
    assert not findings.convergence(at_limit)["converged"].iloc[0]               # a rise of exactly 0.02


def runs_table() -> pd.DataFrame:
    rows = []
    for method, order, centred, decides, norm_ratio, weight in (
            ("baseline", "audio+visual", [0.80, 0.82, 0.78], [0.9, 0.8, 0.7], [2.0, 3.0, 4.0], [0.7, 0.8, 0.75]),
            ("ogm_ge", "audio+visual", [np.nan] * 3, [0.6, 0.5, 0.4], [1.0, 1.0, 1.0], [np.nan] * 3),
            ("unimodal_audio", "audio", [np.nan] * 3, [np.nan] * 3, [np.nan] * 3, [np.nan] * 3)):
        rows += [{"method": method, "seed": s, "modalities": order, "centred_logit_share": centred[s],
                  "decides_share": decides[s], "feature_norm_ratio": norm_ratio[s], "weight_share": weight[s]}
                 for s in range(3)]
    return pd.DataFrame(rows)


def test_persistence_falls_back_to_decisions_by_hand() -> None:
    rows = findings.persistence_findings(runs_table(), "visual", "audio", {"baseline": True, "ogm_ge": True})
    by = {(r["claim"], r["subject"]): r for r in rows}
    assert [(r["claim"], r["subject"]) for r in rows] == [
        ("1. the bias persists", "baseline"), ("1. the bias persists", "ogm_ge"),
        ("1. shift from the baseline", "ogm_ge")]
    base = by[("1. the bias persists", "baseline")]
    assert base["evidence"] == "visual's centred logit share - 0.5"
    assert base["effect"] == pytest.approx(0.2 - 0.5) and base["verdict"] == "not supported"
    assert base["reason"] == "visual no longer dominates"
    ogm = by[("1. the bias persists", "ogm_ge")]
    assert ogm["evidence"] == "visual's share of decisions - 0.5" and ogm["effect"] == pytest.approx(0.0)
    shift = by[("1. shift from the baseline", "ogm_ge")]
    # Visual's share of decisions: OGM-GE 0.4, 0.5, 0.6 minus the baseline's 0.1, 0.2, 0.3: +0.3 on every seed.
    assert shift["evidence"] == "visual's share of decisions minus the baseline's, same seeds"
    assert shift["effect"] == pytest.approx(0.3) and shift["p"] < 1e-12
    assert shift["verdict"] == "towards visual"
    assert shift["reason"] == "visual's share is larger than under the baseline"
    assert findings.persistence_findings(runs_table(), "visual", "audio", {"ogm_ge": True})[1]["verdict"] not in (
        "supported", "not supported")


def test_persistence_shift_keeps_the_measure_when_the_baseline_has_it() -> None:
    runs = runs_table()
    runs.loc[runs["method"] == "ogm_ge", "centred_logit_share"] = [0.70, 0.73, 0.67]
    rows = findings.persistence_findings(runs, "audio", "visual", {"baseline": True, "ogm_ge": True})
    shift = [r for r in rows if r["claim"] == "1. shift from the baseline"][0]
    assert shift["evidence"] == "audio's centred logit share minus the baseline's, same seeds"
    assert shift["effect"] == pytest.approx(-0.10) and shift["verdict"] == "towards visual"
    assert shift["reason"] == "audio's share is smaller than under the baseline"


def test_source_findings_by_hand() -> None:
    rows = findings.source_findings(runs_table(), "audio", {"baseline": True})
    norm, weight = rows
    logs = np.log([2.0, 3.0, 4.0])
    assert norm == {"claim": "2. from feature-norm disparity", "subject": "baseline",
                    "evidence": "log(||f_audio|| / ||f_other||), mean over test clips",
                    **findings._test(logs), "verdict": "supported", "reason": "audio's features are larger"}
    assert weight["claim"] == "2. from decision-weight disparity" and weight["subject"] == "baseline"
    assert weight["evidence"] == "audio's share of ||W|| - 0.5" and weight["effect"] == pytest.approx(0.25)
    assert weight["reason"] == "audio's decision weights are larger" and weight["verdict"] == "supported"
    visual = findings.source_findings(runs_table(), "visual", {"baseline": False})
    assert visual[0]["effect"] == pytest.approx(-logs.mean()) and visual[0]["verdict"] == "inconclusive"
    assert visual[1]["effect"] == pytest.approx(-0.25)
    ok = findings.source_findings(runs_table(), "visual", {"baseline": True})
    assert ok[0]["reason"] == "visual's features are smaller"
    assert ok[1]["reason"] == "visual's decision weights are smaller"
    no_weights = runs_table().assign(weight_share=np.nan)
    assert len(findings.source_findings(no_weights, "audio", {"baseline": True})) == 1
    assert findings.source_findings(runs_table()[lambda t: t["method"] != "baseline"], "audio", {}) == []


def per_class_table() -> pd.DataFrame:
    acc = {"unimodal_audio": {"NEU": [0.9, 0.8], "SAD": [0.3, 0.4], "FEA": [0.5, 0.5]},
           "unimodal_visual": {"NEU": [0.2, 0.3], "SAD": [0.6, 0.7], "FEA": [0.6, 0.6]},
           "baseline": {"NEU": [0.9, 0.9, 0.9], "SAD": [0.4, 0.5, 0.6], "FEA": [0.5, 0.6, 0.4]},
           "adaptive_fusion": {"NEU": [0.9, 0.9, 0.9], "SAD": [0.7, 0.8, 0.9], "FEA": [0.6, 0.8, 0.7]}}
    return pd.DataFrame([{"method": m, "seed": s, "class": c, "acc": a}
                         for m, per in acc.items() for c, seeds in per.items() for s, a in enumerate(seeds)])


def test_weak_favoured_classes_by_hand() -> None:
    assert findings.weak_favoured_classes(per_class_table(), "visual", "audio") == ["SAD", "FEA"]
    assert findings.weak_favoured_classes(per_class_table(), "audio", "visual") == ["NEU"]
    only_audio = per_class_table()[lambda t: t["method"] != "unimodal_visual"]
    assert findings.weak_favoured_classes(only_audio, "visual", "audio") == []
    baseline_only = per_class_table()[lambda t: t["method"] == "baseline"]
    assert findings.weak_favoured_classes(baseline_only, "visual", "audio") == []


def test_allocation_findings_by_hand() -> None:
    classes = ["NEU", "SAD", "FEA"]
    remedy = pd.DataFrame([{"method": "baseline", "remedy": "class_weights", "seed": s, "class_acc_0": 0.0,
                            "class_acc_1": sad, "class_acc_2": fea}
                           for s, sad, fea in ((0, 0.5, 0.6), (1, 0.6, 0.6), (2, 0.7, 0.6))]
                          + [{"method": "baseline", "remedy": "temperature", "seed": 0, "class_acc_0": 1.0,
                              "class_acc_1": 1.0, "class_acc_2": 1.0}])
    rows = findings.allocation_findings(per_class_table(), remedy, classes, "visual", "audio",
                                        {"baseline": True, "adaptive_fusion": True}, {"SAD": 10, "FEA": 7, "NEU": 99})
    claim = "3. capability-aware allocation helps where the weak modality is more capable"
    # Baseline on SAD, FEA per seed: 0.45, 0.55, 0.5. Remedy: 0.55, 0.6, 0.65 -> +0.10, +0.05, +0.15.
    weights, learnt = rows
    expected = findings._test(np.array([0.10, 0.05, 0.15]))
    assert weights == {"claim": claim, "subject": "remedy: per-class modality weights fit on validation",
                       "evidence": "accuracy on SAD, FEA (17 test clips) minus the baseline's, same seeds",
                       **{k: pytest.approx(v) for k, v in expected.items()}, "verdict": "inconclusive",
                       "reason": f"p = {weights['p']:.3g} >= 0.05"}
    assert weights["effect"] == pytest.approx(0.10)
    # Adaptive fusion: 0.65, 0.8, 0.8 -> +0.2, +0.25, +0.3.
    assert learnt["subject"] == "method: adaptive_fusion (allocation learnt in training)"
    assert learnt["effect"] == pytest.approx(0.25) and learnt["n_seeds"] == 3
    assert learnt["verdict"] == "supported" and learnt["reason"] == "higher accuracy on SAD, FEA"
    not_converged = findings.allocation_findings(per_class_table(), remedy, classes, "visual", "audio",
                                                 {"baseline": True}, {"SAD": 10, "FEA": 7})
    assert [r["verdict"] for r in not_converged] == ["inconclusive", "inconclusive"]
    assert not_converged[1]["reason"] == "a run did not converge (see Convergence)"
    worse = findings.allocation_findings(per_class_table(), remedy.assign(class_acc_1=0.0, class_acc_2=0.1), classes,
                                         "visual", "audio", {"baseline": True}, {})
    assert worse[0]["verdict"] == "not supported" and worse[0]["reason"] == "lower accuracy on SAD, FEA"
    assert "(0 test clips)" in worse[0]["evidence"]
    no_remedy = findings.allocation_findings(per_class_table(), pd.DataFrame(), classes, "visual", "audio",
                                             {"baseline": True, "adaptive_fusion": True}, {})
    assert [r["subject"] for r in no_remedy] == ["method: adaptive_fusion (allocation learnt in training)"]
    no_method = findings.allocation_findings(per_class_table()[lambda t: t["method"] != "adaptive_fusion"], remedy,
                                             classes, "visual", "audio", {"baseline": True}, {})
    assert [r["subject"] for r in no_method] == ["remedy: per-class modality weights fit on validation"]
    nothing = findings.allocation_findings(per_class_table(), remedy, classes, "audio", "visual", {}, {})
    assert nothing == findings.allocation_findings(per_class_table(), remedy, classes, "audio", "visual", {}, {})
    assert nothing[0]["subject"] == "remedy: per-class modality weights fit on validation"
    none = findings.allocation_findings(per_class_table()[lambda t: t["method"] == "baseline"], remedy, classes,
                                        "visual", "audio", {}, {})
    assert none == [{"claim": claim, "subject": "-",
                     "evidence": "no class where the weaker modality's unimodal model is more accurate",
                     "verdict": "inconclusive", "reason": "nothing to test: no weak-favoured class", "n_seeds": 0}]


def test_planted_findings_rows() -> None:
    rows = findings.planted_findings({
        "dominant": {"recovered": True, "evidence": "e1", "reason": "r1"},
        "ordering": {"recovered": False, "evidence": "e2", "reason": "r2", "labels": ("found", "missed")}})
    assert rows == [{"claim": "planted truth", "subject": "dominant", "evidence": "e1", "verdict": "recovered",
                     "reason": "r1"},
                    {"claim": "planted truth", "subject": "ordering", "evidence": "e2", "verdict": "missed",
                     "reason": "r2"}]
    assert findings.planted_findings({"x": {"recovered": False, "evidence": "", "reason": ""}})[0]["verdict"] == (
        "not recovered")


def test_decision_share_flips_for_the_second_modality() -> None:
    group = pd.DataFrame({"seed": [0, 1], "modalities": ["audio+visual"] * 2, "m": [0.7, 0.2]})
    assert findings.decision_share(group, "audio", "m").tolist() == [0.7, 0.2]
    assert findings.decision_share(group, "visual", "m").tolist() == pytest.approx([0.3, 0.8])


# --- planted truths --------------------------------------------------------------------------------------------


def test_expected_accuracy_is_the_logistic_by_hand() -> None:
    curve = planted.Curve(threshold_db=2.0, width_db=4.0)
    got = planted.expected_accuracy(np.array([2.0, 6.0, -2.0]), curve, 4)
    s = 1 / (1 + math.exp(-1))
    np.testing.assert_allclose(got, [0.25 + 0.75 * 0.5, 0.25 + 0.75 * s, 0.25 + 0.75 * (1 - s)])


def test_more_capable_overall_uses_the_tie_margin() -> None:
    synth = {"audio_snr_db": -19.5, "visual_snr_db": 7.0}       # both at their thresholds: a tie at any margin
    assert planted.planted_overall_dominant(synth, 6) == "tie"
    curves = {"audio": planted.Curve(0.0, 1.0), "visual": planted.Curve(0.0, 1.0)}
    synth = {"audio_snr_db": 0.5, "visual_snr_db": 0.0}          # diff 0.75 (sigmoid(0.5) - 0.5) = 0.0934
    assert planted.planted_overall_dominant(synth, 2, curves=curves) == "tie"
    assert planted.planted_overall_dominant(synth, 2, tie_margin=0.05, curves=curves) == "audio"


def test_average_ranks_are_stable_on_ties() -> None:
    np.testing.assert_array_equal(planted.average_ranks([3, 1, 3, 2, 3]), [4.0, 1.0, 4.0, 2.0, 4.0])


def test_spearman_rejects_non_finite_and_constant_sides() -> None:
    with pytest.raises(ValueError, match="^spearman: values must be finite$"):
        planted.spearman(np.array([1.0, np.nan, 2.0]), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="^spearman: values must be finite$"):
        planted.spearman(np.array([1.0, 2.0, 3.0]), np.array([1.0, np.inf, 2.0]))
    for a, b in (([1.0, None, 2.0], [1.0, 2.0, 3.0]), ([1.0, 2.0, 3.0], [1.0, None, 2.0])):   # None: missing
        with pytest.raises(ValueError, match="^spearman: values must be finite$"):
            planted.spearman(a, b)
    assert math.isnan(planted.spearman(np.array([1.0, 1.0]), np.array([1.0, 2.0])))
    # Ranks centred: a = (-1, 0, 1), b = (0.5, -1, 0.5): sum 0 -> rho 0; two values: +-1 with denom 1 < 1.
    assert planted.spearman(np.array([0.0, 1.0, 2.0]), np.array([1.0, 0.0, 1.0])) == pytest.approx(0.0)
    assert planted.spearman(np.array([0.0, 1.0]), np.array([5.0, 4.0])) == pytest.approx(-1.0)


def test_under_used_classes_at_the_boundaries() -> None:
    capable = np.array(["audio", "visual", "tie"])
    shares = np.array([[0.2, 0.5, 0.1], [0.3, 0.5, 0.2], [0.25, 0.5, 0.1]])
    assert planted.under_used_classes(capable, shares).tolist() == [0]
    with pytest.raises(ValueError, match=r"\(3,\) labels but \(2,\) shares per seed"):
        planted.under_used_classes(capable, shares[:, :2])
    assert planted.under_used_classes(capable, shares[:2]).dtype == np.int64
    # p exactly at alpha: not under-used (p < alpha). Visual's share 0.3, 0.2, 0.25; audio's further from 0.5.
    edge_shares = np.array([[0.1, 0.7, 0.5], [0.2, 0.8, 0.5], [0.15, 0.75, 0.5]])
    p = stats.t_test_p((1 - edge_shares[:, 1]) - 0.5)
    assert planted.under_used_classes(capable, edge_shares, alpha=p).tolist() == [0]
    # A missing seed (None) is left out of the test.
    assert planted.under_used_classes(capable, [[0.2, 0.5, 0.1], [None, 0.5, 0.2], [0.3, 0.5, 0.1],
                                                [0.25, 0.5, 0.1]]).tolist() == [0]


def test_recovery_fields_by_hand() -> None:
    synth = {"audio_snr_db": -19.5, "visual_snr_db": 7.0,
             "audio_class_snr_offset_db": [10.0, -10.0, 0.0], "visual_class_snr_offset_db": [0.0, 0.0, 10.0]}
    rec = planted.recovery(synth, {"audio": [0.9, 0.2, 0.5], "visual": [0.5, 0.6, 0.8]}, tie_margin=0.1,
                           rank_threshold=0.5)
    assert rec.planted_more_capable == ["audio", "visual", "visual"]
    assert rec.measured_more_capable == ["audio", "visual", "visual"]
    assert rec.tie_margin == 0.1 and rec.rank_threshold == 0.5
    assert rec.rank_correlation == pytest.approx(1.0) and rec.ordering_recovered is True
    assert rec.measured_accuracy == {"audio": [0.9, 0.2, 0.5], "visual": [0.5, 0.6, 0.8]}
    acc = planted.planted_accuracy(synth, 3)
    assert rec.planted_accuracy == {m: acc[m].tolist() for m in ("audio", "visual")}
    # measured_dominant: mean diff (0.4 - 0.4 - 0.3) / 3 = -0.1 -> tie at 0.15, visual at 0.05.
    assert rec.measured_dominant == "tie"
    assert planted.recovery(synth, {"audio": [0.9, 0.2, 0.5], "visual": [0.5, 0.6, 0.8]},
                            tie_margin=0.05).measured_dominant == "visual"
    # rho exactly at the threshold counts as recovered.
    assert planted.recovery(synth, {"audio": [0.9, 0.2, 0.5], "visual": [0.5, 0.6, 0.8]},
                            rank_threshold=1.0).ordering_recovered is True
    with pytest.raises(ValueError, match="recovery: per-class accuracies of one length expected"):
        planted.recovery(synth, {"audio": [0.9, 0.3, 0.5], "visual": [0.5, 0.6]})
    # A plan whose difference varies by under 1 (but not at all by under 1e-9) still has an ordering.
    small = {"audio_snr_db": -19.5, "visual_snr_db": 7.0, "audio_class_snr_offset_db": [0.0, 0.1, 0.0]}
    assert planted.recovery(small, {"audio": [0.5, 0.6, 0.5], "visual": [0.5, 0.5, 0.5]}).ordering_recovered is True
    uniform = planted.recovery({"audio_snr_db": -19.5, "visual_snr_db": 7.0},
                               {"audio": [0.5, 0.6, 0.5], "visual": [0.5, 0.5, 0.5]})
    assert uniform.ordering_recovered is None and uniform.as_dict()["rank_correlation"] is None
    assert rec.as_dict()["rank_correlation"] == pytest.approx(1.0)


def test_recovery_uses_the_given_tie_margin_for_planted_and_measured_labels() -> None:
    # Same curve for both: planted accuracy 1/2 + 1/2 sigmoid(snr): audio at +0.5 dB, visual at 0 -> diff 0.0612.
    curves = {"audio": planted.Curve(0.0, 1.0), "visual": planted.Curve(0.0, 1.0)}
    synth = {"audio_snr_db": 0.5, "visual_snr_db": 0.0, "audio_class_snr_offset_db": [0.0, 4.0]}
    diff = 0.5 * (1 / (1 + math.exp(-0.5)) - 0.5)
    rec = planted.recovery(synth, {"audio": [0.56, 0.9], "visual": [0.5, 0.5]}, tie_margin=0.05, curves=curves)
    assert diff == pytest.approx(0.0612, abs=1e-4)
    assert rec.planted_more_capable == ["audio", "audio"] and rec.measured_more_capable == ["audio", "audio"]
    default = planted.recovery(synth, {"audio": [0.56, 0.9], "visual": [0.5, 0.5]}, curves=curves)
    assert default.planted_more_capable == ["tie", "audio"] and default.measured_more_capable == ["tie", "audio"]


def test_recovery_treats_a_plan_varying_under_1e_9_as_uniform() -> None:
    synth = {"audio_snr_db": -19.5, "visual_snr_db": 7.0, "audio_class_snr_offset_db": [0.0, 1e-12, 0.0]}
    rec = planted.recovery(synth, {"audio": [0.5, 0.6, 0.5], "visual": [0.5, 0.5, 0.5]})
    assert math.isnan(rec.rank_correlation) and rec.ordering_recovered is None


def test_class_offsets_are_floats() -> None:
    out = planted.class_offsets({"audio_class_snr_offset_db": [1, 2]}, "audio", 2)
    assert out.dtype == float and out.tolist() == [1.0, 2.0]
    with pytest.raises(ParamsError):
        planted.class_offsets({"audio_class_snr_offset_db": [1, 2]}, "audio", 3)


def test_persistence_needs_both_runs_converged_and_sorts_methods() -> None:
    runs = runs_table()
    runs = pd.concat([runs[runs["method"] == "ogm_ge"].assign(method="pmr"), runs])      # pmr listed first
    for converged in ({"ogm_ge": True, "pmr": True}, {"baseline": True}, {}):
        rows = findings.persistence_findings(runs, "visual", "audio", converged)
        assert [r["subject"] for r in rows] == ["baseline", "ogm_ge", "ogm_ge", "pmr", "pmr"]
        for r in rows:
            ok = converged.get(r["subject"], False) and converged.get("baseline", False)
            assert (r["reason"] == "a run did not converge (see Convergence)") == (not ok)
    assert findings.source_findings(runs_table(), "audio", {})[0]["verdict"] == "inconclusive"


def test_persistence_after_external_pretraining_by_hand() -> None:
    runs = runs_table().assign(initialisation="random")
    runs.loc[runs["method"] == "baseline", "initialisation"] = "torchvision:resnet18"
    rows = findings.persistence_findings(runs, "audio", "visual", {"baseline": True, "ogm_ge": True})
    base, pre = rows[0], rows[1]
    assert pre == base | {"claim": "1. the bias persists after external pretraining",
                          "subject": "baseline: torchvision:resnet18"}
    mixed = runs.copy()
    mixed.loc[mixed.index[:1], "initialisation"] = "panns:cnn14"
    assert findings.persistence_findings(mixed, "audio", "visual", {})[1]["subject"] == (
        "baseline: panns:cnn14; torchvision:resnet18")
    plain = findings.persistence_findings(runs_table(), "audio", "visual", {})
    assert [r["claim"] for r in plain].count("1. the bias persists after external pretraining") == 0
    ogm_only = runs.assign(initialisation="random")
    ogm_only.loc[ogm_only["method"] == "ogm_ge", "initialisation"] = "x"
    assert "1. the bias persists after external pretraining" not in [
        r["claim"] for r in findings.persistence_findings(ogm_only, "audio", "visual", {})]


def test_bootstrap_ci_tail_on_many_distinct_values() -> None:
    values = np.random.default_rng(2).normal(size=12)
    means = np.random.default_rng(0).choice(values, size=(10000, 12), replace=True).mean(1)
    assert stats.bootstrap_ci(values, level=0.5) == pytest.approx((np.percentile(means, 25), np.percentile(means, 75)),
                                                                  abs=1e-12)


# --- cues (issue 21, 2026-12-03): the survivors of `mutmut run "avbias.analyse.cues*"` -------------------------------


def test_bayes_correct_with_more_cue_values_than_classes() -> None:
    """Two classes, three cue values (L is 2 x 3): the score has one column per class. Cue 2 is likelier under
    class 1 (0.5 vs 0.2), cue 0 under class 0, cue 1 tied (0.3 each): credit 1, 1, 1/2 for the true class, 0 if not."""
    lik = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    got = cues.bayes_correct([lik], [np.array([0, 2, 1, 1, 0])], np.array([0, 1, 0, 1, 1]))
    np.testing.assert_allclose(got, [1.0, 1.0, 0.5, 0.5, 0.0])


def test_bayes_correct_needs_one_cue_array_per_likelihood() -> None:
    lik = cues.cue_likelihood(np.array([0.9, 0.6]))
    with pytest.raises(ValueError):
        cues.bayes_correct([lik, lik], [np.array([0, 1])], np.array([0, 1]))


def test_bayes_correct_ties_only_at_floating_point_equality() -> None:
    """Scores 1e-7 apart relatively (0.5 vs 0.5000001), or 2e-10 apart absolutely (1e-10 vs 3e-10), are not a tie:
    the better class alone wins (np.isclose's defaults, rtol 1e-5 and atol 1e-8, would split the clip)."""
    near = np.array([[0.5, 0.5], [0.5000001, 0.4999999]])
    np.testing.assert_allclose(cues.bayes_correct([near], [np.array([0, 0])], np.array([1, 0])), [1.0, 0.0])
    tiny = np.array([[1e-10, 1 - 1e-10], [3e-10, 1 - 3e-10]])
    np.testing.assert_allclose(cues.bayes_correct([tiny], [np.array([0, 0])], np.array([1, 0])), [1.0, 0.0])
    even = cues.cue_likelihood(np.array([0.5, 0.5]))
    np.testing.assert_allclose(cues.bayes_correct([even], [np.array([0, 1])], np.array([0, 0])), [0.5, 0.5])


# --- remedies and stats (issue 21, 2026-12-03): survivors of `mutmut run "avbias.analyse.remedies*" ...stats*` ------


def test_log_softmax_by_hand_per_row() -> None:
    """Row by row: log p = z - log sum exp z. [0, ln 3] -> [-ln 4, ln 3 - ln 4]; [ln 2, 0] -> [ln 2 - ln 3, -ln 3].
    Logits of 1000 (exp overflows unless the row's max is subtracted) and rows 2000 apart (one row's exp underflows
    to 0 if the max of the whole array is subtracted) still give [-ln 2, -ln 2]."""
    ln2, ln3, ln4 = math.log(2), math.log(3), math.log(4)
    np.testing.assert_allclose(remedies.log_softmax(np.array([[0.0, ln3], [ln2, 0.0]])),
                               [[-ln4, ln3 - ln4], [ln2 - ln3, -ln3]], rtol=1e-12)
    np.testing.assert_allclose(remedies.log_softmax(np.array([[1000.0, 1000.0]])), [[-ln2, -ln2]], rtol=1e-12)
    np.testing.assert_allclose(remedies.log_softmax(np.array([[0.0, 0.0], [2000.0, 2000.0]])), [[-ln2, -ln2]] * 2,
                               rtol=1e-12)


def test_holm_caps_at_one_and_reads_missing_values() -> None:
    """[0.6, 0.9]: 0.6 x 2 = 1.2 is capped at 1, 0.9 x 1 then raised to it. A missing p (None, as a JSON null) is
    NaN: [0.01, None, 0.04] -> 0.01 x 2, 0.04 x 1."""
    np.testing.assert_allclose(stats.holm(np.array([0.6, 0.9])), [1.0, 1.0])
    np.testing.assert_allclose(stats.holm([0.01, None, 0.04]), [0.02, np.nan, 0.04])


@pytest.mark.parametrize("shift", [0.0, 1000.0])
def test_fit_class_weights_improves_on_large_logits_and_rows_far_apart(shift: float) -> None:
    """Logits of +-400..500 (exp overflows unless each row's max is subtracted), and with `shift` one row sits 1000
    above the others (their exp underflows to 0 if the max of all rows is subtracted): the fit still lowers the
    validation cross-entropy (written out here, stably) below that of alpha = 1 (0.1801: by 0.004 and 0.085)."""
    labels = np.array([0, 1, 0, 1])
    a = np.array([[400.0, 399.0], [399.0, 400.0], [400.5, 399.0], [398.0, 400.0]])
    a[0] += shift
    v = np.array([[-500.0, -500.5], [-500.0, -499.0], [-500.0, -501.0], [-499.0, -500.0]])
    c = np.stack([a, v])

    def nll(theta: np.ndarray) -> float:
        logits = np.exp(theta[0]) * a + np.exp(theta[1]) * v
        return float(np.mean([np.logaddexp(row[0], row[1]) - row[y] for row, y in zip(logits, labels, strict=True)]))

    alpha = remedies.fit_class_weights({"a": c[0], "v": c[1]}, np.zeros(2), labels, iters=50)
    theta = np.log(np.stack([alpha["a"], alpha["v"]]))
    assert np.isfinite(theta).all()
    assert nll(theta) + 1e-2 * (theta**2).sum() < nll(np.zeros((2, 2))) - 0.003


def test_fit_class_weights_follows_armijo_descent_by_hand() -> None:
    """The descent written out: L(theta) = mean CE of sum_m exp(theta_m) * c_m + bias, + l2 |theta|^2; its gradient
    dL/dtheta_mc = exp(theta_mc) mean_n (p_nc - y_nc) c_mnc + 2 l2 theta_mc. From theta = 0 and step 1: halve the
    step until L drops by at least 1e-4 step |g|^2 (Armijo; give up below 1e-12), take it, double the step; stop
    when the drop is below tol. Same path, same weights (the tests above check only the end point)."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 30)
    c = np.stack([rng.normal(size=(30, 3)) * 3 + 2 * np.eye(3)[labels], rng.normal(size=(30, 3))])
    bias, l2 = np.array([0.2, -0.1, 0.0]), 0.1
    onehot = np.eye(3)[labels]

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logits = np.exp(theta[0]) * c[0] + np.exp(theta[1]) * c[1] + bias
        log_p = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        g = np.stack([np.exp(theta[m]) * ((np.exp(log_p) - onehot) * c[m]).mean(0) for m in range(2)])
        return float(-(onehot * log_p).sum(1).mean() + l2 * (theta**2).sum()), g + 2 * l2 * theta

    for iters, tol in ((1, 1e-9), (3, 1e-9), (200, 1e-9)):
        theta, step, steps, halved = np.zeros((2, 3)), 1.0, [], 0
        loss, grad = loss_grad(theta)
        for _ in range(iters):
            while step > 1e-12:
                new_loss, new_grad = loss_grad(theta - step * grad)
                if new_loss <= loss - 1e-4 * step * (grad**2).sum():
                    break
                step, halved = step / 2, halved + 1
            steps.append(step)
            candidate = theta - step * grad
            if loss - new_loss < tol:
                theta = candidate
                break
            theta, loss, grad, step = candidate, new_loss, new_grad, step * 2
        alpha = remedies.fit_class_weights({"a": c[0], "v": c[1]}, bias, labels, l2=l2, iters=iters, tol=tol)
        np.testing.assert_allclose(np.log(alpha["a"]), theta[0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.log(alpha["v"]), theta[1], rtol=1e-9, atol=1e-12)
    assert halved and max(steps) > 1             # the path both backtracks and grows its step


def test_temperature_weights_leave_the_logits_alone_when_nothing_is_fitted() -> None:
    """No grid point with a finite NLL (an empty grid, or NaN contributions): every 1/T stays 1."""
    val = {"audio": np.array([[1.0, 0.0], [0.0, 1.0]]), "visual": np.array([[0.5, 0.0], [0.0, 0.2]])}
    labels = np.array([0, 1])
    assert remedies.temperature_weights(val, np.zeros(2), labels, grid=np.array([])) == {"audio": 1.0, "visual": 1.0}
    nan = {m: np.full((2, 2), np.nan) for m in val}
    assert remedies.temperature_weights(nan, np.zeros(2), labels) == {"audio": 1.0, "visual": 1.0}


def test_at_risk_classes_need_a_gain_above_the_margin() -> None:
    """Fused 0.75 vs audio 0.5 (exact in binary): a gain of exactly the margin 0.25 is not above it."""
    acc = {"fused": np.array([0.75, 0.75, 0.5]), "audio": np.array([0.5, 0.25, 0.5])}
    assert cues.at_risk_classes(acc, "audio", 0.25).tolist() == [1]
    assert cues.at_risk_classes(acc, "audio", 0.2).tolist() == [0, 1]


def test_t_interval_below_a_quantile_of_one() -> None:
    """Level 0.5 on 2 df: p(t) = 1 - t / sqrt(t^2 + 2) = 0.5 at t = sqrt(2/3) < 1 (the bisection must start at 0).
    [0, 1, 2]: mean 1, sd 1, half width sqrt(2/3) / sqrt(3) = sqrt(2) / 3."""
    low, high = stats.t_interval(np.array([0.0, 1.0, 2.0]), level=0.5)
    assert (low, high) == (pytest.approx(1 - math.sqrt(2) / 3, abs=1e-9), pytest.approx(1 + math.sqrt(2) / 3, abs=1e-9))


def test_cue_likelihood_shapes_and_bounds() -> None:
    """One probability per class, at least two classes; q = 0 (a class never shows its own cue) is allowed."""
    for bad in ([0.9], [[0.9, 0.1]]):
        with pytest.raises(ValueError, match=r"^cue_likelihood: one probability per class \(at least 2 classes\), "
                                             r"got shape \("):
            cues.cue_likelihood(np.array(bad))
    np.testing.assert_allclose(cues.cue_likelihood(np.array([0.0, 1.0])), [[0.0, 1.0], [0.0, 1.0]])


def test_bayes_class_accuracy_ties_only_at_floating_point_equality() -> None:
    """Columns 1e-7 apart relatively, or 2e-10 apart absolutely, are not ties: the likelier class takes the whole
    observation (np.isclose's default tolerances would split it). L rows: classes; columns: observations."""
    near = np.array([[0.5, 0.5], [0.5000001, 0.4999999]])
    np.testing.assert_allclose(cues.bayes_class_accuracy(near), [0.5, 0.5000001])
    tiny = np.array([[1e-10, 1 - 1e-10], [3e-10, 1 - 3e-10]])
    np.testing.assert_allclose(cues.bayes_class_accuracy(tiny), [1 - 1e-10, 3e-10], rtol=1e-12)


def test_fused_likelihood_of_one_modality_and_of_more_cue_values_than_classes() -> None:
    """One modality: the fusion is its own likelihood. Two classes, three cue values: one row per class,
    3 x 2 = 6 columns (row-major: audio cue, then visual cue)."""
    a = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    v = np.array([[0.9, 0.1], [0.4, 0.6]])
    np.testing.assert_allclose(cues.fused_likelihood([a]), a)
    np.testing.assert_allclose(cues.fused_likelihood([a, v]), [[0.45, 0.05, 0.27, 0.03, 0.18, 0.02],
                                                              [0.08, 0.12, 0.12, 0.18, 0.2, 0.3]])


@pytest.mark.parametrize(("a", "b", "x"), [(40, 10, 0.9), (30, 30, 0.7), (10, 40, 0.5)])
def test_incomplete_beta_on_integer_parameters_by_the_binomial_tail(a: int, b: int, x: float) -> None:
    """I_x(a, b) = P(Binomial(a + b - 1, x) >= a) for integer a, b; to 1e-13 (the continued fraction on the side
    of x where it converges fast; the other side is off by about 1e-10)."""
    n = a + b - 1
    exact = sum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(a, n + 1))
    assert stats.incomplete_beta(a, b, x) == pytest.approx(exact, abs=1e-13)


def test_per_class_mean_when_every_label_is_one_class() -> None:
    """Labels all of class 0: its mean is that of every value; class 1, absent, is NaN."""
    got = dl.per_class_mean(np.array([1.0, 3.0]), np.array([0, 0]), 2)
    assert got[0] == 2.0 and math.isnan(got[1])


# --- findings (issue 21, 2026-12-03): survivors of `mutmut run "avbias.analyse.findings*"` ----------------------------


def test_failure_mode_finding_row_by_hand() -> None:
    """Each lost class with its loss and Holm p, and the more capable modality's share unless the capability is a
    tie or not given; the whole row, reason included, and with nothing lost or no seeds."""
    cost = {"under_used": np.array([0, 2]), "loss": np.array([0.4, 0.0, 0.25]), "p_holm": np.array([0.01, 0.9, 0.02]),
            "n_seeds": np.array([3, 3, 3])}
    classes = ["SAD", "NEU", "FEA"]
    row = findings.failure_mode_finding(classes, cost, "ref", np.array([0.3, 0.5, 0.6]), ["visual", "audio", "tie"])
    assert row == {"claim": findings.FAILURE_CLAIM, "subject": "baseline vs ref",
                   "evidence": "SAD (+0.400, Holm p 0.01; visual's share 0.30); FEA (+0.250, Holm p 0.02)",
                   "n_seeds": 3, "verdict": "found",
                   "reason": "per class, ref minus the baseline's accuracy > 0, paired over 3 seeds, t-test "
                             "Holm-adjusted over 3 classes p < 0.05 (at least 3 seeds)"}
    plain = "SAD (+0.400, Holm p 0.01); FEA (+0.250, Holm p 0.02)"
    assert findings.failure_mode_finding(classes, cost, "ref")["evidence"] == plain
    assert findings.failure_mode_finding(classes, cost, "ref", None, ["visual", "audio", "visual"])["evidence"] == plain
    assert findings.failure_mode_finding(classes, cost, "ref", np.array([0.3, 0.5, 0.6]))["evidence"] == plain
    nothing = findings.failure_mode_finding(classes, cost | {"under_used": np.array([], int)}, "ref")
    assert (nothing["evidence"], nothing["verdict"]) == ("no class", "not found")
    empty = {"under_used": np.array([], int), "loss": np.array([]), "p_holm": np.array([]),
             "n_seeds": np.array([], int)}
    assert findings.failure_mode_finding([], empty, "ref") == {
        "claim": findings.FAILURE_CLAIM, "subject": "baseline vs ref", "evidence": "no class", "n_seeds": 0,
        "verdict": "inconclusive", "reason": "0 seeds (a verdict needs 3)"}


def test_allocation_findings_need_the_baseline_converged() -> None:
    """A baseline missing from the convergence table counts as not converged, for the remedy and the method."""
    classes = ["NEU", "SAD", "FEA"]
    remedy = pd.DataFrame([{"method": "baseline", "remedy": "class_weights", "seed": s, "class_acc_0": 0.0,
                            "class_acc_1": 0.9, "class_acc_2": 0.9} for s in range(3)])
    rows = findings.allocation_findings(per_class_table(), remedy, classes, "visual", "audio",
                                        {"adaptive_fusion": True}, {})
    not_converged = ("inconclusive", "a run did not converge (see Convergence)")
    assert [(r["verdict"], r["reason"]) for r in rows] == [not_converged] * 2


def test_weak_favoured_classes_exclude_ties() -> None:
    """A class where the weak modality's unimodal model is exactly as accurate as the strong one's is not favoured."""
    acc = {"unimodal_audio": {"NEU": [0.5, 0.5], "SAD": [0.25, 0.25]},
           "unimodal_visual": {"NEU": [0.5, 0.5], "SAD": [0.75, 0.75]}}
    table = pd.DataFrame([{"method": m, "seed": s, "class": c, "acc": a}
                          for m, per in acc.items() for c, seeds in per.items() for s, a in enumerate(seeds)])
    assert findings.weak_favoured_classes(table, "visual", "audio") == ["SAD"]


def test_persistence_shift_falls_back_to_decisions_when_the_baseline_lacks_the_measure() -> None:
    """OGM-GE has a centred logit share, the baseline does not: the shift is paired on the share of decisions
    (0.6 - 0.9, 0.5 - 0.8, 0.4 - 0.7: -0.3), and says so. The baseline's own row (share of decisions 0.9, 0.8, 0.7)
    is supported with its reason."""
    runs = runs_table()
    runs.loc[runs["method"] == "baseline", "centred_logit_share"] = np.nan
    runs.loc[runs["method"] == "ogm_ge", "centred_logit_share"] = [0.70, 0.73, 0.67]
    rows = findings.persistence_findings(runs, "audio", "visual", {"baseline": True, "ogm_ge": True})
    by = {(r["claim"], r["subject"]): r for r in rows}
    shift = by[("1. shift from the baseline", "ogm_ge")]
    assert shift["evidence"] == "audio's share of decisions minus the baseline's, same seeds"
    assert shift["effect"] == pytest.approx(-0.3) and shift["verdict"] == "towards visual"
    assert by[("1. the bias persists", "ogm_ge")]["evidence"] == "audio's centred logit share - 0.5"
    base = by[("1. the bias persists", "baseline")]
    assert base["effect"] == pytest.approx(0.3) and base["verdict"] == "supported"
    assert base["reason"] == "audio keeps more than half of the decision"


def test_recovery_findings_rows_by_hand() -> None:
    """Each candidate against the baseline on the seeds both have (seed 3 is the candidate's only): overall (mean
    over every class) and on the lost classes (SAD, FEA; 12 test clips: FEA has no count), each row whole."""
    classes = ["SAD", "NEU", "FEA"]
    base = pd.DataFrame({"SAD": [0.2, 0.3, 0.4], "NEU": [0.9, 0.9, 0.9], "FEA": [0.5, 0.5, 0.5]})
    up = pd.DataFrame({"SAD": [0.5, 0.7, 0.8, 0.1], "NEU": [0.9, 0.8, 0.9, 0.1], "FEA": [0.5, 0.6, 0.5, 0.1]})
    down = base * 0.5
    rows = findings.recovery_findings(base, {"remedy: up": up, "method: down": down}, classes, ["SAD", "FEA"],
                                      {"remedy: up": True, "method: down": True}, {"SAD": 12, "NEU": 50})
    lost = "SAD, FEA (12 test clips), where the baseline loses"
    overall = "every class (unweighted mean)"

    def row(claim: str, subject: str, where: str, diff: list[float], verdict: str, reason: str) -> dict[str, Any]:
        expected = findings._test(np.array(diff))
        return {"claim": claim, "subject": subject, "evidence": f"accuracy on {where} minus the baseline's, same seeds",
                **{k: pytest.approx(v) for k, v in expected.items()}, "verdict": verdict, "reason": reason}

    # up: overall (0.3 + 0 + 0) / 3, (0.4 - 0.1 + 0.1) / 3, 0.4 / 3; lost (0.3 + 0) / 2, (0.4 + 0.1) / 2, 0.4 / 2.
    # down: half the baseline: overall -(0.2 + 0.9 + 0.5) / 6, ...; lost -(0.1 + 0.25) / 2, -(0.15 + 0.25) / 2, ...
    assert rows == [
        row(findings.OVERALL_CLAIM, "remedy: up", overall, [0.1, 0.4 / 3, 0.4 / 3], "supported",
            f"higher accuracy on {overall}"),
        row(findings.RECOVERY_CLAIM, "remedy: up", lost, [0.15, 0.25, 0.2], "supported", f"higher accuracy on {lost}"),
        row(findings.OVERALL_CLAIM, "method: down", overall, [-1.6 / 6, -1.7 / 6, -1.8 / 6], "not supported",
            f"lower accuracy on {overall}"),
        row(findings.RECOVERY_CLAIM, "method: down", lost, [-0.175, -0.2, -0.225], "not supported",
            f"lower accuracy on {lost}")]
    nothing_lost = {"claim": findings.RECOVERY_CLAIM, "subject": "remedy: up",
                    "evidence": "accuracy on the classes the baseline loses", "n_seeds": 3, "verdict": "inconclusive",
                    "reason": "nothing to recover: the baseline loses no class"}
    assert findings.recovery_findings(base, {"remedy: up": up}, classes, [], {"remedy: up": True})[1] == nothing_lost
    unconverged = findings.recovery_findings(base, {"remedy: up": up}, classes, ["SAD"], {})
    assert [(r["verdict"], r["reason"]) for r in unconverged] == [
        ("inconclusive", "a run did not converge (see Convergence)")] * 2          # a label missing: not converged
    # No classes at all: both sets get their row.
    assert len(findings.recovery_findings(base, {"remedy: up": up}, [], ["SAD"], {})) == 2


def test_holm_claim3_families_reasons_and_boundary_by_hand() -> None:
    """Claim-3 family: two p = 0.025 -> Holm 0.05 each, which is not < 0.05: both inconclusive, saying why. Overall
    family: 0.01 x 2 = 0.02 stays supported; 0.5 was inconclusive and keeps its own reason. The failure-mode row
    and claim 1 are left alone, even with a p."""
    rows = [{"claim": "3. capability-aware allocation helps where the weak modality is more capable", "p": 0.025,
             "verdict": "supported", "reason": "r0"},
            {"claim": findings.RECOVERY_CLAIM, "p": 0.025, "verdict": "supported", "reason": "r1"},
            {"claim": findings.OVERALL_CLAIM, "p": 0.5, "verdict": "inconclusive", "reason": "r2"},
            {"claim": findings.OVERALL_CLAIM, "p": 0.01, "verdict": "supported", "reason": "r3"},
            {"claim": findings.FAILURE_CLAIM, "p": 0.001, "verdict": "found"},
            {"claim": "1. the bias persists", "p": 0.01, "verdict": "supported"}]
    out = findings.holm_claim3(rows)
    why = "p = 0.025 < 0.05 but Holm-adjusted p = 0.05 over the 2 claim-3 comparisons"
    assert out[:4] == [rows[0] | {"p_holm": 0.05, "verdict": "inconclusive", "reason": why},
                       rows[1] | {"p_holm": 0.05, "verdict": "inconclusive", "reason": why},
                       rows[2] | {"p_holm": 0.5}, rows[3] | {"p_holm": 0.02}]
    assert out[4:] == rows[4:]


def test_fit_class_weights_rejects_a_step_that_decreases_the_loss_too_little() -> None:
    """Armijo's sufficient decrease: with l2 = 0.691039 the first full step (theta = -g) lowers the loss by only
    about 5e-5, less than 1e-4 |g|^2 = 6.8e-5: rejected (although the loss fell), and the half step taken."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 30)
    c = np.stack([rng.normal(size=(30, 3)) * 3 + 2 * np.eye(3)[labels], rng.normal(size=(30, 3))])
    bias, l2 = np.array([0.2, -0.1, 0.0]), 0.691039
    onehot = np.eye(3)[labels]

    def loss(theta: np.ndarray) -> float:
        logits = np.exp(theta[0]) * c[0] + np.exp(theta[1]) * c[1] + bias
        log_p = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        return float(-(onehot * log_p).sum(1).mean() + l2 * (theta**2).sum())

    p = np.exp(bias + c.sum(0) - np.logaddexp.reduce(bias + c.sum(0), axis=1, keepdims=True))
    g = np.stack([((p - onehot) * c[m]).mean(0) for m in range(2)])        # at theta = 0: alpha = 1, no penalty
    decrease = loss(np.zeros((2, 3))) - loss(-g)
    assert 0 < decrease < 1e-4 * (g**2).sum()
    assert loss(np.zeros((2, 3))) - loss(-0.5 * g) >= 1e-4 * 0.5 * (g**2).sum()
    alpha = remedies.fit_class_weights({"a": c[0], "v": c[1]}, bias, labels, l2=l2, iters=1)
    np.testing.assert_allclose(np.log(np.stack([alpha["a"], alpha["v"]])), -0.5 * g, rtol=1e-9, atol=1e-12)
