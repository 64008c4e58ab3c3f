"""Joint training baseline: cross-entropy on the fused logits, with each fusion of the OGM-GE code base."""

from typing import Any

from avbias.methods.registry import Method, register


@register("baseline")
@register("baseline_sum", fusion="sum")
@register("baseline_film", fusion="film")
@register("baseline_gated", fusion="gated")
class Baseline(Method):
    def __init__(self, name: str, params: dict[str, Any], dataset: str | None, fusion: str | None = None) -> None:
        super().__init__(name, params, dataset)
        self.fusion = fusion
