"""One registry of training methods: a method is one file that registers a Method subclass.

The training loop (avbias.train) calls the hooks below; a method overrides only where it differs.
Hyperparameters are a frozen dataclass next to the method's code (`Method.Hyperparams`): its defaults are
the authors' released values, each with its source. params.yaml `methods.<name>` overrides them, and
`methods.<name>.by_dataset.<dataset or family>` overrides them for one dataset. Every key and type is
checked against the dataclass (`check_method_params`), so a typo fails before any job runs.

This module and the method files import torch lazily (avbias.lazy): the Snakefile reads the registry.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from avbias.errors import ParamsError
from avbias.lazy import F, torch

if TYPE_CHECKING:
    import numpy as np

    from avbias.models.fusion import AVClassifier, ModelOutput

METHODS: dict[str, Callable[..., Method]] = {}
BY_DATASET = "by_dataset"


class RunContext(Protocol):
    """What a method may read of the run it belongs to (avbias.train.loop.Trainer provides it): methods depend on
    this, not on the training loop."""

    splits: tuple[str, ...]          # the splits present: train, val (may be absent), test
    num_classes: int
    device: torch.device

    @property
    def train_batches(self) -> int:
        """Optimiser steps per epoch (len(train_loader), drop_last honoured)."""

    def predict(self, split: str, fraction: float = 1.0, zeroed: tuple[str, ...] = (),
                train_inputs: bool = False) -> dict[str, np.ndarray]:
        """Fused and per-modality logits and features of a split (see Trainer.predict)."""


@dataclass(frozen=True)
class NoHyperparams:
    """A method without hyperparameters."""


def register(name: str, **fixed: Any) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: `@register("ogm_ge")`; keyword arguments are bound at construction."""

    def wrap(cls: type[Method]) -> type[Method]:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = lambda params, dataset=None: cls(name, params, dataset, **fixed)
        METHODS[name].spec = cls   # type: ignore[attr-defined]
        return cls

    return wrap


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name].spec   # type: ignore[attr-defined]
    except KeyError:
        raise ParamsError(f"unknown method {name!r}; registered: {sorted(METHODS)}") from None


def create_method(name: str, params: dict[str, Any], dataset: str | None = None) -> Method:
    method_class(name)
    return METHODS[name](params, dataset)


def _family(dataset: str) -> str | None:
    from avbias.datasets import DATASETS

    spec = DATASETS.get(dataset)
    return spec.family if spec else None


def _type_ok(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) is Literal:
        return value in typing.get_args(hint)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    return hint.__name__


def _check_fields(cls: type, values: dict[str, Any], where: str) -> None:
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in hints:
            known = sorted(hints) or "none"
            raise ParamsError(f"{where}.{key}: unknown hyperparameter; {cls.__qualname__} has {known}")
        if not _type_ok(value, hints[key]):
            raise ParamsError(f"{where}.{key}: expected {_type_name(hints[key])}, got {value!r}")


def method_overrides(params: dict[str, Any], name: str, dataset: str | None) -> dict[str, Any]:
    """params.yaml's values for one method and dataset: the method's block, then by_dataset.<family>,
    then by_dataset.<dataset> (the most specific wins)."""
    block = dict((params.get("methods") or {}).get(name) or {})
    by_dataset = block.pop(BY_DATASET, None) or {}
    if dataset is not None:
        for key in (_family(dataset), dataset):
            if key in by_dataset and key is not None:
                block.update(by_dataset[key])
    return block


def resolve_hyperparams(name: str, params: dict[str, Any], dataset: str | None) -> Any:
    cls = method_class(name).Hyperparams
    return cls(**method_overrides(params, name, dataset))


def check_method_params(params: dict[str, Any], source: str = "params") -> None:
    """Each `methods.<name>` block names a registered method and only its hyperparameters, well typed."""
    from avbias.datasets import DATASETS

    datasets = set(DATASETS) | {spec.family for spec in DATASETS.values()}
    for name, block in (params.get("methods") or {}).items():
        where = f"{source}: methods.{name}"
        if name not in METHODS:
            raise ParamsError(f"{where}: unknown method; registered: {sorted(METHODS)}")
        block = dict(block or {})
        by_dataset = block.pop(BY_DATASET, None) or {}
        cls = method_class(name).Hyperparams
        _check_fields(cls, block, where)
        for dataset, values in by_dataset.items():
            if dataset not in datasets:
                raise ParamsError(f"{where}.{BY_DATASET}.{dataset}: unknown dataset; known: {sorted(datasets)}")
            _check_fields(cls, values or {}, f"{where}.{BY_DATASET}.{dataset}")
    for key in ("methods", "exclude_methods"):
        names = params["run"].get(key, [])
        for name in [] if names == "all" else names:
            if name not in METHODS:
                raise ParamsError(f"{source}: run.{key}: unknown method {name!r}; registered: {sorted(METHODS)}")
    for name in params["run"].get("seeds_by_method") or {}:
        if name not in METHODS:
            raise ParamsError(f"{source}: run.seeds_by_method.{name}: unknown method; registered: {sorted(METHODS)}")
    _check_shared_fusion_fits(params, source)


def _check_shared_fusion_fits(params: dict[str, Any], source: str) -> None:
    """A head shared by the modalities (MLA) needs equal feature sizes: not CNN14's 2048 beside ResNet18's 512."""
    from avbias.models.weights import weights_files

    if "model" not in params or all(w.arch != "cnn14" for w in weights_files(params["model"]).values()):
        return
    for name in run_methods(params):
        if method_class(name).fusion == "shared":
            raise ParamsError(f"{source}: run.methods: {name!r} shares one head across modalities, which needs equal "
                              "feature sizes; model.pretrained.audio panns:cnn14 gives 2048, the visual ResNet18 512")


def run_methods(params: dict[str, Any]) -> list[str]:
    """run.methods, with `all` meaning every registered method (a new method file joins the study), less
    run.exclude_methods."""
    methods, excluded = params["run"]["methods"], params["run"].get("exclude_methods") or ()
    return [m for m in (sorted(METHODS) if methods == "all" else methods) if m not in excluded]


def run_seeds(params: dict[str, Any], method: str) -> list[int]:
    """The seeds a method trains on: its run.seeds_by_method entry, else run.seeds."""
    return list((params["run"].get("seeds_by_method") or {}).get(method, params["run"]["seeds"]))


def run_list(params: dict[str, Any]) -> list[tuple[str, int]]:
    """Every (method, seed) the run trains, per dataset: run_methods, each on its run_seeds."""
    return [(method, seed) for method in run_methods(params) for seed in run_seeds(params, method)]


def run_params(params: dict[str, Any], method: str, dataset: str) -> dict[str, Any]:
    """What one training run reads: model, train, and the resolved hyperparameters of its method and of
    the methods whose runs it builds on (so changing OGM-GE's alpha retrains OGM-GE runs only; a changed
    default in the code retrains too)."""
    names = [method, *method_class(method).pretrained]
    hparams = {name: dataclasses.asdict(resolve_hyperparams(name, params, dataset)) for name in names}
    return {"model": params["model"], "train": params["train"], "methods": hparams}


class Method:
    """Joint audio-visual training with cross-entropy on the fused logits: the hooks' defaults."""

    Hyperparams: ClassVar[type] = NoHyperparams
    modalities: tuple[str, ...] = ("audio", "visual")
    fusion: str | None = None                 # None: params model.fusion
    aux_heads = False                         # separate unimodal linear heads beside the fusion head
    pretrained: tuple[str, ...] = ()          # runs (same dataset and seed) whose encoders initialise this one
    freeze_encoders = False                   # train the decision layer only (linear probe)
    state_keys: tuple[str, ...] = ()          # attributes saved in the epoch checkpoint (resume)

    def __init__(self, name: str, params: dict[str, Any], dataset: str | None = None) -> None:
        self.name = name
        self.params = params
        self.hp = resolve_hyperparams(name, params, dataset)

    def setup(self, model: AVClassifier, trainer: RunContext) -> None:
        """Once, after the model is built (and initialised from pretrained runs)."""

    def epoch_start(self, model: AVClassifier, epoch: int, trainer: RunContext) -> dict[str, float]:
        """Before each epoch's first step (e.g. refresh prototypes or loss weights); return values to log."""
        return {}

    def step_modalities(self, step: int) -> tuple[tuple[str, ...], ...]:
        """The forward/backward passes of one batch, each the modalities it encodes (default: one pass with
        all; MLA: one pass per modality, each followed by its own optimiser step)."""
        return (self.modalities,)

    def zero_grad(self, optimizer: torch.optim.Optimizer, pass_index: int) -> None:
        """Clear the gradients before pass `pass_index` of a batch (see step_modalities): removed (None), so a
        parameter the pass does not reach is skipped by the optimiser step (MLA overrides this)."""
        optimizer.zero_grad(set_to_none=True)

    def loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(output.logits, labels)

    def backward(self, model: AVClassifier, output: ModelOutput, labels: torch.Tensor, epoch: int,
                 loss: torch.Tensor) -> dict[str, float]:
        """Fill the gradients for the optimiser step; return values to log."""
        loss.backward()
        return self.after_backward(model, output, labels, epoch)

    def after_backward(self, model: AVClassifier, output: ModelOutput, labels: torch.Tensor,
                       epoch: int) -> dict[str, float]:
        """Change gradients before the optimiser step (e.g. gradient modulation); return values to log."""
        return {}

    def in_window(self, epoch: int) -> bool:
        """Whether epoch lies in the method's modulation window [modulation_starts, modulation_ends]."""
        return getattr(self.hp, "modulation_starts", 0) <= epoch <= getattr(self.hp, "modulation_ends", 10**9)

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
