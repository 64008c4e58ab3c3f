"""Unimodal models: one encoder and a linear head; their accuracy is each modality's capability."""

from typing import Any

from avbias.methods.registry import Method, register


@register("unimodal_audio", modality="audio")
@register("unimodal_visual", modality="visual")
class Unimodal(Method):
    def __init__(self, name: str, params: dict[str, Any], dataset: str | None, modality: str) -> None:
        super().__init__(name, params, dataset)
        self.modalities = (modality,)
