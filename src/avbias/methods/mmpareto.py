"""MMPareto (Wei & Hu, ICML 2024): multimodal + unimodal losses, per-encoder Pareto gradient integration.

Each encoder receives g_mm (from the multimodal loss) and g_uni (from its own unimodal head). When they
agree (cosine > 0) they are weighted 1/2 each; when they conflict, by the two-task MGDA min-norm solution.
Per parameter tensor the combination 2 (k_mm g_mm + k_uni g_uni) is rescaled up to the norm of the plain
sum g_mm + g_uni when smaller, then multiplied by gamma (1.5, the authors' code). Heads get the plain sum.

Unimodal losses (`unimodal_heads`): `separate` (the authors' code, MMPareto_ICML2024 models.py AVClassifier:
head_audio and head_video, Linear(512, C) beside the fusion head) or `fusion_blocks` (BalanceBenchmark,
avclassify_model.py unimodality_calculate: modality m's block of the concat head, W_m f_m + b / M), which
trains the fusion head's blocks with the unimodal losses too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from avbias.lazy import F, torch
from avbias.methods.registry import Method, encoder_params, register

if TYPE_CHECKING:
    from avbias.models.fusion import AVClassifier, ModelOutput


def pareto_weights(g_mm: torch.Tensor, g_uni: torch.Tensor) -> tuple[float, float]:
    """(k_mm, k_uni): 1/2 each without conflict, else argmin_k ||k g_mm + (1 - k) g_uni||, k in [0, 1]."""
    if F.cosine_similarity(g_mm, g_uni, dim=0) > 0:
        return 0.5, 0.5
    diff = g_mm - g_uni
    k = float(torch.clamp(torch.dot(g_uni - g_mm, g_uni) / torch.dot(diff, diff).clamp_min(1e-20), 0, 1))
    return k, 1 - k


def combine(g_mm: torch.Tensor, g_uni: torch.Tensor, k: tuple[float, float], gamma: float) -> torch.Tensor:
    """MMPareto's per-tensor gradient: the weighted combination, never smaller than the plain sum, times gamma."""
    new = 2 * (k[0] * g_mm + k[1] * g_uni)
    plain, new_norm = torch.linalg.vector_norm(g_mm + g_uni), torch.linalg.vector_norm(new)
    if plain > new_norm:
        new = new * (plain / new_norm.clamp_min(1e-20))
    return new * gamma


@register("mmpareto")
class MMPareto(Method):
    @dataclass(frozen=True)
    class Hyperparams:
        gamma: float = 1.5   # the authors' code (main.py): the integrated gradient is multiplied by it
        unimodal_heads: Literal["separate", "fusion_blocks"] = "separate"   # fusion_blocks: BalanceBenchmark

    def __init__(self, name: str, params: dict[str, Any], dataset: str | None = None) -> None:
        super().__init__(name, params, dataset)
        self.aux_heads = self.hp.unimodal_heads == "separate"

    def loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        unimodal = output.aux_logits if self.aux_heads else output.modality_logits
        self.losses = {"mm": F.cross_entropy(output.logits, labels),
                       **{m: F.cross_entropy(unimodal[m], labels) for m in self.modalities}}
        return sum(self.losses.values())

    def backward(self, model: AVClassifier, output: ModelOutput, labels: torch.Tensor, epoch: int,
                 loss: torch.Tensor) -> dict[str, float]:
        params = [p for p in model.parameters() if p.requires_grad]
        zeros = [torch.zeros_like(p) for p in params]
        # Two backward passes: the multimodal loss, and the unimodal losses (each reaches only its own encoder).
        grads_mm = torch.autograd.grad(self.losses["mm"], params, retain_graph=True, allow_unused=True)
        unimodal = sum(self.losses[m] for m in self.modalities)
        grads_uni = torch.autograd.grad(unimodal, params, allow_unused=True)
        g_mm = {p: g if g is not None else z for p, g, z in zip(params, grads_mm, zeros, strict=True)}
        g_uni = {p: g if g is not None else z for p, g, z in zip(params, grads_uni, zeros, strict=True)}
        for p in params:                                  # heads: the plain sum
            p.grad = g_mm[p] + g_uni[p]
        logs = {}
        for m in self.modalities:
            enc = encoder_params(model, m)
            k = pareto_weights(torch.cat([g_mm[p].flatten() for p in enc]),
                               torch.cat([g_uni[p].flatten() for p in enc]))
            for p in enc:
                p.grad = combine(g_mm[p], g_uni[p], k, self.hp.gamma)
            logs[f"k_mm_{m}"] = k[0]
        return logs
