"""MLA: multimodal learning by alternating unimodal adaptation (Zhang, Latham & Yao, CVPR 2024).

Each modality is trained alone through one head shared by all modalities. Default (`schedule: per_batch`,
the authors' code and BalanceBenchmark): on every batch one audio step, then one visual step, each with its
own optimiser step, so each encoder gets one gradient step per batch (see `zero_grad` below for the audio
encoder's second, gradient-free step). `schedule: alternate` takes one modality per batch (half the updates
per encoder; avbias's earlier behaviour).

Gradient modification of the shared head (`projection`): `none` is what the released code runs (its
projection, utils.py GSPlugin.before_update, is gated on the parameter name "module.weight", which the head's
"weight" never matches); `owm` is the paper's: the head's weight gradient for one modality is replaced by its
projection with an orthogonal-weight-modification projector of the *other* modalities' features,
P <- P - P x x^T P / (a + x^T P x), updated with each step's mean feature; `balancebenchmark` (its
MLA_trainer, and MLA's own utils.py, where it never runs): one projector for both modalities, updated with
k = P x as P <- P - (k k^T) / (a + k x^T), divided entry by entry by that D x D matrix (not by the scalar
a + x^T P x), normalised to unit Frobenius norm, a = 0.1^(1 + batch / batches), and the projected gradient
*added*: g <- g + g P^T (from the second step on).

`zero_grad: zeros` (default): the released code pins torch 1.8.1 (BalanceBenchmark: 1.12.1), whose
optimizer.zero_grad() zeroes gradients instead of removing them, and deletes them only at the end of each
batch. So in the visual step the audio encoder, whose gradient is a zero tensor by then, still takes an
optimiser step from weight decay and momentum alone (SGD: buf <- m buf + wd p, p <- p - lr buf). `none`:
gradients removed before each step (torch >= 2), the encoder not trained is left alone.
At test the shared head weighs the modalities by MLA's entropy rule (`test_fusion`,
avbias.models.fusion.SharedFusion): `batch_entropy` by default, the released code's --dynamic mode that
its README's commands ask for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from avbias.lazy import F, torch
from avbias.methods.registry import Method, RunContext, register

if TYPE_CHECKING:
    from avbias.models.fusion import AVClassifier, ModelOutput


def update_projector(projector: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """One recursive-least-squares step of the OWM projector with input x (D,)."""
    px = projector @ x
    return projector - torch.outer(px, px) / (alpha + x @ px)


def update_projector_entrywise(projector: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """GSPlugin.before_update's step (BalanceBenchmark MLA_trainer.py, MLA utils/utils.py): with k = P x,
    P - (k k^T) / (alpha + k x^T), the division entry by entry, then P scaled to unit Frobenius norm."""
    k = projector @ x
    updated = projector - torch.outer(k, k) / (alpha + torch.outer(k, x))
    return updated / torch.linalg.matrix_norm(updated)


@register("mla")
class MLA(Method):
    @dataclass(frozen=True)
    class Hyperparams:
        schedule: Literal["per_batch", "alternate"] = "per_batch"   # per_batch: the authors' code
        projection: Literal["none", "owm", "balancebenchmark"] = "none"   # none: what the released code runs
        owm_alpha: float = 1.0      # regulariser a of the OWM projector (projection: owm)
        test_fusion: Literal["batch_entropy", "sample_entropy", "fixed"] = "batch_entropy"
        zero_grad: Literal["zeros", "none"] = "zeros"   # zeros: torch 1.8.1's zero_grad (the released code)

    fusion = "shared"
    state_keys = ("projectors", "step_count")

    def __init__(self, name: str, params: dict[str, Any], dataset: str | None = None) -> None:
        super().__init__(name, params, dataset)
        self.projectors: dict[str, torch.Tensor] = {}
        self.step_count = 0
        self.batch, self.batches = 0, 1

    def setup(self, model: AVClassifier, trainer: RunContext) -> None:
        model.head.test_fusion = self.hp.test_fusion
        self.batches = max(1, trainer.train_batches)   # len(train_loader)

    def step_modalities(self, step: int) -> tuple[tuple[str, ...], ...]:
        self.batch = step
        if self.hp.schedule == "per_batch":
            return tuple((m,) for m in self.modalities)
        return ((self.modalities[step % len(self.modalities)],),)

    def zero_grad(self, optimizer: torch.optim.Optimizer, pass_index: int) -> None:
        """Gradients are removed before a batch's first step; `zeros` then zeroes them in place."""
        optimizer.zero_grad(set_to_none=self.hp.zero_grad == "none" or pass_index == 0)

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
                alpha = 0.1 ** (1 + self.batch / self.batches)
                self.projectors["shared"] = projector = update_projector_entrywise(projector, x, alpha)
                weight.grad.add_(weight.grad @ projector.T)
            return {}
        for other in self.modalities:
            self.projectors.setdefault(other, torch.eye(weight.shape[1], device=weight.device))
        for other in self.modalities:
            if other != m and weight.grad is not None:
                weight.grad = weight.grad @ self.projectors[other]
        self.projectors[m] = update_projector(self.projectors[m], x, self.hp.owm_alpha)
        return {}
