"""Fusion heads that expose each modality's own logits, and the audio-visual classifier.

Additive heads (concat, sum, shared) split the fused logits into one term per modality that sums to the
fused logits, so the decision layer z = W_a f_a + W_v f_v + b can be analysed per modality. FiLM and gated
fusion (as in the OGM-GE code base) mix the modalities inside the head; their per-modality logits are the
head's output with the other modality's features set to zero, and do not sum to the fused logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from avbias.models.encoders import ModalityEncoder


@dataclass
class ModelOutput:
    logits: torch.Tensor                       # fused (B, C)
    features: dict[str, torch.Tensor]          # per modality (B, D_m)
    modality_logits: dict[str, torch.Tensor]   # per modality (B, C); sum to `logits` for additive heads
    aux_logits: dict[str, torch.Tensor] = field(default_factory=dict)   # separate unimodal heads, if any


class FusionHead(nn.Module):
    additive = True

    def __init__(self, dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.modalities = tuple(dims)
        self.dims = dims
        self.num_classes = num_classes

    def decision_weights(self) -> dict[str, torch.Tensor] | None:
        """Each modality's block of the decision layer (C, D_m), where the head is linear per modality."""
        return None

    def decision_bias(self) -> torch.Tensor | None:
        return None


class ConcatFusion(FusionHead):
    """z = W [f_a; f_v] + b; modality m's logits are W_m f_m + b / M (the bias shared equally, as OGM-GE does)."""

    def __init__(self, dims: dict[str, int], num_classes: int) -> None:
        super().__init__(dims, num_classes)
        self.fc = nn.Linear(sum(dims.values()), num_classes)

    def blocks(self) -> dict[str, slice]:
        out, start = {}, 0
        for m in self.modalities:
            out[m] = slice(start, start + self.dims[m])
            start += self.dims[m]
        return out

    def decision_weights(self) -> dict[str, torch.Tensor]:
        return {m: self.fc.weight[:, block] for m, block in self.blocks().items()}

    def decision_bias(self) -> torch.Tensor:
        return self.fc.bias

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        shared_bias = self.fc.bias / len(self.modalities)
        per_modality = {m: features[m] @ self.fc.weight[:, b].T + shared_bias for m, b in self.blocks().items()}
        return sum(per_modality.values()), per_modality


class SumFusion(FusionHead):
    """z = (W_a f_a + b_a) + (W_v f_v + b_v): one linear layer per modality (OGM-GE's SumFusion)."""

    def __init__(self, dims: dict[str, int], num_classes: int) -> None:
        super().__init__(dims, num_classes)
        self.fc = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in dims.items()})

    def decision_weights(self) -> dict[str, torch.Tensor]:
        return {m: self.fc[m].weight for m in self.modalities}

    def decision_bias(self) -> torch.Tensor:
        return sum(self.fc[m].bias for m in self.modalities)

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        per_modality = {m: self.fc[m](features[m]) for m in self.modalities}
        return sum(per_modality.values()), per_modality


class SharedFusion(FusionHead):
    """One head shared by all modalities (MLA, Zhang et al. CVPR 2024): z = sum_m lambda_m (W f_m + b).

    Training uses lambda_m = 1/M; evaluation uses MLA's uncertainty-based dynamic fusion,
    lambda_m = exp(e_max - e_m) / sum_k exp(e_max - e_k), so the more certain modality weighs more, with
    e_m the entropy of modality m's prediction (`test_fusion`): `sample_entropy` per sample (the paper,
    BalanceBenchmark); `batch_entropy` one entropy per modality and evaluation batch, of the softmax over the
    batch dimension (the released code's --dynamic); `fixed` lambda = 1/M (the released code without it).
    Modality m's logits are lambda_m (W f_m + b)."""

    def __init__(self, dims: dict[str, int], num_classes: int, test_fusion: str = "sample_entropy") -> None:
        super().__init__(dims, num_classes)
        self.test_fusion = test_fusion
        if len(set(dims.values())) != 1:
            raise ValueError(f"shared fusion needs equal feature sizes, got {dims}")
        self.fc = nn.Linear(next(iter(dims.values())), num_classes)

    def decision_weights(self) -> dict[str, torch.Tensor]:
        return {m: self.fc.weight for m in self.modalities}

    def decision_bias(self) -> torch.Tensor:
        return self.fc.bias

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        own = {m: self.fc(features[m]) for m in self.modalities if m in features}
        if self.training or self.test_fusion == "fixed":
            weights = {m: torch.full_like(z[:, :1], 1 / len(own)) for m, z in own.items()}
        else:
            per_batch = self.test_fusion == "batch_entropy"
            weights = dict(zip(own, uncertainty_weights(list(own.values()), per_batch).unbind(1), strict=True))
            weights = {m: w[:, None] for m, w in weights.items()}
        per_modality = {m: weights[m] * z for m, z in own.items()}
        return sum(per_modality.values()), per_modality


class AdaptiveFusion(ConcatFusion):
    """Concat fusion with a trainable per-class allocation of decision weight between modalities:
    z_c = sum_m alpha_{c,m} (W_m f_m)_c + b_c, alpha_{c,.} = M softmax(theta_c) (alpha = 1 at start)."""

    def __init__(self, dims: dict[str, int], num_classes: int) -> None:
        super().__init__(dims, num_classes)
        self.theta = nn.Parameter(torch.zeros(num_classes, len(dims)))

    def alpha(self) -> torch.Tensor:
        return len(self.modalities) * torch.softmax(self.theta, dim=1)          # (C, M)

    def decision_weights(self) -> dict[str, torch.Tensor]:
        """The effective blocks alpha_{c,m} W_m,c."""
        alpha = self.alpha()
        return {m: alpha[:, i : i + 1] * w for i, (m, w) in enumerate(super().decision_weights().items())}

    def branch_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each modality's logits before the allocation, W_m f_m + b / M."""
        _, per_modality = super().forward(features)
        return per_modality

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        alpha, shared_bias = self.alpha(), self.fc.bias / len(self.modalities)
        per_modality = {m: alpha[:, i] * (features[m] @ self.fc.weight[:, b].T) + shared_bias
                        for i, (m, b) in enumerate(self.blocks().items())}
        return sum(per_modality.values()), per_modality


def uncertainty_weights(logits: list[torch.Tensor], per_batch: bool = False) -> torch.Tensor:
    """MLA's dynamic fusion weights (B, M) from each modality's prediction entropy: per sample (softmax over
    classes), or with per_batch one entropy per modality, of the softmax over the batch dimension summed
    over all entries (the released code's calculate_entropy), shared by the batch's samples."""
    if per_batch:
        entropy = torch.stack([-(z.softmax(0) * z.log_softmax(0)).sum() for z in logits])[None, :]
        entropy = entropy.expand(logits[0].shape[0], -1)
    else:
        entropy = torch.stack([-(z.softmax(1) * z.log_softmax(1)).sum(1) for z in logits], 1)
    return torch.softmax(entropy.max(1, keepdim=True).values - entropy, dim=1)


class FiLMFusion(FusionHead):
    """FiLM (Perez et al. 2018) as in the OGM-GE code: audio predicts (gamma, beta) that modulate the visual
    features, z = W (gamma(f_a) * f_v + beta(f_a)) + b."""

    additive = False

    def __init__(self, dims: dict[str, int], num_classes: int) -> None:
        super().__init__(dims, num_classes)
        self.film_by, self.filmed = self.modalities
        d = dims[self.filmed]
        self.film = nn.Linear(dims[self.film_by], 2 * d)
        self.fc = nn.Linear(d, num_classes)

    def fuse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(x).chunk(2, dim=1)
        return self.fc(gamma * y + beta)

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = features[self.film_by], features[self.filmed]
        return self.fuse(x, y), {self.film_by: self.fuse(x, torch.zeros_like(y)),
                                 self.filmed: self.fuse(torch.zeros_like(x), y)}


class GatedFusion(FusionHead):
    """Gated fusion as in the OGM-GE code: z = W_o (sigmoid(W_a f_a + b_a) * (W_v f_v + b_v)) + b_o."""

    additive = False

    def __init__(self, dims: dict[str, int], num_classes: int, hidden: int = 512) -> None:
        super().__init__(dims, num_classes)
        self.gate_by, self.gated = self.modalities
        self.fc = nn.ModuleDict({m: nn.Linear(d, hidden) for m, d in dims.items()})
        self.fc_out = nn.Linear(hidden, num_classes)

    def fuse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fc_out(torch.sigmoid(self.fc[self.gate_by](x)) * self.fc[self.gated](y))

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = features[self.gate_by], features[self.gated]
        return self.fuse(x, y), {self.gate_by: self.fuse(x, torch.zeros_like(y)),
                                 self.gated: self.fuse(torch.zeros_like(x), y)}


FUSIONS: dict[str, type[FusionHead]] = {
    "concat": ConcatFusion, "sum": SumFusion, "shared": SharedFusion, "film": FiLMFusion, "gated": GatedFusion,
    "adaptive": AdaptiveFusion,
}


class AVClassifier(nn.Module):
    """One encoder per modality (one or two), a fusion head, and optional separate unimodal heads."""

    def __init__(self, modalities: tuple[str, ...], num_classes: int, width: int, fusion: str = "concat",
                 aux_heads: bool = False, frame_pooling: str = "mean", head_init: str = "xavier_normal",
                 encoder_args: dict[str, dict] | None = None) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"model.fusion: unknown fusion {fusion!r}; choose from {sorted(FUSIONS)}")
        if len(modalities) == 1 and fusion != "concat":
            fusion = "concat"          # one modality: a plain linear head
        self.modalities = modalities
        self.fusion = fusion
        # encoder_args: a modality's architecture where external weights choose it (avbias.models.weights)
        args = {m: {"width": width} | (encoder_args or {}).get(m, {}) for m in modalities}
        self.encoders = nn.ModuleDict({m: ModalityEncoder(m, frame_pooling=frame_pooling, **args[m])
                                       for m in modalities})
        dims = {m: self.encoders[m].out_dim for m in modalities}
        self.head = FUSIONS[fusion](dims, num_classes)
        self.aux = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in dims.items()}) if aux_heads else None
        if head_init == "xavier_normal":   # the OGM-GE code's weight_init: every linear layer, zero bias
            for layer in self.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_normal_(layer.weight)
                    nn.init.zeros_(layer.bias)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        """Encode the modalities present in `inputs`; the head runs when all are present or it is shared."""
        features = {m: self.encoders[m](inputs[m]) for m in self.modalities if m in inputs}
        if len(features) == len(self.modalities) or isinstance(self.head, SharedFusion):
            logits, per_modality = self.head(features)
        else:
            logits, per_modality = torch.empty(0), {}
        aux = {m: self.aux[m](f) for m, f in features.items()} if self.aux is not None else {}
        return ModelOutput(logits, features, per_modality, aux)
