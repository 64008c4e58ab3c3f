"""Planted per-class capability (analysis/planted.py): hand-computed values; the scenario files."""

from __future__ import annotations

import math

import jsonschema
import numpy as np
import pytest

from avbias.analyse import planted
from avbias.analyse.planted import Curve
from avbias.config import REPO_ROOT, SCHEMA_PATH, deep_merge, read_yaml
from avbias.errors import ParamsError

# Curves with the threshold at 0 dB and a 1 dB width: expected accuracy is chance + (1 - chance) * sigmoid(snr).
UNIT = {"audio": Curve(0.0, 1.0), "visual": Curve(0.0, 1.0)}
SCENARIOS = REPO_ROOT / "config" / "scenarios"


def synth(audio_db: float = 0.0, visual_db: float = 0.0, audio_offsets=None, visual_offsets=None) -> dict:
    return {"audio_snr_db": audio_db, "visual_snr_db": visual_db,
            "audio_class_snr_offset_db": audio_offsets, "visual_class_snr_offset_db": visual_offsets}


def test_planted_snr_adds_offsets_to_the_global_snr() -> None:
    snr = planted.planted_snr(synth(-16.0, 12.0, [1, 2, 3, 4, 5, 6], []), 6)
    np.testing.assert_array_equal(snr["audio"], [-15, -14, -13, -12, -11, -10])
    np.testing.assert_array_equal(snr["visual"], [12.0] * 6)             # [] = no offsets
    np.testing.assert_array_equal(planted.planted_snr({"audio_snr_db": 1, "visual_snr_db": 2}, 3)["visual"], [2, 2, 2])
    with pytest.raises(ParamsError, match=r"synth\.visual_class_snr_offset_db: 2 values .* 6 classes"):
        planted.planted_snr(synth(visual_offsets=[1, 2]), 6)


def test_planted_accuracy_follows_the_calibrated_curve() -> None:
    acc = planted.planted_accuracy(synth(0.0, math.log(3), [0, 0], [0, 0]), 2, UNIT)
    np.testing.assert_allclose(acc["audio"], [0.75, 0.75])               # 1/2 + 1/2 * sigmoid(0)
    np.testing.assert_allclose(acc["visual"], [0.875, 0.875])            # 1/2 + 1/2 * 3/4
    curve = planted.DEMO_CURVES["audio"]
    assert planted.expected_accuracy(curve.threshold_db, curve, 6) == pytest.approx(7 / 12)   # halfway from 1/6 to 1


def test_more_capable_per_class_and_overall() -> None:
    s = synth(0.0, 0.0, [10, -10, 0, 0.1], [-10, 10, 0, 0])
    # diffs: +0.9999, -0.9999, 0, 0.5 * (sigmoid(0.1) - 1/2) = 0.0125
    assert planted.planted_more_capable(s, 4, 0.15, UNIT).tolist() == ["audio", "visual", "tie", "tie"]
    assert planted.planted_more_capable(s, 4, 0.01, UNIT).tolist() == ["audio", "visual", "tie", "audio"]
    assert planted.planted_overall_dominant(s, 4, 0.15, UNIT) == "tie"   # +1 and -1 cancel
    assert planted.planted_overall_dominant(synth(3.0, -3.0), 6, 0.15, UNIT) == "audio"
    assert planted.planted_overall_dominant(synth(-3.0, 3.0), 6, 0.15, UNIT) == "visual"
    assert planted.more_capable(np.array([0.2, -0.2, 0.15, -0.15]), 0.15).tolist() == ["audio", "visual", "tie", "tie"]


def test_average_ranks_share_ties() -> None:
    np.testing.assert_array_equal(planted.average_ranks([10, 20, 20, 30]), [1, 2.5, 2.5, 4])
    np.testing.assert_array_equal(planted.average_ranks([3, 1, 3, 3]), [3, 1, 3, 3])       # ranks 2, 3, 4 -> 3
    np.testing.assert_array_equal(planted.average_ranks([0.5, -1.0]), [2, 1])


def test_spearman_by_hand() -> None:
    assert planted.spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert planted.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ties: ranks (1, 2.5, 2.5, 4) vs (1, 3, 2, 4); centred products 4.5 over sqrt(4.5 * 5) -> 3 / sqrt(10).
    assert planted.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    # The "mixed" plan (pairs tied): ranks (5.5, 5.5, 1.5, 1.5, 3.5, 3.5).
    plan = [30, 30, -30, -30, 0, 0]
    assert planted.capability_rank_correlation(plan, [0.5, 0.45, -0.4, -0.5, 0.02, -0.01]) == pytest.approx(
        4 / math.sqrt(17.5))
    # One tied pair's member overtakes a member of the pair above: 14 / sqrt(16 * 17.5).
    assert planted.capability_rank_correlation(plan, [0.5, 0.1, -0.4, -0.5, 0.3, -0.01]) == pytest.approx(
        14 / math.sqrt(280))
    assert math.isnan(planted.spearman([1, 1, 1], [1, 2, 3]))            # nothing to order
    with pytest.raises(ValueError, match="one length"):
        planted.spearman([1, 2], [1, 2, 3])


def test_under_used_classes_is_tested_over_seeds() -> None:
    capable = np.array(["audio", "visual", "tie", "audio", "visual", "audio"])
    # Per seed (rows), audio's share per class (columns).
    share_audio = np.array([[0.40, 0.30, 0.1, 0.60, 0.55, 0.30],
                            [0.42, 0.32, 0.1, 0.62, 0.57, 0.70],
                            [0.38, 0.28, 0.1, 0.58, 0.53, 0.45]])
    # Class 0: audio capable, share 0.40 +- 0.02 over 3 seeds: t = -8.7, p = 0.013, under-used. Class 1: visual's
    # share 0.70: fine. Ties never. Class 3: 0.60 fine. Class 4: visual's share 0.45 +- 0.02: under-used.
    # Class 5: audio's mean 0.48 but the seeds disagree (0.30, 0.70, 0.45): p = 0.88, not called a failure.
    assert planted.under_used_classes(capable, share_audio).tolist() == [0, 4]
    assert planted.under_used_classes(capable, share_audio, alpha=0.01).tolist() == []      # p = 0.013
    assert planted.under_used_classes(capable, share_audio[:2]).tolist() == []              # 2 seeds: no verdict
    with pytest.raises(ValueError):
        planted.under_used_classes(capable, share_audio[:, :3])


def test_recovery_summary() -> None:
    s = synth(0.0, 0.0, [5, 5, -5, -5, 0, 0], [-5, -5, 5, 5, 0, 0])
    measured = {"audio": [0.9, 0.95, 0.5, 0.4, 0.9, 0.92], "visual": [0.5, 0.45, 0.95, 0.9, 0.88, 0.93]}
    r = planted.recovery(s, measured, curves=UNIT)
    assert r.planted_more_capable == ["audio", "audio", "visual", "visual", "tie", "tie"]
    assert r.measured_more_capable == r.planted_more_capable and all(r.classes_recovered)
    assert (r.planted_dominant, r.measured_dominant, r.dominant_recovered) == ("tie", "tie", True)
    assert r.rank_correlation == pytest.approx(4 / math.sqrt(17.5)) and r.ordering_recovered is True
    # The reverse measurement recovers nothing.
    flipped = planted.recovery(s, {"audio": measured["visual"], "visual": measured["audio"]}, curves=UNIT)
    assert flipped.ordering_recovered is False and flipped.classes_recovered == [False] * 4 + [True] * 2
    # A uniform plan: overall dominance only; no per-class ordering to recover.
    uniform = planted.recovery(synth(5.0, -5.0), {"audio": [0.9] * 6, "visual": [0.3] * 6}, curves=UNIT)
    assert uniform.dominant_recovered and uniform.ordering_recovered is None
    assert uniform.as_dict()["rank_correlation"] is None


def scenario(name: str) -> dict:
    return deep_merge(read_yaml(REPO_ROOT / "params.yaml"), read_yaml(SCENARIOS / f"{name}.yaml"))["synth"]


@pytest.mark.parametrize("name, dominant, per_class", [
    ("audio_dominant", "audio", ["audio"] * 6),
    ("visual_dominant", "visual", ["visual"] * 6),
    ("balanced", "tie", ["tie"] * 6),
    ("mixed", "tie", ["audio", "audio", "visual", "visual", "tie", "tie"]),
    ("audio_dominant_mixed", "audio", ["audio", "audio", "visual", "visual", "audio", "audio"]),   # the demo's
])
def test_scenarios_plant_what_their_comments_state(name: str, dominant: str, per_class: list[str]) -> None:
    """Each scenario only overrides synth keys and validates; its planted truth is as documented."""
    override = read_yaml(SCENARIOS / f"{name}.yaml")
    assert set(override) == {"synth"}
    s = scenario(name)
    jsonschema.validate(s, read_yaml(SCHEMA_PATH)["properties"]["synth"])    # the synth group only
    text = (SCENARIOS / f"{name}.yaml").read_text()
    assert "Planted truth" in text
    assert planted.planted_overall_dominant(s, 6) == dominant
    assert planted.planted_more_capable(s, 6).tolist() == per_class
