"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022).

Per batch, each modality's score is the summed softmax probability of the true class under its own logits
(W_m f_m + b/2 of the concat head). With rho = s_dominant / s_other > 1, the dominant encoder's convolution
gradients are scaled by k = 1 - tanh(alpha * rho) (the paper's Eq. 10 and the authors' code, main.py
train_epoch); the other modality keeps k = 1. Note the jump from 1 to about 1 - tanh(alpha) just above
rho = 1. `coefficient: shifted` uses 1 - tanh(alpha (rho - 1)) instead, continuous at rho = 1: an ablation,
not the published method. GE adds Gaussian noise with the (unscaled) gradient's own standard deviation to
both encoders' convolution gradients inside the modulation window (docs/methods.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from avbias.lazy import torch
from avbias.methods.registry import Method, register, true_class_score

if TYPE_CHECKING:
    from avbias.models.fusion import AVClassifier, ModelOutput


def ogm_ge_coefficients(scores: dict[str, float], alpha: float, coefficient: str = "code") -> dict[str, float]:
    """Gradient coefficient per modality, as the authors' code (main.py train_epoch) decides it: with the
    scores of (first, second) = (audio, visual), the second is modulated when s_2 / s_1 > 1, else the first
    with rho = s_1 / s_2 (so an exact tie modulates the first). k = 1 - tanh(alpha rho) (`code`, = Eq. 10) or
    1 - tanh(alpha (rho - 1)) (`shifted`); the other modality keeps 1."""
    (first, s_first), (second, s_second) = scores.items()
    ratio = s_second / max(s_first, 1e-12)
    dominant, rho = (second, ratio) if ratio > 1 else (first, s_first / max(s_second, 1e-12))
    shift = 0.0 if coefficient == "code" else 1.0
    return {first: 1.0, second: 1.0} | {dominant: 1 - math.tanh(alpha * (rho - shift))}


@register("ogm_ge")
class OGMGE(Method):
    @dataclass(frozen=True)
    class Hyperparams:
        alpha: float = 0.8                # README: 0.8 for CREMA-D (its "default setting" is 0.1; VGGSound 0.1)
        modulation_starts: int = 0        # main.py --modulation_starts default
        modulation_ends: int = 50         # main.py --modulation_ends default
        generalisation_enhancement: bool = True   # main.py --modulation OGM_GE (noise on both encoders)
        coefficient: Literal["code", "shifted"] = "code"   # shifted: 1 - tanh(alpha (rho - 1)), an ablation

    def after_backward(self, model: AVClassifier, output: ModelOutput, labels: torch.Tensor,
                       epoch: int) -> dict[str, float]:
        scores = {m: float(true_class_score(output.modality_logits[m].detach().float(), labels))
                  for m in self.modalities}
        coeffs = ogm_ge_coefficients(scores, self.hp.alpha, self.hp.coefficient)
        if self.in_window(epoch):
            modulate_gradients(model, coeffs, self.hp.generalisation_enhancement)
        a, v = self.modalities
        return {f"coeff_{m}": c for m, c in coeffs.items()} | {"ratio_a_v": scores[a] / max(scores[v], 1e-12)}


def modulate_gradients(model: AVClassifier, coeffs: dict[str, float], noise: bool) -> None:
    """Scale each encoder's convolution-kernel gradients (4-D, as the authors' code) by its coefficient;
    with GE, add Gaussian noise with the unscaled gradient's standard deviation."""
    for m, coeff in coeffs.items():
        for p in model.encoders[m].parameters():
            if p.grad is None or p.grad.dim() != 4:
                continue
            noise_std = p.grad.std() + 1e-8
            p.grad.mul_(coeff)
            if noise:
                p.grad.add_(torch.randn_like(p.grad) * noise_std)
