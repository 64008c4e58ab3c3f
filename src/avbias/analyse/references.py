"""The references the baseline's per-class accuracy is held against (claim 3 by cost), per seed and class,
from a dataset's runs: the late fusion of the unimodal models, the baseline's own branches re-fused, and on
a cue plan the Bayes-optimal fusion realised on the same test clips (references.csv)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from avbias.analyse import cues
from avbias.analyse.findings import BASELINE
from avbias.analyse.remedies import late_fusion
from avbias.metrics import per_class_accuracy

Loaded = list[tuple[dict[str, Any], dict[str, np.ndarray]]]   # each run's metrics.json and outputs.npz


def _late_fusion_rows(seed: int, classes: list[str], reference: str, val_logits: dict[str, np.ndarray],
                      val_labels: np.ndarray, test_logits: dict[str, np.ndarray],
                      test_labels: np.ndarray) -> list[dict[str, Any]]:
    """Per-class test accuracy of a late fusion fit on validation (remedies.late_fusion), as reference rows."""
    logits = late_fusion(val_logits, val_labels, test_logits)
    acc = per_class_accuracy(logits.argmax(1), test_labels, len(classes))
    return [{"seed": seed, "class": c, "reference": reference, "acc": float(a)}
            for c, a in zip(classes, acc, strict=True)]


def late_fusion_accuracy(loaded: Loaded) -> pd.DataFrame:
    """Per seed and class, the test accuracy of the late fusion of that seed's unimodal models, fit on
    validation (remedies.late_fusion): the reachable reference the baseline's per-class accuracy is held
    against (claim 3 by cost). Empty when a seed lacks a unimodal model, a validation split, or the runs'
    test clips differ."""
    unimodal: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    classes: list[str] = []
    for metrics, outputs in loaded:
        modalities = [str(m) for m in outputs["modalities"]]
        if len(modalities) == 1 and "val_logits" in outputs and "val_labels" in outputs:
            unimodal.setdefault(int(metrics["seed"]), {})[modalities[0]] = outputs
            classes = metrics["classes"]
    rows = []
    for seed, runs in sorted(unimodal.items()):
        if len(runs) < 2:
            continue
        first = next(iter(runs.values()))
        if any(not np.array_equal(o["test_labels"], first["test_labels"])
               or not np.array_equal(o["val_labels"], first["val_labels"]) for o in runs.values()):
            continue                                    # not the same clips: no paired fusion
        rows += _late_fusion_rows(seed, classes, "late_fusion", {m: o["val_logits"] for m, o in runs.items()},
                                  first["val_labels"], {m: o["test_logits"] for m, o in runs.items()},
                                  first["test_labels"])
    return pd.DataFrame(rows, columns=["seed", "class", "reference", "acc"])


def branch_fusion_accuracy(loaded: Loaded) -> pd.DataFrame:
    """Per seed and class, the test accuracy of the baseline's own branches (each modality's logits through
    the fused head) fused by remedies.late_fusion, fit on validation: what the baseline's own encoders reach
    with a re-fit allocation. Empty without a baseline with per-branch validation logits."""
    rows = []
    for metrics, outputs in loaded:
        modalities = [str(m) for m in outputs["modalities"]]
        if metrics["method"] != BASELINE or len(modalities) < 2 or "val_labels" not in outputs \
                or any(f"val_logits_{m}" not in outputs for m in modalities):
            continue
        rows += _late_fusion_rows(int(metrics["seed"]), metrics["classes"], "branch_fusion",
                                  {m: outputs[f"val_logits_{m}"] for m in modalities}, outputs["val_labels"],
                                  {m: outputs[f"test_logits_{m}"] for m in modalities}, outputs["test_labels"])
    return pd.DataFrame(rows, columns=["seed", "class", "reference", "acc"])


def bayes_reference(loaded: Loaded, synth: dict[str, Any]) -> pd.DataFrame:
    """Per seed and class, the Bayes-optimal fused accuracy realised on the baseline's test clips of a cue plan:
    each clip's cues are re-drawn exactly as the generator drew them (cues.drawn_cue, deterministic in the
    seed and clip id), so the reference is exact on the very clips the models are tested on, not an
    expectation over clips. Empty without a cue plan or without the baseline's test clip ids."""
    if not cues.is_cue_plan(synth):
        return pd.DataFrame(columns=["seed", "class", "reference", "acc"])
    rows = []
    for metrics, outputs in loaded:
        if metrics["method"] != BASELINE or "test_clip_ids" not in outputs:
            continue
        classes = metrics["classes"]
        probs = {m: cues.cue_probs(synth, m, len(classes)) for m in cues.MODALITIES}
        liks = [cues.cue_likelihood(np.ones(len(classes)) if q is None else q) for q in probs.values()]
        labels = outputs["test_labels"]
        drawn = [np.array([cues.drawn_cue(synth["seed"], str(i), m, int(y), probs[m])
                           for i, y in zip(outputs["test_clip_ids"], labels, strict=True)]) for m in cues.MODALITIES]
        correct = cues.bayes_correct(liks, drawn, labels)
        rows += [{"seed": int(metrics["seed"]), "class": c, "reference": "bayes",
                  "acc": float(correct[labels == i].mean()) if (labels == i).any() else np.nan}
                 for i, c in enumerate(classes)]
    return pd.DataFrame(rows, columns=["seed", "class", "reference", "acc"])

