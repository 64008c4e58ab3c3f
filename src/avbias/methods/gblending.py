"""Gradient-Blending (Wang, Tran & Feiszli, CVPR 2020), online: per-head loss weights from each head's
overfitting-to-generalisation ratio, re-estimated every super-epoch on the validation split (never test).

Heads: the fused head and one separate linear head per modality. Over a super-epoch from N to N + n,
O = L_val - L_train (overfitting), dG = L_val(N) - L_val(N + n) (generalisation gained),
dO = O(N + n) - O(N); w_k = dG_k / dO_k^2, normalised to sum to 1 (heads that did not generalise get 0).
Losses are measured in eval mode on the whole train and validation splits at each super-epoch boundary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from avbias.methods.registry import Method, register
from avbias.models.fusion import AVClassifier, ModelOutput

if TYPE_CHECKING:
    from avbias.train import Trainer

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


def head_losses(pred: dict[str, np.ndarray]) -> dict[str, float]:
    labels = torch.from_numpy(pred["labels"])
    logits = {"fused": pred["logits"], "audio": pred["aux_logits_audio"], "visual": pred["aux_logits_visual"]}
    return {k: float(F.cross_entropy(torch.from_numpy(z), labels)) for k, z in logits.items()}


@register("gblending")
class GBlending(Method):
    aux_heads = True
    state_keys = ("weights", "last_losses")

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        super().__init__(name, params)
        self.weights = {k: 1 / len(HEADS) for k in HEADS}
        self.last_losses: tuple[dict[str, float], dict[str, float]] | None = None

    def epoch_start(self, model: AVClassifier, epoch: int, trainer: "Trainer") -> dict[str, float]:
        if epoch % self.hparams["super_epoch"] == 0:
            losses = head_losses(trainer.predict("train")), head_losses(trainer.predict("val"))
            if self.last_losses is not None:
                self.weights = blending_weights(*self.last_losses, *losses)
            self.last_losses = losses
        return {f"weight_{k}": w for k, w in self.weights.items()}

    def loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        logits = {"fused": output.logits, **output.aux_logits}
        return sum(self.weights[k] * F.cross_entropy(logits[k], labels) for k in HEADS)
