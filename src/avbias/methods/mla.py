"""MLA: multimodal learning by alternating unimodal adaptation (Zhang, Latham & Yao, CVPR 2024).

Steps alternate between modalities; each step trains one encoder and the head shared by all modalities on
that modality alone. Gradient modification: the shared head's weight gradient is projected with an
orthogonal-weight-modification projector of the *other* modalities' features, P <- P - P x x^T P / (a + x^T P x)
updated with each step's mean feature, so learning one modality disturbs the head's response to the others
little. At test the shared fusion head weighs the modalities by MLA's uncertainty (entropy) rule
(avbias.models.fusion.SharedFusion).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from avbias.methods.registry import Method, register
from avbias.models.fusion import AVClassifier, ModelOutput


def update_projector(projector: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """One recursive-least-squares step of the OWM projector with input x (D,)."""
    px = projector @ x
    return projector - torch.outer(px, px) / (alpha + x @ px)


@register("mla")
class MLA(Method):
    fusion = "shared"
    state_keys = ("projectors", "step_count")

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        super().__init__(name, params)
        self.projectors: dict[str, torch.Tensor] = {}
        self.step_count = 0

    def step_modalities(self, step: int) -> tuple[str, ...]:
        return (self.modalities[self.step_count % len(self.modalities)],)

    def loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        (m,) = output.modality_logits
        return F.cross_entropy(output.modality_logits[m], labels)

    def after_backward(self, model: AVClassifier, output: ModelOutput, labels: torch.Tensor, epoch: int) -> dict[str, float]:
        (m,) = output.features
        weight = model.head.fc.weight
        dim = weight.shape[1]
        for other in self.modalities:
            self.projectors.setdefault(other, torch.eye(dim, device=weight.device))
        if self.hparams["gradient_modification"]:
            for other in self.modalities:
                if other != m and weight.grad is not None:
                    weight.grad = weight.grad @ self.projectors[other]
        x = output.features[m].detach().float().mean(0)
        self.projectors[m] = update_projector(self.projectors[m], x, self.hparams["owm_alpha"])
        self.step_count += 1
        return {}
