"""Claim 3 made testable (issue 20): cue plans whose truths are exact by construction (analyse.cues,
acquire.synthetic), the failure mode defined by what it costs (findings.under_use_by_cost), Holm's correction
across the claim-3 family, and the claim-3 machinery on constructed arrays: it finds the planted failure
classes and credits an oracle allocation on the failure scenario, and stays silent on the negative control."""

from __future__ import annotations

import functools

import jsonschema
import numpy as np
import pandas as pd
import pytest

from avbias.acquire import synthetic
from avbias.analyse import cues, findings, planted, remedies, stats
from avbias.config import REPO_ROOT, SCHEMA_PATH, deep_merge, read_yaml
from avbias.errors import ParamsError

SCENARIOS = REPO_ROOT / "config" / "scenarios"
CLASSES = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]


def scenario(name: str) -> dict:
    return deep_merge(read_yaml(REPO_ROOT / "params.yaml"), read_yaml(SCENARIOS / f"{name}.yaml"))["synth"]


# --- exact truths, by hand ---------------------------------------------------------------------------------

def test_cue_likelihood_by_hand() -> None:
    np.testing.assert_allclose(cues.cue_likelihood(np.array([0.9, 0.6])), [[0.9, 0.1], [0.4, 0.6]])
    np.testing.assert_allclose(cues.cue_likelihood(np.array([0.7, 0.4, 0.1])),
                               [[0.7, 0.15, 0.15], [0.3, 0.4, 0.3], [0.45, 0.45, 0.1]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cues.cue_likelihood(np.array([1.2, 0.5]))


def test_bayes_accuracies_two_classes_by_hand() -> None:
    # Audio L = [[.9, .1], [.4, .6]]: cue 0 -> class 0 (.9 > .4), cue 1 -> class 1 (.6 > .1): accuracy q.
    # Visual q = (.7, .8): L = [[.7, .3], [.2, .8]]. Fused, P(ja, jv | c) per class:
    #   (0,0): .63 vs .08 -> 0;  (0,1): .27 vs .32 -> 1;  (1,0): .07 vs .12 -> 1;  (1,1): .03 vs .48 -> 1.
    # Class 0 keeps only (0,0): .63. Class 1 gets .32 + .12 + .48 = .92.
    acc = cues.bayes_accuracies({"audio_class_cue_prob": [0.9, 0.6], "visual_class_cue_prob": [0.7, 0.8]}, 2)
    np.testing.assert_allclose(acc["audio"], [0.9, 0.6])
    np.testing.assert_allclose(acc["visual"], [0.7, 0.8])
    np.testing.assert_allclose(acc["fused"], [0.63, 0.92])
    # Following audio alone costs on class 1 (+.32), not on class 0 (-.27).
    assert cues.at_risk_classes(acc, "audio", 0.1).tolist() == [1]
    assert cues.at_risk_classes(acc, "audio", 0.35).tolist() == []


def test_bayes_accuracies_three_classes_and_ties_by_hand() -> None:
    # q = (.9, .2, .5): L = [[.9, .05, .05], [.4, .2, .4], [.25, .25, .5]]. Cue 0 -> class 0; cue 1: .05 .2 .25 ->
    # class 2; cue 2: .05 .4 .5 -> class 2. Class 0: .9; class 1: never; class 2: .25 + .5 = .75.
    lik = cues.cue_likelihood(np.array([0.9, 0.2, 0.5]))
    np.testing.assert_allclose(cues.bayes_class_accuracy(lik), [0.9, 0.0, 0.75])
    # A tie splits the observation evenly: q = (.5, .5) makes every cue a coin flip, 0.5 on each class.
    np.testing.assert_allclose(cues.bayes_class_accuracy(cues.cue_likelihood(np.array([0.5, 0.5]))), [0.5, 0.5])
    # No corruption in a modality (no key): q = 1, the fused accuracy is 1 whatever the other does.
    acc = cues.bayes_accuracies({"visual_class_cue_prob": [0.4, 0.4, 0.4]}, 3)
    np.testing.assert_allclose(acc["audio"], [1, 1, 1])
    np.testing.assert_allclose(acc["fused"], [1, 1, 1])
    # Fused likelihood: the product over every cue pair, row-major over the modalities.
    a, v = np.array([[0.9, 0.1], [0.4, 0.6]]), np.array([[0.7, 0.3], [0.2, 0.8]])
    np.testing.assert_allclose(cues.fused_likelihood([a, v]), [[0.63, 0.27, 0.07, 0.03], [0.08, 0.32, 0.12, 0.48]])


def test_planted_accuracy_is_exact_on_a_cue_plan() -> None:
    s = scenario("claim3_underuse")
    acc = planted.planted_accuracy(s, 6)
    np.testing.assert_allclose(acc["audio"], [0.97, 0.97, 0.3, 0.3, 0.97, 0.97])
    np.testing.assert_allclose(acc["visual"], [0.4, 0.4, 0.95, 0.95, 0.4, 0.4])
    # Without cue probabilities the calibrated curves still apply (the shipped scenarios are unchanged).
    plain = scenario("audio_dominant_mixed")
    assert not cues.is_cue_plan(plain)
    np.testing.assert_allclose(planted.planted_accuracy(plain, 6)["audio"],
                               planted.expected_accuracy(planted.planted_snr(plain, 6)["audio"],
                                                         planted.DEMO_CURVES["audio"], 6))


@pytest.mark.parametrize("name, fused, failure, dominant, per_class", [
    ("claim3_underuse", [0.737, 0.737, 0.962, 0.962, 0.737, 0.737], [2, 3], "audio",
     ["audio", "audio", "visual", "visual", "audio", "audio"]),
    ("claim3_control", [0.85] * 6, [], "audio", ["audio", "audio", "tie", "tie", "audio", "audio"]),
])
def test_claim3_scenarios_plant_what_their_comments_state(name: str, fused: list[float], failure: list[int],
                                                          dominant: str, per_class: list[str]) -> None:
    override = read_yaml(SCENARIOS / f"{name}.yaml")
    assert set(override) == {"synth"} and "Planted truth" in (SCENARIOS / f"{name}.yaml").read_text()
    s = scenario(name)
    jsonschema.validate(s, read_yaml(SCHEMA_PATH)["properties"]["synth"])
    acc = cues.bayes_accuracies(s, 6)
    np.testing.assert_allclose(acc["fused"], fused, atol=5e-3)
    assert 0.7 <= acc["fused"].mean() <= 0.9                      # not saturated
    assert cues.at_risk_classes(acc, "audio", planted.TIE_MARGIN).tolist() == failure
    assert planted.planted_overall_dominant(s, 6) == dominant
    assert planted.planted_more_capable(s, 6).tolist() == per_class


# --- the generator -----------------------------------------------------------------------------------------

def test_default_params_corrupt_no_cue() -> None:
    """params.yaml's defaults ([]) draw nothing: every clip is rendered as before (the same object)."""
    params = read_yaml(REPO_ROOT / "params.yaml")["synth"]
    assert params["audio_class_cue_prob"] == [] and params["visual_class_cue_prob"] == []
    clip = synthetic.plan_clips(params)[7]
    assert synthetic.cue_clip(params, "audio", clip) is clip
    assert synthetic.cue_clip({**params, "visual_class_cue_prob": [1.0] * 6}, "visual", clip) is clip


def test_cue_corruption_draws_q_and_other_classes_uniformly() -> None:
    params = {**read_yaml(REPO_ROOT / "params.yaml")["synth"], "num_actors": 40, "num_sentences": 12,
              "audio_class_cue_prob": [0.7, 0.7, 0.7, 0.7, 0.7, 0.0]}
    clips = synthetic.plan_clips(params)                    # 40 x 12 x 6 = 2880 clips, 480 per class
    cue = np.array([synthetic.cue_label(params, "audio", c) for c in clips])
    labels = np.array([c.label for c in clips])
    kept = (cue == labels)
    # Binomial(1920, .7): sd 0.0105; 4 sd.
    assert abs(kept[labels < 5].mean() - 0.7) < 0.042
    assert not kept[labels == 5].any()                      # q = 0: never its own cue
    others = np.bincount(cue[labels == 5], minlength=6)[:5] / 480     # uniform over the 5 others: 0.2 each
    np.testing.assert_allclose(others, 0.2, atol=0.08)
    # The analysis re-draws the same cues without the generator (cues.drawn_cue).
    q = np.array(params["audio_class_cue_prob"])
    assert [cues.drawn_cue(0, c.clip_id, "audio", c.label, q) for c in clips] == cue.tolist()
    assert cues.drawn_cue(0, clips[0].clip_id, "visual", 3, None) == 3
    # Deterministic per clip, and rendered exactly as a clip of the cue's class.
    again = [synthetic.cue_label(params, "audio", c) for c in clips[:50]]
    assert again == cue[:50].tolist()
    swapped = next(c for c, k in zip(clips, kept, strict=True) if not k)
    rendered = synthetic.cue_clip(params, "audio", swapped)
    assert rendered.label != swapped.label and rendered.clip_id == swapped.clip_id
    np.testing.assert_array_equal(synthetic.render_audio(rendered, -10.0, 0),
                                  synthetic.render_audio(swapped.__class__(**{**swapped.__dict__,
                                                                              "label": rendered.label}), -10.0, 0))


def test_cue_probabilities_are_validated() -> None:
    with pytest.raises(ParamsError, match=r"synth\.visual_class_cue_prob: 2 values .* 6 classes"):
        synthetic.class_cue_probs({"visual_class_cue_prob": [0.5, 0.5]}, "visual", 6)
    with pytest.raises(ParamsError, match=r"\[0, 1\]"):
        synthetic.class_cue_probs({"audio_class_cue_prob": [1.5] * 6}, "audio", 6)
    schema = read_yaml(SCHEMA_PATH)["properties"]["synth"]
    bad = {**read_yaml(REPO_ROOT / "params.yaml")["synth"], "audio_class_cue_prob": [0.5, 2.0]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    assert "description" in schema["properties"]["audio_class_cue_prob"]


# --- statistics ----------------------------------------------------------------------------------------------

def test_holm_by_hand() -> None:
    # m = 3 valid: sorted .01 x 3 = .03, .03 x 2 = .06, .04 x 1 = .04 -> made non-decreasing: .03, .06, .06.
    np.testing.assert_allclose(stats.holm(np.array([0.01, 0.04, 0.03, np.nan])), [0.03, 0.06, 0.06, np.nan])
    np.testing.assert_allclose(stats.holm(np.array([0.5, 0.9])), [1.0, 1.0])          # capped at 1
    assert stats.holm(np.array([])).size == 0


def test_under_use_by_cost_by_hand() -> None:
    base = np.array([[0.9, 0.50, 0.8], [0.9, 0.55, 0.8], [0.9, 0.45, 0.7]])
    ref = np.array([[0.9, 0.80, 0.8], [0.9, 0.85, 0.7], [0.9, 0.75, 0.8]])
    cost = findings.under_use_by_cost(base, ref)
    # Class 1 loses .3 on every seed (sd 0: p 0); class 2 loses 0, -.1, +.1 (mean 0); class 0 nothing.
    np.testing.assert_allclose(cost["loss"], [0.0, 0.3, 0.0], atol=1e-12)
    assert cost["under_used"].tolist() == [1]
    assert cost["p"][0] == 1.0 and cost["p"][1] < 1e-10         # sd ~0 up to rounding
    # A constant reference (the Bayes-optimal fusion) broadcasts over seeds; 2 seeds: no verdict.
    assert findings.under_use_by_cost(base, np.array([0.9, 0.8, 0.8]))["under_used"].tolist() == [1]
    assert findings.under_use_by_cost(base[:2], ref[:2])["under_used"].tolist() == []
    # The baseline above the reference is not a loss.
    assert findings.under_use_by_cost(ref, base)["under_used"].tolist() == []


def test_holm_claim3_corrects_only_the_claim3_family() -> None:
    rows = [{"claim": "1. the bias persists", "p": 0.01, "verdict": "supported", "reason": "r"},
            {"claim": findings.RECOVERY_CLAIM, "subject": "a", "p": 0.02, "effect": 0.1, "verdict": "supported",
             "reason": "r"},
            {"claim": findings.RECOVERY_CLAIM, "subject": "b", "p": 0.001, "effect": 0.1, "verdict": "supported",
             "reason": "r"},
            {"claim": findings.FAILURE_CLAIM, "verdict": "found", "reason": "r"},
            {"claim": "3. capability-aware allocation helps where the weak modality is more capable", "p": 0.3,
             "verdict": "inconclusive", "reason": "p = 0.3 >= 0.05"}]
    out = findings.holm_claim3(rows)
    assert out[0] == rows[0]                                   # claim 1 untouched
    # Family of 3: .001 x 3 = .003; .02 x 2 = .04; .3 x 1 = .3.
    assert out[2]["p_holm"] == pytest.approx(0.003) and out[2]["verdict"] == "supported"
    assert out[1]["p_holm"] == pytest.approx(0.04) and out[1]["verdict"] == "supported"
    assert out[4]["p_holm"] == pytest.approx(0.3)
    assert "p_holm" not in out[3]
    # Four more comparisons make the second inconclusive: .02 x 6 = .12.
    more = findings.holm_claim3(rows + [{"claim": findings.RECOVERY_CLAIM, "p": 0.9, "verdict": "inconclusive",
                                         "reason": ""}] * 4)
    assert more[1]["verdict"] == "inconclusive" and "Holm-adjusted p = 0.12" in more[1]["reason"]


# --- the claim-3 machinery on constructed models -------------------------------------------------------------

def draw(synth: dict, n_per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels and each modality's cue, drawn from a cue plan."""
    labels = np.repeat(np.arange(6), n_per_class)
    cue = {}
    for m in ("audio", "visual"):
        q = cues.cue_probs(synth, m, 6)
        own = rng.random(labels.size) < q[labels]
        other = rng.integers(5, size=labels.size)
        cue[m] = np.where(own, labels, other + (other >= labels))
    return labels, cue


def contributions(synth: dict, cue: dict[str, np.ndarray], weights: dict[str, float]) -> dict[str, np.ndarray]:
    """A concat-fusion head that reads the cues: C_m = w_m log P_m(cue | class); w = 1 for both is the
    Bayes-optimal fusion, a small visual weight under-uses visual."""
    return {m: weights[m] * np.log(cues.cue_likelihood(cues.cue_probs(synth, m, 6)).T[cue[m]]) for m in cue}


def simulate(name: str, weights: dict[str, float], seeds: int = 5, n_test: int = 60) -> list[dict]:
    """Per seed: baseline, late fusion of calibrated unimodal models (fit on validation) and the oracle
    allocation (per-class weights fit on a large sample of the plan: the planted truth) per-class accuracy."""
    return _simulate(name, tuple(sorted(weights.items())), seeds, n_test)


@functools.lru_cache(maxsize=8)             # several tests read the same simulated study (read-only)
def _simulate(name: str, weight_items: tuple[tuple[str, float], ...], seeds: int, n_test: int) -> list[dict]:
    weights = dict(weight_items)
    s = scenario(name)
    zero = np.zeros(6)
    rows = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        val_y, val_cue = draw(s, 12, rng)
        test_y, test_cue = draw(s, n_test, rng)
        oracle_y, oracle_cue = draw(s, 400, rng)
        # Unimodal models: their own log-likelihoods, a little noise from finite training.
        uni = {split: {m: np.log(cues.cue_likelihood(cues.cue_probs(s, m, 6)).T[c[m]])
                       + rng.normal(0, 0.1, (len(c[m]), 6)) for m in c} for split, c in
               (("val", val_cue), ("test", test_cue))}
        test = contributions(s, test_cue, weights)
        base = remedies.combine(test, zero, {"audio": 1.0, "visual": 1.0})
        late = remedies.late_fusion(uni["val"], val_y, uni["test"])
        alpha = remedies.fit_class_weights(contributions(s, oracle_cue, weights), zero, oracle_y, l2=1e-4)
        oracle = remedies.combine(test, zero, alpha)
        for method, logits in (("baseline", base), ("late_fusion", late), ("oracle", oracle)):
            acc = [float(np.mean(logits.argmax(1)[test_y == c] == c)) for c in range(6)]
            rows.append({"seed": seed, "method": method, **dict(zip(CLASSES, acc, strict=True))})
    return rows


def tables(rows: list[dict]) -> dict[str, pd.DataFrame]:
    frame = pd.DataFrame(rows)
    return {m: g.set_index("seed")[CLASSES] for m, g in frame.groupby("method")}


def claim3(name: str, weights: dict[str, float]) -> tuple[dict, list[dict], list[str]]:
    t = tables(simulate(name, weights))
    cost = findings.under_use_by_cost(t["baseline"].to_numpy(), t["late_fusion"].to_numpy())
    found = [CLASSES[i] for i in cost["under_used"]]
    planted_classes = [CLASSES[i] for i in cues.at_risk_classes(cues.bayes_accuracies(scenario(name), 6), "audio",
                                                                 planted.TIE_MARGIN)]
    rows = findings.recovery_findings(t["baseline"], {"remedy: oracle class weights": t["oracle"]}, CLASSES,
                                      planted_classes, {"remedy: oracle class weights": True})
    return cost, findings.holm_claim3(rows), found


def test_failure_scenario_baseline_shows_the_failure_mode_and_the_oracle_gains() -> None:
    """A fused model that under-uses visual (weight 0.1) on claim3_underuse: it loses SAD and FEA, exactly the
    planted failure classes, against the late fusion of the unimodal models; the oracle allocation wins
    them back ("supported" after Holm)."""
    cost, rows, found = claim3("claim3_underuse", {"audio": 1.0, "visual": 0.1})
    assert found == ["SAD", "FEA"]
    assert all(cost["loss"][i] > 0.2 for i in cost["under_used"])
    overall, lost = rows
    assert "SAD, FEA" in lost["evidence"] and lost["verdict"] == "supported" and lost["effect"] > 0.2
    assert lost["p_holm"] < findings.ALPHA
    assert overall["effect"] > 0                  # Bayes-optimal fusion is also better overall (81.2 vs 74.7)


def test_negative_control_shows_no_failure_mode_and_no_gain() -> None:
    """The same under-weighted visual on claim3_control costs nothing (audio is as reliable as visual's best
    everywhere): no class is lost, and the oracle allocation gains nothing: no "supported" verdict."""
    cost, rows, found = claim3("claim3_control", {"audio": 1.0, "visual": 0.1})
    assert found == []
    overall, lost = rows
    assert lost["verdict"] == "inconclusive" and lost["reason"] == "nothing to recover: the baseline loses no class"
    assert overall["verdict"] != "supported"
    assert abs(overall["effect"]) < 0.02


def test_a_bayes_optimal_baseline_loses_nothing_on_the_failure_scenario() -> None:
    """The machinery does not call a failure where the fused model already uses visual as warranted."""
    cost, rows, found = claim3("claim3_underuse", {"audio": 1.0, "visual": 1.0})
    assert found == []
    assert rows[0]["verdict"] != "supported"
    assert all(r["verdict"] != "supported" for r in rows)


# --- the analyse stage's claim-3 rows, from constructed tables ------------------------------------------------

def analyse_tables(name: str, weights: dict[str, float]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """per_class (unimodal models, baseline), remedies (the oracle as class_weights) and references (late
    fusion) as the analyse stage writes them, from the simulation above."""
    frame = pd.DataFrame(simulate(name, weights))
    per_class, remedy_rows, references = [], [], []
    s = scenario(name)
    exact = cues.bayes_accuracies(s, 6)
    for r in frame.to_dict("records"):
        for c in CLASSES:
            if r["method"] == "baseline":
                per_class.append({"method": "baseline", "seed": r["seed"], "class": c, "acc": r[c],
                                  "reliance_share_audio": 0.9})
            elif r["method"] == "late_fusion":
                references.append({"seed": r["seed"], "class": c, "reference": "late_fusion", "acc": r[c]})
        if r["method"] == "oracle":
            remedy_rows.append({"method": "baseline", "seed": r["seed"], "remedy": "class_weights",
                                **{f"class_acc_{i}": r[c] for i, c in enumerate(CLASSES)}})
    for seed in range(5):                       # unimodal models at their exact accuracies
        for m in ("audio", "visual"):
            per_class += [{"method": f"unimodal_{m}", "seed": seed, "class": c, "acc": exact[m][i]}
                          for i, c in enumerate(CLASSES)]
    return pd.DataFrame(per_class), pd.DataFrame(remedy_rows), pd.DataFrame(references)


@pytest.mark.parametrize("name, weights, found, verdict", [
    ("claim3_underuse", {"audio": 1.0, "visual": 0.1}, "found", "supported"),
    ("claim3_control", {"audio": 1.0, "visual": 0.1}, "not found", "inconclusive"),
])
def test_analyse_findings_carry_claim3_by_cost(name: str, weights: dict[str, float], found: str,
                                              verdict: str) -> None:
    """claims.findings on the analyse stage's tables: the failure-mode rows (late fusion and exact Bayes
    references), the baseline's accuracy where claim 3 is measured, the oracle's verdict after Holm, and the
    planted failure classes recovered, on the failure scenario and on the negative control."""
    from avbias.analyse import claims

    per_class, remedy_rows, references = analyse_tables(name, weights)
    converged = pd.DataFrame({"method": ["baseline", "unimodal_audio", "unimodal_visual"], "converged": True})
    params = {"synth": scenario(name), "analysis": {"dominance_margin": 0.0}}
    table = claims.findings("synth_cremad", pd.DataFrame(), per_class, remedy_rows, converged, [], None, CLASSES,
                            dict.fromkeys(CLASSES, 60), params, references)
    # No joint-model runs table: claims 1-2 are skipped; the claim-3 cost rows need modalities, so call the
    # cost rows directly as findings() does when the joint runs are present.
    rows = claims.cost_findings("synth_cremad", per_class, remedy_rows, references, CLASSES,
                                {"baseline": True}, dict.fromkeys(CLASSES, 60), params)
    rows = findings.holm_claim3(rows)
    failure = [r for r in rows if r["claim"] == findings.FAILURE_CLAIM]
    assert [r["subject"].split(" (")[0] for r in failure] == [
        "baseline vs late fusion of the unimodal models", "baseline vs the Bayes-optimal fusion"]
    assert failure[0]["verdict"] == found
    weights_rows = [r for r in rows if r["subject"] == "remedy: class_weights"]
    lost = weights_rows[1]
    assert lost["verdict"] == verdict
    truth = table[(table["claim"] == "planted truth") & (table["subject"] == "failure classes (exact plan)")]
    assert truth["verdict"].tolist() == ["recovered"], truth.to_dict("records")
    if found == "found":
        assert "SAD (+" in failure[0]["evidence"] and "visual's share 0.10" in failure[0]["evidence"]
        measured = next(r for r in rows if r["claim"] == "3. the baseline where claim 3 is measured")
        assert measured["evidence"].startswith("accuracy on SAD, FEA (120 test clips)")
        assert 0.2 < measured["effect"] < 0.45                    # the baseline follows audio: ~30% there
        assert lost["p_holm"] >= lost["p"]


def test_every_remedy_enters_the_claim3_family() -> None:
    """Each remedy of remedies.REMEDIES fit on the baseline (calibrate_branches included) gets its claim-3 rows,
    overall and on the classes the baseline loses, and Holm's correction runs over all of them: the family
    grows with REMEDIES, never a hard-coded count."""
    from avbias.analyse import claims

    per_class, oracle, references = analyse_tables("claim3_underuse", {"audio": 1.0, "visual": 0.1})
    # Every remedy scored as the oracle, each a little worse than the last (distinct p-values).
    remedy_rows = pd.concat([oracle.assign(remedy=name, **{f"class_acc_{i}": oracle[f"class_acc_{i}"] - 0.01 * k
                                                           for i in range(6)})
                             for k, name in enumerate(remedies.REMEDIES)], ignore_index=True)
    params = {"synth": scenario("claim3_underuse"), "analysis": {"dominance_margin": 0.0}}
    rows = findings.holm_claim3(claims.cost_findings("synth_cremad", per_class, remedy_rows, references, CLASSES,
                                                     {"baseline": True}, dict.fromkeys(CLASSES, 60), params))
    assert "calibrate_branches" in remedies.REMEDIES
    for claim in (findings.RECOVERY_CLAIM, findings.OVERALL_CLAIM):
        family = [r for r in rows if r["claim"] == claim]
        assert [r["subject"] for r in family] == [f"remedy: {name}" for name in sorted(remedies.REMEDIES)]
        p = np.array([r["p"] for r in family])
        np.testing.assert_allclose([r["p_holm"] for r in family], stats.holm(p))
        assert min(r["p_holm"] for r in family) == pytest.approx(min(1.0, p.min() * len(remedies.REMEDIES)))


def test_late_fusion_accuracy_pairs_each_seeds_unimodal_models() -> None:
    """references.late_fusion_accuracy: calibrated unimodal log-likelihood logits fuse to the Bayes decision."""
    from avbias.analyse import references

    s = scenario("claim3_underuse")
    rng = np.random.default_rng(3)
    val_y, val_cue = draw(s, 20, rng)
    test_y, test_cue = draw(s, 300, rng)
    loaded = []
    for m in ("audio", "visual"):
        lik = np.log(cues.cue_likelihood(cues.cue_probs(s, m, 6)).T)
        loaded.append(({"seed": 0, "classes": CLASSES},
                       {"modalities": np.array([m]), "val_logits": lik[val_cue[m]], "val_labels": val_y,
                        "test_logits": lik[test_cue[m]], "test_labels": test_y}))
    loaded.append(({"seed": 0, "classes": CLASSES}, {"modalities": np.array(["audio", "visual"])}))
    table = references.late_fusion_accuracy(loaded)
    assert table["reference"].unique().tolist() == ["late_fusion"] and len(table) == 6
    # 300 clips per class: the Bayes-optimal accuracy within 4 binomial sd (<= 0.029 each).
    np.testing.assert_allclose(table["acc"], cues.bayes_accuracies(s, 6)["fused"], atol=0.09)
    # A seed whose unimodal runs saw different test clips is skipped.
    loaded[1][1]["test_labels"] = test_y[::-1].copy()
    assert references.late_fusion_accuracy(loaded).empty


def test_holm_claim3_counts_a_comparison_restated_by_two_rows_once() -> None:
    # The headline row for the per-class weights restates the recovery row of class_weights (same classes):
    # one test, so the family is 2, not 3: .01 x 2 = .02 for both rows, .04 x 1 = .04.
    same = {"p": 0.01, "effect": 0.2, "n_seeds": 6, "verdict": "supported", "reason": "r"}
    rows = [{"claim": "3. capability-aware allocation helps where the weak modality is more capable", **same},
            {"claim": findings.RECOVERY_CLAIM, "subject": "remedy: class_weights", **same},
            {"claim": findings.RECOVERY_CLAIM, "subject": "remedy: temperature", "p": 0.04, "effect": 0.1,
             "n_seeds": 6, "verdict": "supported", "reason": "r"}]
    out = findings.holm_claim3(rows)
    assert [r["p_holm"] for r in out] == pytest.approx([0.02, 0.02, 0.04])
    assert [r["verdict"] for r in out] == ["supported"] * 3
    # The same effect and p over other seeds is another test.
    other = findings.holm_claim3(rows[:2] + [{**rows[0], "n_seeds": 5}])
    assert [r["p_holm"] for r in other] == pytest.approx([0.02, 0.02, 0.02])


def test_holm_claim3_corrects_the_overall_rows_as_their_own_family() -> None:
    rows = [{"claim": findings.RECOVERY_CLAIM, "p": 0.02, "verdict": "supported", "reason": "r"},
            {"claim": findings.OVERALL_CLAIM, "p": 0.03, "verdict": "supported", "reason": "r"},
            {"claim": findings.OVERALL_CLAIM, "p": 0.04, "verdict": "not supported", "reason": "r"}]
    out = findings.holm_claim3(rows)
    assert out[0]["p_holm"] == pytest.approx(0.02) and out[0]["verdict"] == "supported"     # a family of one
    # Overall family of 2: .03 x 2 = .06, .04 x 1 -> .06 (non-decreasing): both inconclusive.
    assert [r["p_holm"] for r in out[1:]] == pytest.approx([0.06, 0.06])
    assert [r["verdict"] for r in out[1:]] == ["inconclusive", "inconclusive"]
    assert out[2]["reason"] == "p = 0.04 < 0.05 but Holm-adjusted p = 0.06 over the 2 overall-accuracy comparisons"


def test_bayes_correct_per_clip_by_hand() -> None:
    a, v = np.array([[0.9, 0.1], [0.4, 0.6]]), np.array([[0.7, 0.3], [0.2, 0.8]])
    # (ja, jv) = (0,0) -> class 0; (0,1) -> class 1 (.27 < .32); (1,0) -> class 1 (.07 < .12).
    got = cues.bayes_correct([a, v], [np.array([0, 0, 1, 0]), np.array([0, 1, 0, 1])], np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(got, [1.0, 0.0, 1.0, 1.0])
    coin = np.array([[0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_allclose(cues.bayes_correct([coin], [np.array([0, 1])], np.array([0, 1])), [0.5, 0.5])


def test_bayes_reference_redraws_the_generators_cues() -> None:
    """references.bayes_reference on the test clip ids: per class, the mean of bayes_correct over the cues the
    generator drew for those very clips, close to the expectation over many clips."""
    from avbias.analyse import references

    s = {**scenario("claim3_underuse"), "num_actors": 30, "num_sentences": 12}
    clips = synthetic.plan_clips(s)                           # 360 clips per class
    ids = np.array([c.clip_id for c in clips])
    labels = np.array([c.label for c in clips])
    loaded = [({"method": "baseline", "seed": 4, "classes": CLASSES}, {"test_clip_ids": ids, "test_labels": labels}),
              ({"method": "unimodal_audio", "seed": 4, "classes": CLASSES}, {})]
    table = references.bayes_reference(loaded, s)
    assert table["seed"].unique().tolist() == [4] and table["reference"].unique().tolist() == ["bayes"]
    liks = [cues.cue_likelihood(cues.cue_probs(s, m, 6)) for m in ("audio", "visual")]
    drawn = [np.array([synthetic.cue_label(s, m, c) for c in clips]) for m in ("audio", "visual")]
    correct = cues.bayes_correct(liks, drawn, labels)
    np.testing.assert_allclose(table["acc"], [correct[labels == c].mean() for c in range(6)])
    np.testing.assert_allclose(table["acc"], cues.bayes_accuracies(s, 6)["fused"], atol=0.09)   # 4 sd at n = 360
    assert references.bayes_reference(loaded, scenario("audio_dominant_mixed")).empty          # no cue plan


def test_power_benchmark_by_hand() -> None:
    """benchmarks/power.py: the t critical value (tables: 4.303 at 2 df, 2.571 at 5 df, two-sided 5%) and the
    simulated power: about alpha / 2 without an effect (positive side only), near 1 for a large one."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("power", REPO_ROOT / "benchmarks" / "power.py")
    power = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(power)
    assert power.t_critical(2, 0.05) == pytest.approx(4.303, abs=1e-3)
    assert power.t_critical(5, 0.05) == pytest.approx(2.571, abs=1e-3)
    assert power.power(0.0, 0.05, 6, 0.05) == pytest.approx(0.025, abs=0.01)
    assert power.power(0.2, 0.05, 6, 0.05) > 0.99
    # 80% power for d = 1 (gain = sd) at 5% two-sided needs 10 seeds (paired t-test tables: n = 10).
    assert power.seeds_needed(0.05, 0.05, 0.05, 0.8, 40) == 10


def test_branch_fusion_refits_the_baselines_own_allocation() -> None:
    """references.branch_fusion_accuracy: a baseline whose visual branch is under-weighted in its head (x 0.1) but
    whose branches carry the cue log-likelihoods is re-fused on validation to about the Bayes-optimal
    accuracy; unimodal runs are ignored."""
    from avbias.analyse import references

    s = scenario("claim3_underuse")
    rng = np.random.default_rng(5)
    val_y, val_cue = draw(s, 30, rng)
    test_y, test_cue = draw(s, 300, rng)
    lik = {m: np.log(cues.cue_likelihood(cues.cue_probs(s, m, 6)).T) for m in ("audio", "visual")}
    scale = {"audio": 1.0, "visual": 0.1}
    outputs = {"modalities": np.array(["audio", "visual"]), "val_labels": val_y, "test_labels": test_y,
               **{f"{split}_logits_{m}": scale[m] * lik[m][c[m]] for split, c in (("val", val_cue), ("test", test_cue))
                  for m in ("audio", "visual")}}
    loaded = [({"method": "baseline", "seed": 1, "classes": CLASSES}, outputs),
              ({"method": "unimodal_audio", "seed": 1, "classes": CLASSES}, {"modalities": np.array(["audio"])})]
    table = references.branch_fusion_accuracy(loaded)
    assert table["seed"].unique().tolist() == [1] and table["reference"].unique().tolist() == ["branch_fusion"]
    np.testing.assert_allclose(table["acc"], cues.bayes_accuracies(s, 6)["fused"], atol=0.09)
    # As weighted in the head, the baseline follows audio: about 30% on SAD and FEA.
    head = outputs["test_logits_audio"] + outputs["test_logits_visual"]
    assert np.mean(head.argmax(1)[test_y == 2] == 2) < 0.45


def test_failure_mode_finding_needs_three_seeds() -> None:
    cost = findings.under_use_by_cost(np.array([[0.5, 0.9], [0.5, 0.9]]), np.array([[0.9, 0.9], [0.9, 0.9]]))
    row = findings.failure_mode_finding(["SAD", "NEU"], cost, "a reference")
    assert row["verdict"] == "inconclusive" and row["reason"] == "2 seeds (a verdict needs 3)"
    three = findings.under_use_by_cost(np.array([[0.5, 0.9]] * 3), np.array([[0.9, 0.9]] * 3))
    row = findings.failure_mode_finding(["SAD", "NEU"], three, "a reference", np.array([0.3, 0.8]),
                                        ["visual", "audio"])
    assert row["verdict"] == "found" and row["evidence"].startswith("SAD (+0.400, Holm p ")
    assert row["evidence"].endswith("; visual's share 0.30)")                # the mechanism beside the cost
    assert row["subject"] == "baseline vs a reference" and row["n_seeds"] == 3


# --- calibration before fusion can say "helps", and stays silent where the branches are calibrated ----------

def branch_scores(q: float, scale: float, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A branch whose cue is the label with probability q (another class otherwise), read as scale x (one-hot of
    the cue + noise): calibrated at one scale, over-confident above it, under-confident below."""
    k = 4
    cue = np.where(rng.random(len(labels)) < q, labels, (labels + rng.integers(1, k, len(labels))) % k)
    return scale * (np.eye(k)[cue] + 0.3 * rng.standard_normal((len(labels), k)))


def calibrated_gain(scales: tuple[float, float], seed: int = 0) -> tuple[float, dict[str, float]]:
    """Test accuracy of calibrate_branches minus the fused model as trained, and the remedy's weights 1/T_m:
    audio's cue right 60% of the time, visual's 90%, each branch read at the given scale."""
    rng = np.random.default_rng(seed)
    val_y, test_y = np.repeat(np.arange(4), 300), np.repeat(np.arange(4), 300)
    val = {"audio": branch_scores(0.6, scales[0], val_y, rng), "visual": branch_scores(0.9, scales[1], val_y, rng)}
    test = {"audio": branch_scores(0.6, scales[0], test_y, rng), "visual": branch_scores(0.9, scales[1], test_y, rng)}
    bias = np.zeros(4)
    alpha = remedies.REMEDIES["calibrate_branches"](val, bias, val_y, {})
    acc = [float((remedies.combine(test, bias, a).argmax(1) == test_y).mean())
           for a in ({"audio": 1.0, "visual": 1.0}, alpha)]
    return acc[1] - acc[0], alpha


def test_calibrating_each_branch_before_fusion_wins_when_one_branch_is_over_confident() -> None:
    # Audio (the weaker) read 20 times louder than visual: the fused model follows audio (about 70%); calibrated,
    # visual's 90% cue decides where they disagree.
    gain, alpha = calibrated_gain((8.0, 0.4))
    assert gain > 0.15 and alpha["audio"] < 1 < alpha["visual"]


def test_calibrating_branches_that_are_already_calibrated_changes_nothing() -> None:
    # Each branch at the scale its validation NLL picks (T = 1 on the grid): the remedy has nothing to fix.
    gain, alpha = calibrated_gain((1.15, 3.0))
    assert alpha == {"audio": 1.0, "visual": 1.0} and abs(gain) < 0.02


# --- the demo's shape: 12 baseline seeds beside 4 for a method (run.seeds_by_method) ---------------------------

def test_a_method_with_fewer_seeds_than_the_baseline_is_compared_on_the_seeds_both_have() -> None:
    """Positive and negative control of the pairing: the baseline's extra seeds 4-11 lose SAD and FEA badly, so a
    comparison against the baseline's 12-seed mean would call a method that merely equals the baseline on seeds
    0-3 a gain. Paired on those 4 seeds it is inconclusive; a planted +0.15 on them is supported."""
    rng = np.random.default_rng(0)
    good = 0.6 + 0.05 * rng.standard_normal((4, len(CLASSES)))
    bad = 0.2 + 0.05 * rng.standard_normal((8, len(CLASSES)))
    base = pd.DataFrame(np.vstack([good, bad]), columns=CLASSES)                    # seeds 0-11
    same = base.iloc[:4] + 0.01 * rng.standard_normal((4, len(CLASSES)))           # seeds 0-3, no effect
    rows = findings.recovery_findings(base, {"method: same": same, "method: better": same + 0.15}, CLASSES,
                                      ["SAD", "FEA"], {"method: same": True, "method: better": True})
    lost = {r["subject"]: r for r in rows if r["claim"] == findings.RECOVERY_CLAIM}
    assert lost["method: same"]["n_seeds"] == 4 and lost["method: same"]["verdict"] == "inconclusive"
    assert abs(lost["method: same"]["effect"]) < 0.02
    assert lost["method: better"]["verdict"] == "supported"
    assert lost["method: better"]["effect"] == pytest.approx(0.15 + lost["method: same"]["effect"])
