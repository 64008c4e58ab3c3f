"""MLA: multimodal learning by alternating unimodal adaptation (Zhang, Latham & Yao, CVPR 2024).

Each modality is trained alone through one head shared by all modalities. Default (`schedule: per_batch`,
the authors' code and BalanceBenchmark): on every batch one audio step, then one visual step, each with its
own optimiser step, so each encoder is updated once per batch. `schedule: alternate` takes one modality
per batch (half the updates per encoder; avbias's earlier behaviour).

Gradient modification of the shared head (`projection`): `none` is what the released code runs (its
projection, utils.py GSPlugin.before_update, is gated on the parameter name "module.weight", which the head's
"weight" never matches); `owm` is the paper's: the head's weight gradient for one modality is replaced by its
projection with an orthogonal-weight-modification projector of the *other* modalities' features,
P <- P - P x x^T P / (a + x^T P x), updated with each step's mean feature; `balancebenchmark` (its
MLA_trainer): one projector for both modalities, normalised to unit Frobenius norm after each update with
a = 0.1^(1 + batch / batches), and the projected gradient *added*: g <- g + g P^T (from the second step on).
At test the shared head weighs the modalities by MLA's entropy rule (`test_fusion`,
avbias.models.fusion.SharedFusion): `batch_entropy` by default, the released code's --dynamic mode that
its README's commands ask for.
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
        projection: Literal["none", "owm", "balancebenchmark"] = "none"   # none: what the released code runs
        owm_alpha: float = 1.0      # regulariser a of the OWM projector (projection: owm)
        test_fusion: Literal["batch_entropy", "sample_entropy", "fixed"] = "batch_entropy"

    fusion = "shared"
    state_keys = ("projectors", "step_count")

    def __init__(self, name: str, params: dict[str, Any], dataset: str | None = None) -> None:
        super().__init__(name, params, dataset)
        self.projectors: dict[str, torch.Tensor] = {}
        self.step_count = 0
        self.batch, self.batches = 0, 1

    def setup(self, model: AVClassifier, trainer: Any) -> None:
        model.head.test_fusion = self.hp.test_fusion
        self.batches = max(1, -(-len(trainer.data["train"]) // trainer.cfg["batch_size"]))

    def step_modalities(self, step: int) -> tuple[tuple[str, ...], ...]:
        self.batch = step
        if self.hp.schedule == "per_batch":
            return tuple((m,) for m in self.modalities)
        return ((self.modalities[step % len(self.modalities)],),)

    def loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        (m,) = output.modality_logits
        return F.cross_entropy(output.modality_logits[m], labels)

    def after_backward(self, model: AVClassifier, output: ModelOutput, labels: torch.Tensor,
                       epoch: int) -> dict[str, float]:
        self.step_count += 1
        if self.hp.projection == "none":
            return {}
        (m,) = output.features
        weight = model.head.fc.weight
        x = output.features[m].detach().float().mean(0)
        if self.hp.projection == "balancebenchmark":
            if self.step_count > 1 and weight.grad is not None:   # nothing on the very first step
                projector = self.projectors.get("shared", torch.eye(len(x), device=x.device))
                projector = update_projector(projector, x, 0.1 ** (1 + self.batch / self.batches))
                self.projectors["shared"] = projector = projector / torch.linalg.matrix_norm(projector)
                weight.grad.add_(weight.grad @ projector.T)
            return {}
        for other in self.modalities:
            self.projectors.setdefault(other, torch.eye(weight.shape[1], device=weight.device))
        for other in self.modalities:
            if other != m and weight.grad is not None:
                weight.grad = weight.grad @ self.projectors[other]
        self.projectors[m] = update_projector(self.projectors[m], x, self.hp.owm_alpha)
        return {}
