"""Adaptive decision-layer weighting trained with the model (the remedy arXiv 2510.14411 proposes, made
concrete): a per-class, per-modality allocation alpha_{c,m} of decision weight (models.fusion.AdaptiveFusion)
learned jointly, while each modality's own branch W_m f_m + b/M is also trained to classify, so the
allocation can follow each modality's per-class capability instead of whichever modality learned first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from avbias.lazy import F, torch
from avbias.methods.registry import Method, RunContext, register

if TYPE_CHECKING:
    from avbias.models.fusion import AVClassifier, ModelOutput


@register("adaptive_fusion")
class AdaptiveFusionMethod(Method):
    @dataclass(frozen=True)
    class Hyperparams:
        branch_weight: float = 1.0   # each modality's own cross-entropy beside the fused one (avbias; none published)

    fusion = "adaptive"

    def setup(self, model: AVClassifier, trainer: RunContext) -> None:
        self.head = model.head

    def loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        branches = self.head.branch_logits(output.features)
        branch_loss = sum(F.cross_entropy(z, labels) for z in branches.values())
        return F.cross_entropy(output.logits, labels) + self.hp.branch_weight * branch_loss

    def after_backward(self, model: AVClassifier, output: ModelOutput, labels: torch.Tensor,
                       epoch: int) -> dict[str, float]:
        alpha = model.head.alpha().detach()
        return {f"alpha_{m}": float(alpha[:, i].mean()) for i, m in enumerate(self.modalities)}
