"""Gradient-Blending (Wang, Tran & Feiszli, CVPR 2020), online: per-head loss weights from each head's
overfitting-to-generalisation ratio, re-estimated every super-epoch on the validation split (never test).

Heads: the fused head and one separate linear head per modality. Over a super-epoch from N to N + n,
O = L_val - L_train (overfitting), dG = L_val(N) - L_val(N + n) (generalisation gained),
dO = O(N + n) - O(N); w_k = dG_k / dO_k^2, normalised to sum to 1 (heads that did not generalise get 0).
Losses are measured in eval mode on the whole train and validation splits at each super-epoch boundary.
`unimodal_heads: fusion_blocks` routes the unimodal losses through the fusion head's per-modality blocks
(W_m f_m + b/M) instead, as BalanceBenchmark does; that trains the decision layer this project measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from avbias.errors import ParamsError
from avbias.lazy import F, torch
from avbias.methods.registry import Method, RunContext, register

if TYPE_CHECKING:
    from avbias.models.fusion import AVClassifier, ModelOutput

HEADS = ("fused", "audio", "visual")


def blending_weights(train_start: dict[str, float], val_start: dict[str, float], train_end: dict[str, float],
                     val_end: dict[str, float], eps: float = 1e-8) -> dict[str, float]:
    """G-Blending weights from each head's train/validation losses at the start and end of a super-epoch."""
    raw = {}
    for k in train_start:
        gain = val_start[k] - val_end[k]
        overfit_change = (val_end[k] - train_end[k]) - (val_start[k] - train_start[k])
        raw[k] = max(gain, 0.0) / (overfit_change**2 + eps)
    total = sum(raw.values())
    if total <= 0:
        return {k: 1 / len(raw) for k in raw}
    return {k: v / total for k, v in raw.items()}


def head_losses(pred: dict[str, np.ndarray], unimodal: str = "aux_logits") -> dict[str, float]:
    """Cross-entropy of the fused logits and of each modality's unimodal logits (`aux_logits`: separate
    heads; `logits`: the fusion head's blocks)."""
    labels = torch.from_numpy(pred["labels"])
    logits = {"fused": pred["logits"], "audio": pred[f"{unimodal}_audio"], "visual": pred[f"{unimodal}_visual"]}
    return {k: float(F.cross_entropy(torch.from_numpy(z), labels)) for k, z in logits.items()}


@register("gblending")
class GBlending(Method):
    @dataclass(frozen=True)
    class Hyperparams:
        super_epoch: int = 10     # epochs between re-estimates (online G-Blend, the paper's Sec. 4)
        unimodal_heads: Literal["separate", "fusion_blocks"] = "separate"   # fusion_blocks: BalanceBenchmark

    state_keys = ("weights", "last_losses")

    def __init__(self, name: str, params: dict[str, Any], dataset: str | None = None) -> None:
        super().__init__(name, params, dataset)
        self.aux_heads = self.hp.unimodal_heads == "separate"
        self.unimodal = "aux_logits" if self.aux_heads else "logits"
        self.weights = {k: 1 / len(HEADS) for k in HEADS}
        self.last_losses: tuple[dict[str, float], dict[str, float]] | None = None

    def setup(self, model: AVClassifier, trainer: RunContext) -> None:
        if "val" not in trainer.splits:
            raise ParamsError("gblending estimates its weights on held-out data, and splits.val_fraction 0 leaves "
                              "no validation split: carve one out of train, or leave gblending out of run.methods "
                              "(BalanceBenchmark estimates on the test set, which avbias does not do)")

    def epoch_start(self, model: AVClassifier, epoch: int, trainer: RunContext) -> dict[str, float]:
        if epoch % self.hp.super_epoch == 0:
            losses = tuple(head_losses(trainer.predict(split), self.unimodal) for split in ("train", "val"))
            if self.last_losses is not None:
                self.weights = blending_weights(*self.last_losses, *losses)
            self.last_losses = losses
        return {f"weight_{k}": w for k, w in self.weights.items()}

    def loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        logits = {"fused": output.logits, **(output.aux_logits if self.aux_heads else output.modality_logits)}
        return sum(self.weights[k] * F.cross_entropy(logits[k], labels) for k in HEADS)
