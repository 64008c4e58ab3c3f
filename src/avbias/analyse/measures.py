"""One run's measures, pure functions of its metrics.json and outputs.npz: run-level (one row of runs.csv),
per class (per_class.csv), per test sample (samples.csv), the decision-layer remedies (remedies.csv) and each
branch's calibration (calibration.csv). The decision-layer arithmetic itself is in decision_layer.py, the
remedies in remedies.py, the calibration measures in calibration.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avbias.analyse import decision_layer as dl
from avbias.analyse.calibration import branch_calibration
from avbias.analyse.remedies import REMEDIES, branch_logits, combine
from avbias.metrics import accuracy, macro_f1, per_class_accuracy

ANALYSIS_SPLIT = "test"


def initialisation_label(record: dict[str, Any] | None) -> str:
    """A run's encoder initialisation (metrics.json `initialisation`, avbias.models.weights) in words: 'random',
    or e.g. 'visual torchvision:resnet18 (finetune)'."""
    external = {m: Path(v["source"]).name for m, v in (record or {}).items() if isinstance(v, dict)}
    if not external:
        return "random"
    return ", ".join(f"{m} {s}" for m, s in sorted(external.items())) + f" ({record.get('encoders')})"


def linear_head(metrics: dict[str, Any], outputs: dict[str, np.ndarray]) -> bool:
    """Whether the fused head is linear per modality, z = sum_m W_m f_m + b with a block W_m of its own for
    each modality, so that the decision-weight measures and the remedies apply: not a head shared by the
    modalities (MLA: one block for all), nor one without decision weights (FiLM, gated)."""
    return "head_weight" in outputs and metrics.get("fusion") != "shared"


def weight_norms(outputs: dict[str, np.ndarray], modalities: list[str]) -> dict[str, dict[str, Any]]:
    """decision_layer.decision_weight_norms of a linear head's blocks W_m."""
    return dl.decision_weight_norms(dl.weight_blocks(outputs["head_weight"], outputs["feature_dims"].tolist(),
                                                     modalities))


def contributions(metrics: dict[str, Any], outputs: dict[str, np.ndarray], split: str
                  ) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Each modality's contribution C_m (N, C) to the fused logits z = sum_m C_m + b, and b; None where the
    head does not decompose (FiLM, gated). Linear heads: C_m = W_m f_m; the shared MLA head: its weighted
    per-modality logits (bias included, b = 0)."""
    modalities = [str(m) for m in outputs["modalities"]]
    if not metrics.get("additive", True):
        return None
    if linear_head(metrics, outputs):
        blocks = dl.weight_blocks(outputs["head_weight"], outputs["feature_dims"].tolist(), modalities)
        return ({m: dl.logit_contributions(outputs[f"{split}_features_{m}"], blocks[m]) for m in modalities},
                outputs["head_bias"])
    return {m: outputs[f"{split}_logits_{m}"] for m in modalities}, np.zeros(outputs[f"{split}_logits"].shape[1])


@dataclass(frozen=True)
class Decomposition:
    """What a joint run's three kinds of measures share, computed once: each modality's feature norm per
    sample, its decision-weight norms (linear heads, else None) and its contributions C_m with the bias b
    (heads that decompose, else None)."""

    feature_norms: dict[str, np.ndarray]
    weight_norms: dict[str, dict[str, Any]] | None
    contributions: dict[str, np.ndarray] | None
    bias: np.ndarray | None

    @classmethod
    def of(cls, metrics: dict[str, Any], outputs: dict[str, np.ndarray], split: str) -> Decomposition:
        modalities = [str(m) for m in outputs["modalities"]]
        decomposed = contributions(metrics, outputs, split)
        contrib, bias = decomposed if decomposed is not None else (None, None)
        return cls({m: dl.feature_norms(outputs[f"{split}_features_{m}"]) for m in modalities},
                   weight_norms(outputs, modalities) if linear_head(metrics, outputs) else None, contrib, bias)


def measure_run(metrics: dict[str, Any], outputs: dict[str, np.ndarray], split: str = ANALYSIS_SPLIT
                ) -> tuple[dict[str, Any], list[dict[str, Any]], pd.DataFrame]:
    """Run-level measures (one row), per-class measures (one row per class), per-sample measures (an empty
    frame for a unimodal run)."""
    if len(outputs["modalities"]) < 2:
        return run_row(metrics, outputs, split), class_rows(metrics, outputs, split), pd.DataFrame()
    parts = Decomposition.of(metrics, outputs, split)
    samples = sample_rows(metrics, outputs, parts, split)
    return (run_row(metrics, outputs, split, parts, samples), class_rows(metrics, outputs, split, parts, samples),
            samples)


def _key(metrics: dict[str, Any]) -> dict[str, Any]:
    return {"method": metrics["method"], "seed": metrics["seed"]}


def sample_rows(metrics: dict[str, Any], outputs: dict[str, np.ndarray], parts: Decomposition,
                split: str = ANALYSIS_SPLIT) -> pd.DataFrame:
    """Per sample of a joint run: its label, each modality's feature norm and, for heads that decompose, its
    contribution to the true-class logit, to the predicted-class logit and to the margin."""
    modalities = [str(m) for m in outputs["modalities"]]
    labels, fused = outputs[f"{split}_labels"], outputs[f"{split}_logits"]
    samples = pd.DataFrame({**_key(metrics), "label": labels})
    for m in modalities:
        samples[f"feature_norm_{m}"] = parts.feature_norms[m]
    if parts.contributions is not None:
        predicted = fused.argmax(1)
        for m in modalities:
            c = parts.contributions[m]
            samples[f"true_contrib_{m}"] = dl.contribution_at(c, labels)
            samples[f"pred_contrib_{m}"] = dl.contribution_at(c, predicted)
            samples[f"margin_contrib_{m}"] = dl.margin_contribution(c, fused, labels)
    return samples


def run_row(metrics: dict[str, Any], outputs: dict[str, np.ndarray], split: str = ANALYSIS_SPLIT,
            parts: Decomposition | None = None, samples: pd.DataFrame | None = None) -> dict[str, Any]:
    """The run's row: accuracies and, for a joint run (parts and samples given), every run-level bias measure.
    A measure a head does not allow has no column (no weight measures for a shared head)."""
    modalities = [str(m) for m in outputs["modalities"]]
    row: dict[str, Any] = {
        **_key(metrics), "modalities": "+".join(modalities), "fusion": metrics.get("fusion", "concat"),
        "test_acc": metrics["test"]["acc"], "test_macro_f1": metrics["test"]["macro_f1"],
        "val_acc": metrics["val"]["acc"] if metrics.get("val") else np.nan, "best_epoch": metrics["best_epoch"],
        # The literature's figure (best test accuracy over epochs): selected on test, optimistic.
        "literature_best_test_acc": metrics.get("literature", {}).get("best_test_acc", np.nan),
        "initialisation": initialisation_label(metrics.get("initialisation")),
    }
    if parts is None or samples is None:
        return row
    a, v = modalities
    labels, fused = outputs[f"{split}_labels"], outputs[f"{split}_logits"]
    for m in modalities:
        row[f"branch_acc_{m}"] = dl.branch_accuracy(outputs[f"{split}_logits_{m}"], labels)
        row[f"feature_norm_{m}"] = float(parts.feature_norms[m].mean())
    row["feature_norm_ratio"] = row[f"feature_norm_{a}"] / max(row[f"feature_norm_{v}"], 1e-12)
    decides = dl.who_decides(fused, {m: outputs[f"{split}_logits_{m}"] for m in modalities})
    row.update({f"decides_{m}": decides[m] for m in modalities} | {"n_disagree": decides["n_disagree"]})
    followed = decides[a] + decides[v] if decides["n_disagree"] else 0.0    # the fused model may follow neither
    row["decides_share"] = decides[a] / followed if followed > 0 else np.nan
    if parts.weight_norms is not None:
        norms = parts.weight_norms
        ratio, class_ratio = dl.weight_norm_ratio(norms, a, v)
        row.update({f"weight_norm_{m}": norms[m]["overall"] for m in modalities})
        row.update({f"weight_share_{m}": s for m, s in dl.shares({m: norms[m]["overall"] for m in modalities}).items()})
        row["weight_share"], row["weight_ratio"] = row[f"weight_share_{a}"], ratio
        row["class_weight_ratio_median"] = float(np.median(class_ratio))
    if parts.contributions is not None:
        for m in modalities:
            c = parts.contributions[m]
            row[f"logit_contrib_{m}"] = dl.mean_abs_contribution(c)
            row[f"true_contrib_{m}"] = float(samples[f"true_contrib_{m}"].mean())
            row[f"margin_contrib_{m}"] = float(samples[f"margin_contrib_{m}"].mean())
            row[f"centred_contrib_{m}"] = dl.mean_abs_contribution(dl.centred(c))
        row.update({f"logit_share_{m}": s
                    for m, s in dl.shares({m: row[f"logit_contrib_{m}"] for m in modalities}).items()})
        row["logit_share"] = row[f"logit_share_{a}"]
        row["centred_logit_share"] = dl.shares({m: row[f"centred_contrib_{m}"] for m in modalities})[a]
        _shapley_measures(row, "feature", dl.shapley_accuracy(parts.contributions, parts.bias, labels), a)
    zeroed = {tuple(k[len(f"{split}_logits_zero_"):].split("_")): v for k, v in outputs.items()
              if k.startswith(f"{split}_logits_zero_")}
    if zeroed:
        _shapley_measures(row, "input", dl.shapley_input_accuracy({(): fused, **zeroed}, labels, modalities), a)
    return row


def _shapley_measures(row: dict[str, Any], kind: str, shapley: dict[str, float], first: str) -> None:
    """Shapley values of accuracy with absent modalities' features zeroed (`feature`, avbias) or their inputs
    zeroed (`input`, BalanceBenchmark's measure), and the first modality's share of their magnitudes."""
    row.update({f"shapley_{kind}_{m}": v for m, v in shapley.items()})
    total = sum(abs(v) for v in shapley.values())
    row[f"shapley_{kind}_share"] = abs(shapley[first]) / total if total > 0 else np.nan


def class_rows(metrics: dict[str, Any], outputs: dict[str, np.ndarray], split: str = ANALYSIS_SPLIT,
               parts: Decomposition | None = None, samples: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """One row per class: the fused accuracy and, for a joint run (parts and samples given), each branch's
    accuracy, feature norm, decision-weight norms (linear heads) and reliance (heads that decompose)."""
    modalities = [str(m) for m in outputs["modalities"]]
    classes = metrics["classes"]
    num_classes = len(classes)
    labels = outputs[f"{split}_labels"]
    per_class: dict[str, np.ndarray] = {
        "acc": per_class_accuracy(outputs[f"{split}_logits"].argmax(1), labels, num_classes)}
    if parts is not None and samples is not None:
        a, v = modalities
        for m in modalities:
            branch = outputs[f"{split}_logits_{m}"]
            per_class[f"branch_acc_{m}"] = per_class_accuracy(branch.argmax(1), labels, num_classes)
            per_class[f"feature_norm_{m}"] = dl.per_class_mean(parts.feature_norms[m], labels, num_classes)
        if parts.weight_norms is not None:
            norms = parts.weight_norms
            per_class["weight_ratio"] = dl.weight_norm_ratio(norms, a, v)[1]
            for m in modalities:
                per_class[f"weight_norm_{m}"] = norms[m]["per_class"]
                per_class[f"logit_scale_{m}"] = dl.logit_scale(norms[m]["per_class"], per_class[f"feature_norm_{m}"])
        if parts.contributions is not None:
            for m in modalities:
                per_class[f"true_contrib_{m}"] = dl.per_class_mean(samples[f"true_contrib_{m}"].to_numpy(), labels,
                                                                   num_classes)
                per_class[f"reliance_{m}"] = dl.per_class_mean(np.abs(parts.contributions[m]).mean(1), labels,
                                                               num_classes)
            per_class[f"reliance_share_{a}"] = (per_class[f"reliance_{a}"]
                                                / (per_class[f"reliance_{a}"] + per_class[f"reliance_{v}"]))
    return [{**_key(metrics), "class": name, **{k: float(x[c]) for k, x in per_class.items()}}
            for c, name in enumerate(classes)]


def refit_split(metrics: dict[str, Any], outputs: dict[str, np.ndarray]
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray] | None:
    """The validation and test contributions C_m and the bias b of a joint model whose decision layer can be
    refit on validation (the remedies, the branch calibration): a head linear per modality whose logits
    decompose, and validation outputs to fit on; None otherwise."""
    if len(outputs["modalities"]) < 2 or not linear_head(metrics, outputs) or not metrics.get("additive", True) \
            or "val_labels" not in outputs:   # fit on validation only
        return None
    val, bias = contributions(metrics, outputs, "val")
    test, _ = contributions(metrics, outputs, "test")
    return val, test, bias


def apply_remedies(metrics: dict[str, Any], outputs: dict[str, np.ndarray], weak: str) -> list[dict[str, Any]]:
    """Each decision-layer remedy fitted on validation and evaluated on test (models with linear heads)."""
    split = refit_split(metrics, outputs)
    if split is None:
        return []
    val, test, bias = split
    modalities = list(test)
    norms = {m: n["per_class"] for m, n in weight_norms(outputs, modalities).items()}
    labels, num_classes = outputs["test_labels"], len(metrics["classes"])
    trained = branch_logits(test, bias)         # who decides: each branch's prediction as trained
    rows = []
    for name, remedy in {"none": lambda *args: {m: 1.0 for m in modalities}, **REMEDIES}.items():
        alpha = remedy(val, bias, outputs["val_labels"], norms)
        logits = combine(test, bias, alpha)
        pred = logits.argmax(1)
        decides = dl.who_decides(logits, trained)
        row = {**_key(metrics), "remedy": name,
               "test_acc": accuracy(pred, labels), "test_macro_f1": macro_f1(pred, labels, num_classes),
               "weak": weak, "weak_decides": decides[weak]}
        row.update({f"class_acc_{c}": float(x) for c, x in enumerate(per_class_accuracy(pred, labels, num_classes))})
        rows.append(row)
    return rows


def calibrate_run(metrics: dict[str, Any], outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Each branch's calibration on test, as trained and after its own temperature fit on validation
    (calibration.branch_calibration), one row per modality; none where the remedies do not apply."""
    split = refit_split(metrics, outputs)
    if split is None:
        return []
    val, test, bias = split
    return [{**_key(metrics), **row}
            for row in branch_calibration(val, test, bias, outputs["val_labels"], outputs["test_labels"])]
