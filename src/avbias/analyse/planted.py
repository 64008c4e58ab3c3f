"""The per-class capability planted in the synthetic dataset, and whether measurements recover it.

The generator sets each modality's class-signal strength per class: planted SNR = `synth.<m>_snr_db` +
`synth.<m>_class_snr_offset_db[c]` (docs/synthetic.md). Decibels are not comparable across modalities (audio
-15 dB is easy, visual +3 dB is hard) and capability saturates (two modalities far above their thresholds
are equally capable however many dB apart), so comparisons go through each modality's calibrated
accuracy curve: the unimodal test accuracy a model of demo size reaches at a given SNR, a logistic in dB
between chance and 1 (DEMO_CURVES, measured in docs/synthetic.md). The planted capability of a modality on
a class is that expected accuracy.

Pure: numpy only (no torch, no file IO). Inputs are the `synth` params group and plain arrays; classes are
indexed in label order (CREMA-D: NEU HAP SAD FEA DIS ANG).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from avbias.analyse import cues, stats
from avbias.errors import ParamsError

MODALITIES = ("audio", "visual")
TIE = "tie"


@dataclass(frozen=True)
class Curve:
    """Unimodal accuracy against SNR: chance + (1 - chance) * sigmoid((snr_db - threshold_db) / width_db)."""

    threshold_db: float       # SNR at which accuracy is halfway between chance and 1
    width_db: float           # logistic scale: from 27% to 73% of the way over threshold -/+ width


# Demo size (48 px frames, width-8 ResNet18, 20 epochs, ~600 training clips), fitted over seeds to every
# uniform-SNR calibration run (docs/synthetic.md). Audio's curve is a mixture: below about -18 dB training
# either learns the formants (>90%) or never leaves chance, depending on the seed.
DEMO_CURVES: dict[str, Curve] = {"audio": Curve(-19.5, 1.25), "visual": Curve(7.0, 2.25)}

# Planted accuracies closer than this are a tie. A per-class test accuracy on ~29 clips (864 clips, 20% test)
# has a standard error of up to 0.09, so the difference of two modalities' up to 0.13: a smaller planted gap
# cannot be told from noise on one seed.
TIE_MARGIN = 0.15
# Spearman's rho over 6 classes: 0.83 is the one-sided 5% critical value. The "mixed" plan ties classes in
# pairs: a measurement that keeps the pairs in order scores 0.96-1, one swap across neighbouring pairs 0.84.
RANK_THRESHOLD = 0.8


def class_offsets(synth: Mapping[str, Any], modality: str, num_classes: int) -> np.ndarray:
    """synth.<modality>_class_snr_offset_db as an array (zeros when absent, null or empty)."""
    key = f"{modality}_class_snr_offset_db"
    values = synth.get(key) or []
    if not len(values):
        return np.zeros(num_classes)
    if len(values) != num_classes:
        raise ParamsError(f"synth.{key}: {len(values)} values given, but the dataset has {num_classes} classes")
    return np.asarray(values, dtype=float)


def planted_snr(synth: Mapping[str, Any], num_classes: int) -> dict[str, np.ndarray]:
    """Per modality, the planted SNR of each class in dB (global SNR + the class's offset)."""
    return {m: float(synth[f"{m}_snr_db"]) + class_offsets(synth, m, num_classes) for m in MODALITIES}


def expected_accuracy(snr_db: np.ndarray, curve: Curve, num_classes: int) -> np.ndarray:
    chance = 1.0 / num_classes
    return chance + (1 - chance) / (1 + np.exp(-(np.asarray(snr_db, dtype=float) - curve.threshold_db)
                                               / curve.width_db))


def planted_accuracy(synth: Mapping[str, Any], num_classes: int,
                     curves: Mapping[str, Curve] = DEMO_CURVES) -> dict[str, np.ndarray]:
    """Per modality, the unimodal accuracy each class's planted SNR leads to (the planted capability). A
    modality with cue probabilities (synth.<m>_class_cue_prob, a plan read at an easy SNR) gets its exact
    Bayes-optimal accuracy instead (analyse.cues), not a calibration curve's prediction."""
    out = {m: expected_accuracy(snr, curves[m], num_classes) for m, snr in planted_snr(synth, num_classes).items()}
    if cues.is_cue_plan(synth):
        exact = cues.bayes_accuracies(synth, num_classes)
        out.update({m: exact[m] for m in MODALITIES if cues.cue_probs(synth, m, num_classes) is not None})
    return out


def planted_diff(synth: Mapping[str, Any], num_classes: int, curves: Mapping[str, Curve] = DEMO_CURVES) -> np.ndarray:
    """Per class, planted capability of audio minus visual (expected accuracy, -1..1)."""
    acc = planted_accuracy(synth, num_classes, curves)
    return acc["audio"] - acc["visual"]


def more_capable(diff: np.ndarray, tie_margin: float = TIE_MARGIN) -> np.ndarray:
    """'audio' where diff (audio - visual) > tie_margin, 'visual' where < -tie_margin, else 'tie'."""
    diff = np.asarray(diff, dtype=float)
    return np.where(diff > tie_margin, "audio", np.where(diff < -tie_margin, "visual", TIE))


def planted_more_capable(synth: Mapping[str, Any], num_classes: int, tie_margin: float = TIE_MARGIN,
                         curves: Mapping[str, Curve] = DEMO_CURVES) -> np.ndarray:
    """Per class: 'audio', 'visual' or 'tie', the modality planted more capable."""
    return more_capable(planted_diff(synth, num_classes, curves), tie_margin)


def planted_overall_dominant(synth: Mapping[str, Any], num_classes: int, tie_margin: float = TIE_MARGIN,
                             curves: Mapping[str, Curve] = DEMO_CURVES) -> str:
    """The modality more capable over all classes (classes are balanced): mean planted accuracy."""
    return str(more_capable(np.mean(planted_diff(synth, num_classes, curves)), tie_margin))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of the ranks they span."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size)
    ranks[order] = np.arange(1, x.size + 1)
    _, group, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(group, weights=ranks)
    return sums[group] / counts[group]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties; nan when either side is constant (no ordering)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"spearman: expected two 1-d arrays of one length, got {a.shape} and {b.shape}")
    if np.any(~np.isfinite(a)) or np.any(~np.isfinite(b)):
        raise ValueError("spearman: values must be finite")
    ra, rb = average_ranks(a) - (a.size + 1) / 2, average_ranks(b) - (b.size + 1) / 2
    denom = np.sqrt(np.sum(ra**2) * np.sum(rb**2))
    return float(np.sum(ra * rb) / denom) if denom > 0 else float("nan")


def capability_rank_correlation(planted_diff: np.ndarray, measured_diff: np.ndarray) -> float:
    """Spearman correlation over classes of the planted (audio - visual) capability difference (planted
    SNR in dB or planted accuracy) with the measured (audio - visual) unimodal test accuracy difference."""
    return spearman(planted_diff, measured_diff)


def under_used_classes(more_capable_measured: np.ndarray, reliance_share_audio: np.ndarray,
                       alpha: float = 0.05, min_seeds: int = 3) -> np.ndarray:
    """Classes (indices) where the fused model relies less on the more capable modality: the capable
    modality's reliance share is below 0.5 over seeds (one-sample t-test, p < alpha, at least min_seeds
    seeds), so that a share near 0.5 is not called a failure on one machine and not on another. Ties are
    never under-used.

    reliance_share_audio: seeds x classes, audio's share of the fused decision (0..1; visual's is 1 - it)."""
    capable = np.asarray(more_capable_measured)
    share_audio = np.atleast_2d(np.asarray(reliance_share_audio, dtype=float))
    if share_audio.shape[1:] != capable.shape:
        raise ValueError(f"under_used_classes: {capable.shape} labels but {share_audio.shape[1:]} shares per seed")
    share = np.where(capable == "audio", share_audio, 1 - share_audio)
    if len(share) < min_seeds:
        return np.array([], dtype=int)
    p = np.array([stats.t_test_p(column - 0.5) for column in share.T])
    return np.flatnonzero((capable != TIE) & (np.nanmean(share, 0) < 0.5) & (p < alpha))


@dataclass
class Recovery:
    """Does a measurement recover what was planted?"""

    planted_dominant: str                 # over all classes: 'audio', 'visual' or 'tie'
    measured_dominant: str
    dominant_recovered: bool
    planted_more_capable: list[str]       # per class
    measured_more_capable: list[str]
    classes_recovered: list[bool]         # per class: planted and measured labels agree
    rank_correlation: float               # planted vs measured (audio - visual), nan when the plan is uniform
    ordering_recovered: bool | None       # rank_correlation >= rank_threshold; None: nothing planted to order
    rank_threshold: float
    tie_margin: float
    planted_accuracy: dict[str, list[float]] = field(default_factory=dict)
    measured_accuracy: dict[str, list[float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rank_correlation"] = None if np.isnan(self.rank_correlation) else self.rank_correlation
        return out


def recovery(synth: Mapping[str, Any], measured_accuracy: Mapping[str, np.ndarray], *,
             tie_margin: float = TIE_MARGIN, rank_threshold: float = RANK_THRESHOLD,
             curves: Mapping[str, Curve] = DEMO_CURVES) -> Recovery:
    """Compare the plan with measured per-class unimodal test accuracy ({'audio': [...], 'visual': [...]},
    one value per class in label order, e.g. the mean over seeds of the unimodal runs)."""
    audio = np.asarray(measured_accuracy["audio"], dtype=float)
    visual = np.asarray(measured_accuracy["visual"], dtype=float)
    if audio.shape != visual.shape or audio.ndim != 1:
        raise ValueError(f"recovery: per-class accuracies of one length expected, got {audio.shape} and {visual.shape}")
    num_classes = audio.size
    planted = planted_accuracy(synth, num_classes, curves)
    p_diff, m_diff = planted["audio"] - planted["visual"], audio - visual
    planted_labels, measured_labels = more_capable(p_diff, tie_margin), more_capable(m_diff, tie_margin)
    planted_dom = planted_overall_dominant(synth, num_classes, tie_margin, curves)
    measured_dom = str(more_capable(np.mean(m_diff), tie_margin))
    # Only the plan's variation across classes can be ordered: a uniform plan (same difference on every
    # class) has no per-class ordering to recover.
    uniform = np.ptp(p_diff) < 1e-9
    rho = float("nan") if uniform else capability_rank_correlation(p_diff, m_diff)
    return Recovery(
        planted_dominant=planted_dom, measured_dominant=measured_dom, dominant_recovered=planted_dom == measured_dom,
        planted_more_capable=planted_labels.tolist(), measured_more_capable=measured_labels.tolist(),
        classes_recovered=(planted_labels == measured_labels).tolist(),
        rank_correlation=rho, ordering_recovered=None if uniform else bool(rho >= rank_threshold),
        rank_threshold=rank_threshold, tie_margin=tie_margin,
        planted_accuracy={m: v.tolist() for m, v in planted.items()},
        measured_accuracy={"audio": audio.tolist(), "visual": visual.tolist()},
    )
