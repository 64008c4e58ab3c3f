"""One registry of training methods: a method is one file that registers a Method subclass.

The training loop (avbias.train) calls the hooks below; a method overrides only where it differs.
A method's hyperparameters are `params["methods"][<name>]` (params.yaml, group `methods`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F

from avbias.models.fusion import AVClassifier, ModelOutput

if TYPE_CHECKING:
    from avbias.train import Trainer

METHODS: dict[str, Callable[[dict[str, Any]], "Method"]] = {}


def register(name: str, **fixed: Any) -> Callable[[type["Method"]], type["Method"]]:
    """Class decorator: `@register("ogm_ge")`; keyword arguments are bound at construction."""

    def wrap(cls: type[Method]) -> type[Method]:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = lambda params: cls(name, params, **fixed)
        return cls

    return wrap


def create_method(name: str, params: dict[str, Any]) -> "Method":
    try:
        factory = METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered: {sorted(METHODS)}") from None
    return factory(params)


class Method:
    """Joint audio-visual training with cross-entropy on the fused logits: the hooks' defaults."""

    modalities: tuple[str, ...] = ("audio", "visual")
    fusion: str | None = None                 # None: params model.fusion
    aux_heads = False                         # separate unimodal linear heads beside the fusion head
    pretrained: tuple[str, ...] = ()          # runs (same dataset and seed) whose encoders initialise this one
    freeze_encoders = False                   # train the decision layer only (linear probe)
    state_keys: tuple[str, ...] = ()          # attributes saved in the epoch checkpoint (resume)

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        self.name = name
        self.params = params
        self.hparams: dict[str, Any] = params.get("methods", {}).get(name) or {}

    def setup(self, model: AVClassifier, trainer: "Trainer") -> None:
        """Once, after the model is built (and initialised from pretrained runs)."""

    def epoch_start(self, model: AVClassifier, epoch: int, trainer: "Trainer") -> dict[str, float]:
        """Before each epoch's first step (e.g. refresh prototypes or loss weights); return values to log."""
        return {}

    def step_modalities(self, step: int) -> tuple[str, ...]:
        """The modalities encoded at this step (alternating methods train one at a time)."""
        return self.modalities

    def loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(output.logits, labels)

    def backward(self, model: AVClassifier, output: ModelOutput, labels: torch.Tensor, epoch: int,
                 loss: torch.Tensor) -> dict[str, float]:
        """Fill the gradients for the optimiser step; return values to log."""
        loss.backward()
        return self.after_backward(model, output, labels, epoch)

    def after_backward(self, model: AVClassifier, output: ModelOutput, labels: torch.Tensor, epoch: int) -> dict[str, float]:
        """Change gradients before the optimiser step (e.g. gradient modulation); return values to log."""
        return {}

    def in_window(self, epoch: int) -> bool:
        """Whether epoch lies in the method's modulation window [modulation_starts, modulation_ends]."""
        return self.hparams.get("modulation_starts", 0) <= epoch <= self.hparams.get("modulation_ends", 10**9)

    def state(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.state_keys}

    def load_state(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def true_class_score(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of the softmax probability of the true class (OGM-GE's and PMR's score s_m)."""
    return logits.softmax(1).gather(1, labels[:, None]).sum()


def encoder_params(model: AVClassifier, modality: str) -> list[torch.nn.Parameter]:
    return [p for p in model.encoders[modality].parameters() if p.requires_grad]
