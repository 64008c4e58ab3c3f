"""PMR: prototypical modal rebalance (Fan et al., CVPR 2023).

Class prototypes per modality (feature means of each class over a fraction of the train split, refreshed
every epoch with momentum). Prototype logits are negative Euclidean distances to the prototypes. With
rho = s_dominant / s_weak from the prototype scores (summed true-class probabilities), the loss inside the
modulation window is CE(fused) + beta * PCE(weak) - mu * H(dominant prototype distribution).
Default (`weighting: switch`, mu 0): the authors' code, where the weak modality's prototype loss is switched
fully on with weight alpha and the dominant one's off, and there is no entropy term. `weighting: continuous`
(beta = alpha tanh(rho - 1)) and mu > 0 are the paper's variants. Values and sources: docs/methods.md.

Prototypes, as in the authors' main_Prototype_grad.py (calculate_prototype and main): from the train loader,
so with the training augmentation and frame choice (`prototype_inputs: train`; `eval`: without, avbias's
earlier behaviour), built before epoch 0 and after every epoch; the one built after epoch e - 1 is averaged
with the previous one only when e - 1 > 0, so momentum first acts on the prototypes of epoch
`momentum_starts` = 2 (BalanceBenchmark's PMR_trainer builds them at the start of epoch e with momentum
from e = 1: `momentum_starts: 1`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from avbias.lazy import F, torch
from avbias.methods.registry import Method, RunContext, register, true_class_score

if TYPE_CHECKING:
    from avbias.models.fusion import AVClassifier, ModelOutput


def class_prototypes(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, D) mean feature of each class (zeros for a class absent from the sample)."""
    protos = np.zeros((num_classes, features.shape[1]), dtype=np.float32)
    for c in range(num_classes):
        if (labels == c).any():
            protos[c] = features[labels == c].mean(0)
    return protos


def prototype_logits(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    return -torch.cdist(features.float(), prototypes.float())


def pmr_coefficient(rho: float, alpha: float, weighting: str = "switch") -> float:
    """Weight of the weak modality's prototype loss at score ratio rho = s_dominant / s_weak >= 1:
    `switch` (authors' code) alpha when rho > 1, 0 when tied; `continuous` (paper) alpha tanh(rho - 1)."""
    if weighting == "continuous":
        return alpha * math.tanh(rho - 1)
    return alpha if rho > 1 else 0.0


def pmr_loss_terms(proto_logits: dict[str, torch.Tensor], labels: torch.Tensor, alpha: float,
                   weighting: str = "switch") -> tuple[str, str, float, torch.Tensor, torch.Tensor]:
    """(dominant, weak, beta, weak PCE, dominant entropy) for one batch; the dominant modality's own
    prototype loss has weight 0."""
    scores = {m: float(true_class_score(z.detach(), labels)) for m, z in proto_logits.items()}
    dominant, weak = sorted(scores, key=scores.get, reverse=True)
    rho = scores[dominant] / max(scores[weak], 1e-12)
    beta = pmr_coefficient(rho, alpha, weighting)
    pce = F.cross_entropy(proto_logits[weak], labels)
    p = proto_logits[dominant].softmax(1)
    entropy = -(p * proto_logits[dominant].log_softmax(1)).sum(1).mean()
    return dominant, weak, beta, pce, entropy


@register("pmr")
class PMR(Method):
    @dataclass(frozen=True)
    class Hyperparams:
        alpha: float = 1.0                 # main.py --alpha default (CREMA-D scripts: by_dataset in params.yaml)
        momentum: float = 0.2              # main.py --momentum_coef default: prototype EMA
        prototype_fraction: float = 0.1    # calculate_prototype: prototypes from a tenth of the train batches
        modulation_starts: int = 0
        modulation_ends: int = 100         # main.py --modulation_ends default (CREMA-D concat script: 70)
        momentum_starts: int = 2           # first epoch whose prototypes are momentum averages (main loop)
        prototype_inputs: Literal["train", "eval"] = "train"   # train: with the training augmentation
        weighting: Literal["switch", "continuous"] = "switch"   # continuous: the paper's alpha tanh(rho - 1)
        mu: float = 0.0                    # entropy regulariser on the dominant modality (paper only)

    state_keys = ("prototypes",)

    def __init__(self, name: str, params: dict[str, Any], dataset: str | None = None) -> None:
        super().__init__(name, params, dataset)
        self.prototypes: dict[str, torch.Tensor] | None = None
        self.logged: dict[str, float] = {}

    def epoch_start(self, model: AVClassifier, epoch: int, trainer: RunContext) -> dict[str, float]:
        pred = trainer.predict("train", fraction=self.hp.prototype_fraction,
                               train_inputs=self.hp.prototype_inputs == "train")
        num_classes = trainer.num_classes
        fresh = {m: torch.from_numpy(class_prototypes(pred[f"features_{m}"], pred["labels"], num_classes))
                 for m in self.modalities}
        if self.prototypes is not None and epoch >= self.hp.momentum_starts:
            k = self.hp.momentum
            fresh = {m: (1 - k) * fresh[m] + k * self.prototypes[m].cpu() for m in self.modalities}
        self.prototypes = {m: p.to(trainer.device) for m, p in fresh.items()}
        return {}

    def loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        assert self.prototypes is not None
        loss = F.cross_entropy(output.logits, labels)
        proto = {m: prototype_logits(output.features[m], self.prototypes[m]) for m in self.modalities}
        dominant, weak, beta, pce, entropy = pmr_loss_terms(proto, labels, self.hp.alpha, self.hp.weighting)
        self.logged = {"beta": beta, f"dominant_is_{self.modalities[0]}": float(dominant == self.modalities[0])}
        if self.in_window(epoch):
            loss = loss + beta * pce - self.hp.mu * entropy
        return loss

    def after_backward(self, model: AVClassifier, output: ModelOutput, labels: torch.Tensor,
                       epoch: int) -> dict[str, float]:
        return self.logged
