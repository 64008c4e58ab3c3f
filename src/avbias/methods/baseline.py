"""Joint training baseline: two encoders, concat fusion, one cross-entropy on the fused logits."""

from avbias.methods.registry import Method, register


@register("baseline")
class Baseline(Method):
    pass
