"""One registry of training methods: a method is one file that registers a Method subclass.

The training loop (avbias.train) calls the hooks below; a method overrides only where it differs.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from avbias.models.fusion import AVClassifier, ModelOutput

METHODS: dict[str, Callable[[dict[str, Any]], "Method"]] = {}


def register(name: str, **fixed: Any) -> Callable[[type["Method"]], type["Method"]]:
    """Class decorator: `@register("baseline")`; keyword arguments are bound at construction."""

    def wrap(cls: type[Method]) -> type[Method]:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = lambda params: cls(params, **fixed)
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

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(output.logits, labels)

    def after_backward(self, model: AVClassifier, output: ModelOutput, labels: torch.Tensor, epoch: int) -> dict[str, float]:
        """Change gradients before the optimiser step (e.g. gradient modulation); return values to log."""
        return {}
