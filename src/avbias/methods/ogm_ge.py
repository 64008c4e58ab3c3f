"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022).

Per batch, each modality's score is the summed softmax probability of the true class under its own logits;
with rho = s_dominant / s_other > 1, the dominant encoder's gradients are scaled by 1 - tanh(alpha (rho - 1))
(the paper's Eq. 10; the authors' code uses tanh(alpha * rho), without the -1). GE adds Gaussian noise with
the gradient's own standard deviation to both encoders' convolution gradients, inside the modulation window.
"""

from __future__ import annotations

import math

import torch

from avbias.methods.registry import Method, register, true_class_score
from avbias.models.fusion import AVClassifier, ModelOutput


def ogm_ge_coefficients(scores: dict[str, float], alpha: float) -> dict[str, float]:
    """Gradient coefficient per modality: 1 - tanh(alpha (rho - 1)) for the dominant one, 1 for the other."""
    dominant, other = sorted(scores, key=scores.get, reverse=True)
    rho = scores[dominant] / max(scores[other], 1e-12)
    return {dominant: 1 - math.tanh(alpha * (rho - 1)), other: 1.0}


@register("ogm_ge")
class OGMGE(Method):
    def after_backward(self, model: AVClassifier, output: ModelOutput, labels: torch.Tensor, epoch: int) -> dict[str, float]:
        scores = {m: float(true_class_score(output.modality_logits[m].detach().float(), labels)) for m in self.modalities}
        coeffs = ogm_ge_coefficients(scores, self.hparams["alpha"])
        if self.in_window(epoch):
            for m, coeff in coeffs.items():
                for p in model.encoders[m].parameters():
                    if p.grad is None or p.grad.dim() != 4:   # convolution kernels, as the authors' code
                        continue
                    noise_std = p.grad.std() + 1e-8          # of the unscaled gradient, as the authors' code
                    p.grad.mul_(coeff)
                    if self.hparams["generalisation_enhancement"]:
                        p.grad.add_(torch.randn_like(p.grad) * noise_std)
        a, v = self.modalities
        return {f"coeff_{m}": c for m, c in coeffs.items()} | {"ratio_a_v": scores[a] / max(scores[v], 1e-12)}
