"""Pretrain then fuse (the paper's "extensive pretraining"): the encoders of the unimodal runs of the same
dataset and seed (reused through the DAG, not retrained) initialise a joint model, which is then
(a) fine-tuned end to end, or (b) frozen with only the decision layer trained (linear probe)."""

from typing import Any

from avbias.methods.registry import Method, register


@register("pretrain_finetune", freeze=False)
@register("linear_probe", freeze=True)
class PretrainThenFuse(Method):
    pretrained = ("unimodal_audio", "unimodal_visual")

    def __init__(self, name: str, params: dict[str, Any], dataset: str | None, freeze: bool) -> None:
        super().__init__(name, params, dataset)
        self.freeze_encoders = freeze
