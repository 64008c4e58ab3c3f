"""PMR: prototypical modal rebalance (Fan et al., CVPR 2023).

Class prototypes per modality (feature means of each class over a fraction of the train split, refreshed
every epoch with momentum). Prototype logits are negative Euclidean distances to the prototypes. With
rho = s_dominant / s_weak from the prototype scores (summed true-class probabilities), the loss inside the
modulation window is CE(fused) + beta * PCE(weak) - mu * H(dominant prototype distribution), with
beta = alpha * tanh(rho - 1) (the paper's coefficient; the authors' code switches alpha on and off) and the
entropy term slowing the dominant modality (the paper's regulariser; absent from the authors' code).
Defaults follow the authors' code: alpha 1, momentum 0.2, prototypes from 10% of the train split.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from avbias.methods.registry import Method, register, true_class_score
from avbias.models.fusion import AVClassifier, ModelOutput

if TYPE_CHECKING:
    from avbias.train import Trainer


def class_prototypes(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, D) mean feature of each class (zeros for a class absent from the sample)."""
    protos = np.zeros((num_classes, features.shape[1]), dtype=np.float32)
    for c in range(num_classes):
        if (labels == c).any():
            protos[c] = features[labels == c].mean(0)
    return protos


def prototype_logits(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    return -torch.cdist(features.float(), prototypes.float())


def pmr_loss_terms(proto_logits: dict[str, torch.Tensor], labels: torch.Tensor, alpha: float
                   ) -> tuple[str, str, float, torch.Tensor, torch.Tensor]:
    """(dominant, weak, beta, weak PCE, dominant entropy) for one batch."""
    scores = {m: float(true_class_score(z.detach(), labels)) for m, z in proto_logits.items()}
    dominant, weak = sorted(scores, key=scores.get, reverse=True)
    rho = scores[dominant] / max(scores[weak], 1e-12)
    beta = alpha * math.tanh(rho - 1)
    pce = F.cross_entropy(proto_logits[weak], labels)
    p = proto_logits[dominant].softmax(1)
    entropy = -(p * proto_logits[dominant].log_softmax(1)).sum(1).mean()
    return dominant, weak, beta, pce, entropy


@register("pmr")
class PMR(Method):
    state_keys = ("prototypes",)

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        super().__init__(name, params)
        self.prototypes: dict[str, torch.Tensor] | None = None
        self.logged: dict[str, float] = {}

    def epoch_start(self, model: AVClassifier, epoch: int, trainer: "Trainer") -> dict[str, float]:
        pred = trainer.predict("train", fraction=self.hparams["prototype_fraction"])
        num_classes = trainer.num_classes
        fresh = {m: torch.from_numpy(class_prototypes(pred[f"features_{m}"], pred["labels"], num_classes))
                 for m in self.modalities}
        if self.prototypes is not None:
            k = self.hparams["momentum"]
            fresh = {m: (1 - k) * fresh[m] + k * self.prototypes[m].cpu() for m in self.modalities}
        self.prototypes = {m: p.to(trainer.device) for m, p in fresh.items()}
        return {}

    def loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        assert self.prototypes is not None
        loss = F.cross_entropy(output.logits, labels)
        proto = {m: prototype_logits(output.features[m], self.prototypes[m]) for m in self.modalities}
        dominant, weak, beta, pce, entropy = pmr_loss_terms(proto, labels, self.hparams["alpha"])
        self.logged = {"beta": beta, f"dominant_is_{self.modalities[0]}": float(dominant == self.modalities[0])}
        if self.in_window(epoch):
            loss = loss + beta * pce - self.hparams["mu"] * entropy
        return loss

    def after_backward(self, model: AVClassifier, output: ModelOutput, labels: torch.Tensor, epoch: int) -> dict[str, float]:
        return self.logged
