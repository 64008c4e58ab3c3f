"""Fusion heads that expose each modality's own logits.

Concat fusion is z = W_a f_a + W_v f_v + b: the decision layer is split into one block per modality,
and modality m's logits are W_m f_m + b / M (the bias shared equally, as OGM-GE's code does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from avbias.models.encoders import ModalityEncoder


@dataclass
class ModelOutput:
    logits: torch.Tensor                       # fused (B, C)
    features: dict[str, torch.Tensor]          # per modality (B, D_m)
    modality_logits: dict[str, torch.Tensor]   # per modality (B, C); they sum to `logits`


class ConcatFusion(nn.Module):
    def __init__(self, dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.modalities = tuple(dims)
        self.dims = dims
        self.fc = nn.Linear(sum(dims.values()), num_classes)

    def blocks(self) -> dict[str, slice]:
        """Column slice of the decision weights belonging to each modality."""
        out, start = {}, 0
        for m in self.modalities:
            out[m] = slice(start, start + self.dims[m])
            start += self.dims[m]
        return out

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        shared_bias = self.fc.bias / len(self.modalities)
        per_modality = {
            m: features[m] @ self.fc.weight[:, block].T + shared_bias for m, block in self.blocks().items()
        }
        return sum(per_modality.values()), per_modality


class AVClassifier(nn.Module):
    """One encoder per modality (one or two) and a fusion head."""

    def __init__(self, modalities: tuple[str, ...], num_classes: int, width: int, fusion: str = "concat") -> None:
        super().__init__()
        if fusion != "concat":
            raise ValueError(f"model.fusion: unknown fusion {fusion!r}")
        self.modalities = modalities
        self.encoders = nn.ModuleDict({m: ModalityEncoder(m, width) for m in modalities})
        self.head = ConcatFusion({m: self.encoders[m].out_dim for m in modalities}, num_classes)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        features = {m: self.encoders[m](inputs[m]) for m in self.modalities}
        logits, per_modality = self.head(features)
        return ModelOutput(logits, features, per_modality)
