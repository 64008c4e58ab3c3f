"""Decision-layer measures on constructed weights and features with hand-computed answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from avbias.analyse import decision_layer as dl
from avbias.analyse import findings as fnd
from avbias.analyse.runs import aggregate
from avbias.metrics import accuracy, macro_f1, per_class_accuracy

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


def test_aggregate_over_seeds() -> None:
    runs = pd.DataFrame([
        {"method": "baseline", "seed": 0, "modalities": "audio+visual", "test_acc": 0.8, "weight_norm_audio": 1.0},
        {"method": "baseline", "seed": 1, "modalities": "audio+visual", "test_acc": 0.6, "weight_norm_audio": 3.0},
    ])
    summary = aggregate(runs.drop(columns=["modalities"]))
    acc = summary[(summary["method"] == "baseline") & (summary["measure"] == "test_acc")].iloc[0]
    assert (acc["mean"] == pytest.approx(0.7) and acc["std"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
            and acc["n"] == 2)


def test_dominance_is_a_tested_verdict_over_seeds() -> None:
    # Visual's shares 0.75, 0.8, 0.7: mean 0.75, sd 0.05, t = 0.25 / (0.05 / sqrt 3) = 8.66 on 2 df, p = 0.013.
    clear = np.array([[1.0, 3.0], [1.0, 4.0], [3.0, 7.0]])
    found = fnd.dominance_verdict(clear, ["audio", "visual"])
    assert found["verdict"] == "visual" and found["leans"] == "visual" and found["n_seeds"] == 3
    assert found["share"] == pytest.approx(0.75) and found["p"] == pytest.approx(0.01307, abs=2e-4)
    assert fnd.dominance_verdict(clear, ["audio", "visual"], margin=0.3)["verdict"] == "inconclusive"
    # Seeds that disagree (audio 0.6, 0.4, 0.55): the seed means lean audio, but nothing is concluded.
    split = fnd.dominance_verdict(np.array([[0.6, 0.4], [0.4, 0.6], [0.55, 0.45]]), ["audio", "visual"])
    assert split["leans"] == "audio" and split["verdict"] == "inconclusive" and split["p"] > 0.5
    # Two seeds are too few for a verdict however clear they are.
    assert fnd.dominance_verdict(clear[:2], ["audio", "visual"])["verdict"] == "inconclusive"
    # Negative measures count as zero; an all-zero seed is an even split.
    assert fnd.dominance_verdict(np.array([[-1.0, 2.0], [0.0, 0.0], [0.0, 1.0]]), ["a", "v"])["share"] == \
        pytest.approx((1 + 0.5 + 1) / 3)


def test_classification_metrics() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0])
    assert accuracy(preds, labels) == pytest.approx(0.6)
    np.testing.assert_allclose(per_class_accuracy(preds, labels, 4), [0.5, 1.0, 0.0, np.nan])
    # F1: class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fn1 -> 0.
    assert macro_f1(preds, labels, 4) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_who_decides_margins_and_logit_scale_by_hand() -> None:
    # Visual dominates here: where the modalities disagree, the fused prediction follows visual 2 of 3 times.
    audio = np.array([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    visual = np.array([[0.0, 3.0], [0.0, 1.0], [3.0, 0.0], [2.0, 0.0]])
    fused = audio + visual                       # [[2,3],[2,1],[3,2],[3,0]] -> 1, 0, 0, 0
    decided = dl.who_decides(fused, {"audio": audio, "visual": visual})
    assert decided == {"audio": pytest.approx(1 / 3), "visual": pytest.approx(2 / 3), "n_disagree": 3}
    labels = np.array([1, 0, 0, 0])
    # Margin z_y - z_k split by modality (k = fused runner-up): sample 0: audio 0-2 = -2, visual 3-0 = 3.
    np.testing.assert_allclose(dl.margin_contribution(visual, fused, labels), [3, -1, 3, 2])
    np.testing.assert_allclose(dl.margin_contribution(audio, fused, labels), [-2, 2, -2, 1])
    np.testing.assert_allclose(dl.contribution_at(audio, labels), [0, 2, 0, 1])
    np.testing.assert_allclose(dl.per_class_mean(np.array([1.0, 2.0, 3.0, 5.0]), labels, 3), [10 / 3, 1, np.nan])
    norms = dl.decision_weight_norms(dl.weight_blocks(W, DIMS, MODS))
    ratio, per_class = dl.weight_norm_ratio(norms, "visual", "audio")
    assert ratio == pytest.approx(np.sqrt(5) / 5)
    np.testing.assert_allclose(per_class, [1 / 5, 2 / 1e-12])
    np.testing.assert_allclose(dl.logit_scale(np.array([5.0, 0.0]), 2.0), [10.0, 0.0])


def test_shapley_on_a_two_modality_toy() -> None:
    """Audio alone is right on 2 of 4 samples, visual alone on 4, both on 4, none (bias) on 1."""
    labels = np.array([0, 1, 0, 1])
    bias = np.array([0.1, 0.0])                                   # alone: predicts class 0 -> 2 of 4
    audio = np.array([[1.0, 0], [1.0, 0], [0, 0.5], [0, 0.5]])    # + bias: 0, 0, 1, 1 -> right on 0 and 3
    visual = np.array([[5.0, 0], [0, 5.0], [5.0, 0], [0, 5.0]])   # always right, also with audio
    v = {(): 0.5, ("audio",): 0.5, ("visual",): 1.0, ("audio", "visual"): 1.0}
    for s, acc in v.items():
        assert dl.subset_accuracy({"audio": audio, "visual": visual}, bias, labels, s) == acc
    phi = dl.shapley_accuracy({"audio": audio, "visual": visual}, bias, labels)
    # phi_a = 1/2 [(v(a) - v()) + (v(av) - v(v))] = 0; phi_v = 1/2 [(1 - .5) + (1 - .5)] = 0.5
    assert phi == {"audio": pytest.approx(0.0), "visual": pytest.approx(0.5)}
    assert sum(phi.values()) == pytest.approx(v[("audio", "visual")] - v[()])


def test_remedies_recover_known_optima() -> None:
    from avbias.analyse.remedies import (
        combine,
        fit_class_weights,
        norm_equalisation,
        standardise_weights,
        temperature_weights,
    )

    rng = np.random.default_rng(0)
    n, c = 600, 3
    labels = rng.integers(0, c, n)
    informative = np.eye(c)[labels] * 0.1 + rng.normal(0, 0.02, (n, c))      # visual: right but tiny
    noise = rng.normal(0, 1.0, (n, c))                                         # audio: loud noise
    contrib, bias = {"audio": noise, "visual": informative}, np.zeros(c)
    assert np.mean(combine(contrib, bias, {"audio": 1.0, "visual": 1.0}).argmax(1) == labels) < 0.6
    # The optimum turns the noise down and the informative modality up: each remedy fit on one half, tested on
    # the other.
    val, test = slice(0, 300), slice(300, None)
    half = lambda s: {m: x[s] for m, x in contrib.items()}          # noqa: E731
    alpha = fit_class_weights(half(val), bias, labels[val])
    assert all(alpha["visual"] > 10 * alpha["audio"])
    assert np.mean(combine(half(test), bias, alpha).argmax(1) == labels[test]) > 0.95
    temp = temperature_weights(half(val), bias, labels[val])
    assert temp["visual"] > 10 * temp["audio"]
    std = standardise_weights(half(val))
    assert std["visual"] / std["audio"] == pytest.approx(noise[val].std() / informative[val].std())
    eq = norm_equalisation({"audio": np.array([3.0, 4.0]), "visual": np.array([1.0, 1.0])}, per_class=False)
    assert eq == {"audio": pytest.approx((5 + np.sqrt(2)) / 2 / 5),
                  "visual": pytest.approx((5 + np.sqrt(2)) / 2 / np.sqrt(2))}
    per_class = norm_equalisation({"audio": np.array([3.0, 4.0]), "visual": np.array([1.0, 2.0])}, per_class=True)
    np.testing.assert_allclose(per_class["audio"] * [3, 4], per_class["visual"] * [1, 2])   # equal rows after


def linear_head_run(rng: np.random.Generator, fusion: str = "concat") -> tuple[dict, dict[str, np.ndarray]]:
    """A joint run with the concat head W above (b = (0.5, -0.5)) on random features, validation included."""
    bias = np.array([0.5, -0.5])
    outputs: dict[str, np.ndarray] = {"modalities": np.array(MODS), "head_weight": W, "head_bias": bias,
                                      "feature_dims": np.array(DIMS)}
    for split, n in (("val", 30), ("test", 40)):
        features = {"audio": rng.normal(size=(n, 2)), "visual": rng.normal(size=(n, 1))}
        outputs |= {f"{split}_features_{m}": f for m, f in features.items()}
        outputs[f"{split}_logits"] = np.concatenate([features["audio"], features["visual"]], axis=1) @ W.T + bias
        outputs[f"{split}_labels"] = (outputs[f"{split}_logits"] + rng.normal(0, 2, (n, 2))).argmax(1)
    return {"method": "baseline", "seed": 3, "classes": ["A", "B"], "fusion": fusion}, outputs


def test_branch_calibration_and_remedies_apply_to_linear_heads_with_validation() -> None:
    from avbias.analyse.calibration import branch_calibration
    from avbias.analyse.measures import apply_remedies, calibrate_run
    from avbias.analyse.remedies import REMEDIES

    metrics, outputs = linear_head_run(np.random.default_rng(4))
    rows = calibrate_run(metrics, outputs)
    blocks = dl.weight_blocks(W, DIMS, MODS)
    parts = {split: {m: outputs[f"{split}_features_{m}"] @ blocks[m].T for m in MODS} for split in ("val", "test")}
    expected = branch_calibration(parts["val"], parts["test"], outputs["head_bias"], outputs["val_labels"],
                                  outputs["test_labels"])
    assert rows == [{"method": "baseline", "seed": 3, **r} for r in expected]
    assert [r["modality"] for r in rows] == MODS and all(r["temperature"] > 0 for r in rows)
    assert [r["remedy"] for r in apply_remedies(metrics, outputs, "visual")] == ["none", *REMEDIES]
    # Where the remedies do not apply, neither does the calibration: a shared head, a non-additive one, no
    # validation split, a unimodal run.
    shared = linear_head_run(np.random.default_rng(4), fusion="shared")
    assert calibrate_run(*shared) == [] == apply_remedies(*shared, "visual")
    assert calibrate_run({**metrics, "additive": False}, outputs) == []
    assert calibrate_run(metrics, {k: v for k, v in outputs.items() if k != "val_labels"}) == []
    assert calibrate_run(metrics, {**outputs, "modalities": np.array(["audio"])}) == []


def test_bootstrap_ci_and_paired_test() -> None:
    from avbias.analyse.stats import bootstrap_ci, paired_permutation_p

    low, high = bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    assert 1.0 <= low < 2.5 < high <= 4.0
    assert np.isnan(bootstrap_ci(np.array([1.0]))[0])
    # 4 pairs all shifted the same way: only the identity and full flip are as extreme -> p = 2/16.
    assert paired_permutation_p(np.array([2.0, 3, 4, 5]), np.array([1.0, 2, 3, 4])) == pytest.approx(2 / 16)
    assert paired_permutation_p(np.array([1.0, 2]), np.array([1.0, 2])) == 1.0


def test_human_capability_from_crowd_votes() -> None:
    from avbias.analyse.capability import cremad_human_accuracy, human_accuracy

    table = pd.DataFrame({"FileName": ["1001_IEO_ANG_HI", "1001_IEO_ANG_LO", "1001_IEO_SAD_XX"],
                          "VoiceVote": ["A", "A:D", "N"], "FaceVote": ["D", "A", "S"],
                          "MultiModalVote": ["A", "A", "S"]})
    acc = human_accuracy(table).set_index(["class", "modality"])["accuracy"]
    assert acc[("ANG", "audio")] == pytest.approx(0.75) and acc[("ANG", "visual")] == pytest.approx(0.5)
    assert acc[("SAD", "audio")] == 0 and acc[("SAD", "visual")] == 1
    real = cremad_human_accuracy()
    assert len(real) == 18 and real["accuracy"].between(0, 1).all()


def test_balancebenchmark_shapley_from_input_zeroed_coalitions_by_hand() -> None:
    """BalanceBenchmark's Calculate_Shapley: v(none) 1/6, v(a) 0.55, v(v) 0.45, v(av) 0.65 -> phi_a 0.29167,
    phi_v 0.19167 (phi_a = [(v(a) - v(none)) + (v(av) - v(v))] / 2)."""
    labels = np.zeros(60, int)
    def logits(correct: int) -> np.ndarray:        # fused logits right on the first `correct` clips
        z = np.zeros((60, 3))
        z[:correct, 0], z[correct:, 1] = 1, 1
        return z
    by_absent = {(): logits(39), ("visual",): logits(33), ("audio",): logits(27), ("audio", "visual"): logits(10)}
    phi = dl.shapley_input_accuracy(by_absent, labels, ["audio", "visual"])
    assert phi["audio"] == pytest.approx(0.5 * ((0.55 - 1 / 6) + (0.65 - 0.45)))
    assert phi["visual"] == pytest.approx(0.5 * ((0.45 - 1 / 6) + (0.65 - 0.55)))
    assert phi["audio"] + phi["visual"] == pytest.approx(0.65 - 1 / 6)         # efficiency


def test_class_centred_contributions_ignore_what_softmax_ignores() -> None:
    c = np.array([[5.0, 5.0, 5.0], [1.0, 2.0, 3.0]])
    np.testing.assert_allclose(dl.centred(c), [[0, 0, 0], [-1, 0, 1]])
    assert dl.mean_abs_contribution(dl.centred(c)) == pytest.approx(2 / 6)   # a constant shift adds nothing


def test_t_test_against_tabulated_values() -> None:
    from avbias.analyse.stats import incomplete_beta, t_test_p

    def p(t: float, df: int) -> float:
        return incomplete_beta(df / 2, 0.5, df / (df + t * t))

    assert p(4.302653, 2) == pytest.approx(0.05, abs=1e-6)      # t_{0.975, 2}
    assert p(2.776445, 4) == pytest.approx(0.05, abs=1e-6)      # t_{0.975, 4}
    assert p(2.0, 4) == pytest.approx(0.1161165, abs=1e-6)
    assert t_test_p(np.array([0.1, 0.12, 0.11])) < 0.05 < t_test_p(np.array([0.1, -0.12, 0.11]))
    assert np.isnan(t_test_p(np.array([0.3])))
    from avbias.analyse.stats import t_interval

    half = 4.302653 / 3 ** 0.5                                        # t_{0.975, 2} * sd / sqrt(n), sd = 1
    expected = (pytest.approx(2 - half, abs=1e-5), pytest.approx(2 + half, abs=1e-5))
    assert t_interval(np.array([1.0, 2.0, 3.0])) == expected


def test_convergence_and_verdicts() -> None:
    from avbias.analyse import findings

    flat = np.r_[np.linspace(0.2, 0.8, 30), np.full(10, 0.8)]
    rising = np.linspace(0.2, 0.8, 40)
    assert findings.late_rise(flat) == pytest.approx(0, abs=1e-9)
    assert findings.late_rise(rising) == pytest.approx(0.6 / 39 * 9)
    curves = pd.DataFrame([{"method": m, "seed": s, "epoch": e, "val_acc": c[e]}
                           for m, c in (("flat", flat), ("rising", rising)) for s in (0, 1) for e in range(40)])
    table = findings.convergence(curves).set_index("method")
    assert table.loc["flat", "converged"] and not table.loc["rising", "converged"]
    strong = findings._test(np.array([0.70, 0.72, 0.71]), null=0.5)
    assert findings._verdict(strong, True, "yes", "no")["verdict"] == "supported"
    assert findings._verdict(strong, False, "yes", "no")["verdict"] == "inconclusive"      # not converged
    weak = findings._test(np.array([0.3, 0.29, 0.31]), null=0.5)
    assert findings._verdict(weak, True, "yes", "no")["verdict"] == "not supported"
    two = findings._test(np.array([0.7, 0.71]), null=0.5)
    assert "seeds" in findings._verdict(two, True, "yes", "no")["reason"]
    noisy = findings._test(np.array([0.3, 0.7, 0.55]), null=0.5)
    assert findings._verdict(noisy, True, "yes", "no")["verdict"] == "inconclusive"


def test_persistence_and_shift_from_the_baseline_are_paired_over_seeds() -> None:
    # Audio's centred share (first modality) per seed; OGM-GE's is visual-first to check the flip.
    runs = pd.DataFrame(
        [{"method": "baseline", "seed": s, "modalities": "audio+visual", "centred_logit_share": x}
         for s, x in enumerate([0.80, 0.82, 0.78])]
        + [{"method": "ogm_ge", "seed": s, "modalities": "visual+audio", "centred_logit_share": 1 - x}
           for s, x in enumerate([0.70, 0.73, 0.67])]
        + [{"method": "pmr", "seed": s, "modalities": "audio+visual", "centred_logit_share": x}
           for s, x in enumerate([0.90, 0.70, 0.80])])
    rows = {(r["claim"], r["subject"]): r for r in fnd.persistence_findings(runs, "audio", "visual", {
        "baseline": True, "ogm_ge": True, "pmr": True})}
    assert rows[("1. the bias persists", "baseline")]["effect"] == pytest.approx(0.30)
    assert rows[("1. the bias persists", "baseline")]["verdict"] == "supported"
    # OGM-GE minus the baseline: -0.10, -0.09, -0.11: mean -0.10, sd 0.01, t = -17.3 on 2 df, p = 0.0033.
    shift = rows[("1. shift from the baseline", "ogm_ge")]
    assert shift["effect"] == pytest.approx(-0.10) and shift["p"] == pytest.approx(0.00332, abs=5e-5)
    assert shift["verdict"] == "towards visual"
    # PMR minus the baseline: +0.10, -0.12, +0.02: the seeds disagree.
    assert rows[("1. shift from the baseline", "pmr")]["verdict"] == "inconclusive"
    assert ("1. shift from the baseline", "baseline") not in rows


def test_compare_verdicts_fails_on_contradictions_and_shifts_not_on_threshold_noise(tmp_path: Path) -> None:
    """avbias compare-verdicts (make demo-check): same conclusions pass; a verdict that only straddles
    p = 0.05 with agreeing estimates is listed but passes; a contradiction or a shifted estimate fails."""
    import json

    from avbias.analyse.compare import compare
    from avbias.analyse.stats import welch_p
    from avbias.cli import main

    # Welch by hand: 0.15 +- 0.03 vs 0.10 +- 0.04 (4 seeds each): t = 0.05 / 0.05 = 1, df = 0.0025^2 /
    # ((0.03^4 + 0.04^4) / 3) = 5.76; two-sided p of t = 1 on 5.76 df = 0.357.
    assert welch_p(0.15, 0.03, 4, 0.10, 0.04, 4) == pytest.approx(0.357, abs=2e-3)
    cases = {"a": ("supported", 0.03, 0.15, "audio"), "b": ("supported", 0.02, 0.16, "audio"),
             "c": ("inconclusive", 0.07, 0.10, "audio"), "d": ("not supported", 0.01, -0.2, "visual"),
             "e": ("inconclusive", 0.9, 0.00, "audio")}
    for name, (verdict, p, effect, modality) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "bias.json").write_text(json.dumps({
            "dominance": {"baseline": {"weight_norm": modality}},
            "dominance_detail": {"baseline": {"weight_norm": {
                "p": 0.001, "se": 0.01, "n_seeds": 4, "shares": {"audio": 0.5 + effect, "visual": 0.5 - effect}}}}}))
        pd.DataFrame([{"claim": "1. the bias persists", "subject": "baseline", "verdict": verdict, "p": p,
                       "effect": effect, "se": 0.04 if name == "c" else 0.03, "n_seeds": 4}]).to_csv(
            folder / "findings.csv", index=False)
    assert compare(tmp_path / "a", tmp_path / "b") == []
    # a vs c: supported vs inconclusive, estimates 0.15 vs 0.10 within their spread (p 0.36): threshold.
    [straddle] = compare(tmp_path / "a", tmp_path / "c")
    assert straddle.kind == "threshold" and straddle.p_same == pytest.approx(0.357, abs=2e-3)
    assert "supported (p 0.03) vs inconclusive (p 0.07) [threshold, estimates +0.150 vs +0.100" in str(straddle)
    # a vs d: opposite verdicts on both conclusions.
    assert [d.kind for d in compare(tmp_path / "a", tmp_path / "d")] == ["contradiction", "contradiction"]
    # a vs e: 0.15 +- 0.03 vs 0.00 +- 0.03: t = 3.54 on 6 df, p = 0.012 < 0.05 / 2 conclusions: shifted.
    assert [d.kind for d in compare(tmp_path / "a", tmp_path / "e")] == ["shifted"]
    assert main(["compare-verdicts", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert main(["compare-verdicts", str(tmp_path / "a"), str(tmp_path / "c")]) == 0
    assert main(["compare-verdicts", str(tmp_path / "a"), str(tmp_path / "e")]) == 2
