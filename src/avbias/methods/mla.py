"""MLA: multimodal learning by alternating unimodal adaptation (Zhang, Latham & Yao, CVPR 2024).

Each modality is trained alone through one head shared by all modalities. Default (`schedule: per_batch`,
the authors' code and BalanceBenchmark): on every batch one audio step, then one visual step, each with its
own optimiser step, so each encoder is updated once per batch. `schedule: alternate` takes one modality
per batch (half the updates per encoder; avbias's earlier behaviour).

Gradient modification of the shared head (`projection`): `none` is what the released code runs (its
projection is gated on a parameter name that does not match the head; docs/methods.md); `owm` is the
paper's: the head's weight gradient for one modality is projected with an orthogonal-weight-modification
projector of the *other* modalities' features, P <- P - P x x^T P / (a + x^T P x), updated with each step's
mean feature. At test the shared head weighs the modalities by MLA's entropy rule
(avbias.models.fusion.SharedFusion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from avbias.lazy import F, torch
from avbias.methods.registry import Method, register

if TYPE_CHECKING:
    from avbias.models.fusion import AVClassifier, ModelOutput


def update_projector(projector: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """One recursive-least-squares step of the OWM projector with input x (D,)."""
    px = projector @ x
    return projector - torch.outer(px, px) / (alpha + x @ px)


@register("mla")
class MLA(Method):
    @dataclass(frozen=True)
    class Hyperparams:
        schedule: Literal["per_batch", "alternate"] = "per_batch"   # per_batch: the authors' code
        projection: Literal["none", "owm"] = "none"                  # owm: the paper's gradient modification
        owm_alpha: float = 1.0      # regulariser a of the OWM projector (projection: owm)

    fusion = "shared"
    state_keys = ("projectors", "step_count")

    def __init__(self, name: str, params: dict[str, Any], dataset: str | None = None) -> None:
        super().__init__(name, params, dataset)
        self.projectors: dict[str, torch.Tensor] = {}
        self.step_count = 0

    def step_modalities(self, step: int) -> tuple[tuple[str, ...], ...]:
        if self.hp.schedule == "per_batch":
            return tuple((m,) for m in self.modalities)
        return ((self.modalities[step % len(self.modalities)],),)

    def loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        (m,) = output.modality_logits
        return F.cross_entropy(output.modality_logits[m], labels)

    def after_backward(self, model: AVClassifier, output: ModelOutput, labels: torch.Tensor, epoch: int) -> dict[str, float]:
        self.step_count += 1
        if self.hp.projection == "none":
            return {}
        (m,) = output.features
        weight = model.head.fc.weight
        for other in self.modalities:
            self.projectors.setdefault(other, torch.eye(weight.shape[1], device=weight.device))
        for other in self.modalities:
            if other != m and weight.grad is not None:
                weight.grad = weight.grad @ self.projectors[other]
        x = output.features[m].detach().float().mean(0)
        self.projectors[m] = update_projector(self.projectors[m], x, self.hp.owm_alpha)
        return {}
