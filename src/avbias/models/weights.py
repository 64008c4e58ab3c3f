"""Encoders pretrained elsewhere (ImageNet, AudioSet): where their weights are looked for, how they are
verified, and how their tensors map onto avbias's encoders (docs/pretrained.md).

`model.pretrained.<modality>` names a source: `torchvision:resnet18` (ImageNet-1k), `panns:cnn14` (AudioSet),
or a path to a state dict (torchvision ResNet18, PANNs CNN14 or avbias layout, found from its keys). The
parse-time check (`check_pretrained`) imports no torch: the Snakefile runs it before any job.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from avbias.errors import DataError, ParamsError
from avbias.lazy import torch

MODALITIES = ("audio", "visual")
RANDOM = "random"


def torch_hub_checkpoints() -> Path:
    """torch.hub's folder, as torch computes it: $TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch."""
    home = os.getenv("TORCH_HOME") or os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def panns_data() -> Path:
    """panns_inference's folder for PANNs checkpoints: ~/panns_data."""
    return Path.home() / "panns_data"


@dataclass(frozen=True)
class Published:
    """Weights published under a name: the file, where its ecosystem keeps it, and how to fetch it."""

    name: str
    description: str
    arch: str                  # the avbias encoder it fits: resnet18 | cnn14
    filename: str
    folder: Any                # () -> Path
    folder_rule: str
    url: str
    size: str
    sha256_prefix: str | None  # torch.hub's rule: the hex digits after the last '-' in the file name
    modalities: tuple[str, ...]

    def path(self) -> Path:
        return self.folder() / self.filename


PUBLISHED = {
    "torchvision:resnet18": Published(
        "torchvision:resnet18", "ImageNet-1k ResNet18 (torchvision ResNet18_Weights.IMAGENET1K_V1)", "resnet18",
        "resnet18-f37072fd.pth", torch_hub_checkpoints, "$TORCH_HOME/hub/checkpoints (default ~/.cache/torch)",
        "https://download.pytorch.org/models/resnet18-f37072fd.pth", "44.7 MB", "f37072fd", MODALITIES),
    "panns:cnn14": Published(
        "panns:cnn14", "AudioSet CNN14 (PANNs, Kong et al. 2020; mAP 0.431, 32 kHz, 64 mel bins)", "cnn14",
        "Cnn14_mAP=0.431.pth", panns_data, "~/panns_data (panns_inference's folder)",
        "https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth?download=1", "327 MB", None, ("audio",)),
}


@dataclass(frozen=True)
class WeightsFile:
    modality: str
    source: str                 # as given in model.pretrained.<modality>
    path: Path
    published: Published | None
    pin: str | None             # model.pretrained.sha256.<modality>

    @property
    def arch(self) -> str | None:
        """The encoder architecture, where the source says it (a path's is read from its keys at load time)."""
        return self.published.arch if self.published else None


def pretrained_cfg(model_cfg: dict[str, Any]) -> dict[str, Any]:
    return model_cfg.get("pretrained") or {}


def weights_files(model_cfg: dict[str, Any], modalities: tuple[str, ...] = MODALITIES) -> dict[str, WeightsFile]:
    """The weights file of each modality whose encoder starts from external weights."""
    cfg = pretrained_cfg(model_cfg)
    pins = cfg.get("sha256") or {}
    out = {}
    for m in modalities:
        source = cfg.get(m)
        if not source:
            continue
        published = PUBLISHED.get(source)
        if published is None and re.fullmatch(r"[a-z]+:[a-z0-9_]+", source):
            raise ParamsError(f"model.pretrained.{m}: unknown source {source!r}; choose {sorted(PUBLISHED)} "
                              f"or a path to a state dict")
        if published is not None and m not in published.modalities:
            raise ParamsError(f"model.pretrained.{m}: {source} is a {'/'.join(published.modalities)} encoder")
        out[m] = WeightsFile(m, source, published.path() if published else Path(source).expanduser(), published,
                             pins.get(m))
    return out


def fetch_command(w: WeightsFile) -> str:
    if w.published is None:
        return f"copy the state dict you named to {w.path}"
    return f"mkdir -p '{w.path.parent}' && curl -L -o '{w.path}' '{w.published.url}'"


@lru_cache(maxsize=16)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:   # size and mtime: a changed file is hashed again
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256(path, stat.st_size, stat.st_mtime_ns)


def verify(w: WeightsFile, error: type[Exception] = ParamsError, source: str = "params") -> str:
    """The file's sha256, after checking it exists and matches the published checksum and the user's pin."""
    key = f"{source}: model.pretrained.{w.modality}"
    what = f"{w.source} ({w.published.description})" if w.published else w.source
    if not w.path.is_file():
        lines = [f"{key}: {what}: weights file not found.", f"  looked for: {w.path}"]
        if w.published:
            lines += [f"  folder rule: {w.published.folder_rule}",
                      f"  expected: {w.published.size}"
                      + (f", sha256 beginning {w.published.sha256_prefix}" if w.published.sha256_prefix else "")]
        lines += [f"  on a machine with internet: {fetch_command(w)}",
                  "  then copy it to the path above on this machine; nothing was run or written."]
        raise error("\n".join(lines))
    digest = sha256(w.path)
    expected = [(w.published.sha256_prefix, "the published checksum (the hash in the file name)")
                if w.published and w.published.sha256_prefix else None,
                (w.pin.lower(), f"model.pretrained.sha256.{w.modality}") if w.pin else None]
    for want, source in filter(None, expected):
        if not digest.startswith(want):
            raise error(f"{key}: {w.path}: sha256 {digest} does not match {source} ({want}); the file is "
                        f"damaged or not {what}. Fetch it again: {fetch_command(w)}")
    return digest


def check_pretrained(params: dict[str, Any], source: str = "params") -> None:
    """Parse time: every named weights file exists and verifies; the options fit the model."""
    from avbias.datasets import DATASETS

    model_cfg = params["model"]
    files = weights_files(model_cfg)
    for w in files.values():   # the options first (cheap), then the file
        key = f"{source}: model.pretrained.{w.modality}: {w.source}"
        if w.arch == "resnet18" and model_cfg["width"] != 64:
            raise ParamsError(f"{key} is a standard ResNet18; set model.width to 64 (it is {model_cfg['width']})")
        if w.arch == "cnn14":
            for dataset in params["run"]["datasets"]:
                family = DATASETS[dataset].family
                recipe = params["extract"][family]
                if recipe["audio"] != "fbank" or recipe["num_mel_bins"] != 64:
                    raise ParamsError(f"{key} reads 64 mel bins; set extract.{family}.audio: fbank and "
                                      f"extract.{family}.num_mel_bins: 64 (docs/pretrained.md)")
        verify(w, ParamsError, source)


# ---- train time: state dicts onto encoders ------------------------------------------------------------

# The source task's own layers and PANNs' front end: not part of an avbias encoder (avbias extracts its own
# features, and each method builds its own decision layer).
FIRST_CONV = {"resnet18": "net.stem.0.weight", "cnn14": "net.conv_block1.conv1.weight"}   # avbias keys
DROPPED = {"torchvision_resnet18": ("fc.weight", "fc.bias"),
           "panns_cnn14": ("fc_audioset.weight", "fc_audioset.bias", "spectrogram_extractor.stft.conv_real.weight",
                           "spectrogram_extractor.stft.conv_imag.weight", "logmel_extractor.melW")}


def read_state_dict(path: Path) -> dict[str, Any]:
    """A checkpoint's tensors: PANNs' {'model': ...}, avbias's {'state_dict': ...}, or a bare state dict;
    DataParallel's 'module.' prefix removed."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # a pickle error, a truncated file: name the file
        raise DataError(f"{path}: not a readable PyTorch checkpoint ({exc})") from None
    for key in ("model", "state_dict"):
        if isinstance(saved, dict) and isinstance(saved.get(key), dict):
            saved = saved[key]
    if not isinstance(saved, dict) or not saved:
        raise DataError(f"{path}: no state dict inside")
    return {k.removeprefix("module."): v for k, v in saved.items()}


def layout(state: dict[str, Any], modality: str) -> str:
    if "conv_block1.conv1.weight" in state:
        return "panns_cnn14"
    if "layer1.0.conv1.weight" in state and "conv1.weight" in state:
        return "torchvision_resnet18"
    for prefix, kind in ((f"encoders.{modality}.", "avbias_model"), ("", "avbias_encoder")):
        if f"{prefix}{FIRST_CONV['resnet18']}" in state or f"{prefix}{FIRST_CONV['cnn14']}" in state:
            return kind
    raise DataError(f"model.pretrained.{modality}: unknown checkpoint layout (first keys: {list(state)[:5]}); "
                    "expected torchvision ResNet18, PANNs CNN14 or an avbias model")


def arch_of(state: dict[str, Any], modality: str) -> str:
    """The avbias encoder a checkpoint fits: cnn14 for PANNs' layout (or an avbias CNN14), else resnet18."""
    cnn14 = layout(state, modality) == "panns_cnn14" or any(k.endswith(FIRST_CONV["cnn14"]) for k in state)
    return "cnn14" if cnn14 else "resnet18"


def _torchvision_key(key: str) -> str:
    """torchvision ResNet18 -> avbias ResNet18: conv1/bn1 -> stem.0/1, layer{i}.{j} -> layers.{2(i-1)+j},
    downsample -> shortcut."""
    if key.startswith("conv1."):
        return "net.stem.0." + key.removeprefix("conv1.")
    if key.startswith("bn1."):
        return "net.stem.1." + key.removeprefix("bn1.")
    match = re.fullmatch(r"layer([1-4])\.([01])\.(.+)", key)
    if not match:
        return key
    block = 2 * (int(match[1]) - 1) + int(match[2])
    return f"net.layers.{block}.{match[3].replace('downsample.', 'shortcut.')}"


def encoder_state(state: dict[str, Any], modality: str) -> tuple[dict[str, Any], list[str]]:
    """The tensors of one ModalityEncoder (its keys) and the source keys left out on purpose."""
    kind = layout(state, modality)
    dropped = [k for k in DROPPED.get(kind, ()) if k in state]
    if kind == "avbias_model":
        prefix = f"encoders.{modality}."
        return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}, []
    if kind == "avbias_encoder":
        return dict(state), []
    rename = _torchvision_key if kind == "torchvision_resnet18" else (lambda k: f"net.{k}")
    return {rename(k): v for k, v in state.items() if k not in dropped}, dropped


def adapt_input_channels(weight: Any, channels: int) -> Any:
    """A first convolution for `channels` inputs: summed over RGB for one channel, so a spectrogram is
    filtered as if repeated on three channels (AST's code and timm's adapt_input_conv do the same)."""
    if weight.shape[1] == channels:
        return weight
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    raise DataError(f"first convolution has {weight.shape[1]} input channels; the encoder needs {channels}")


def load_encoder(encoder: Any, w: WeightsFile, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Copy the file's tensors into the encoder: every tensor mapped, none missing, none unexpected."""
    digest = verify(w, DataError, "run")
    tensors, dropped = encoder_state(state if state is not None else read_state_dict(w.path), w.modality)
    own = encoder.state_dict()
    for first in FIRST_CONV.values():
        if first in tensors and first in own:
            tensors[first] = adapt_input_channels(tensors[first], own[first].shape[1])
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    wrong = [f"{k}: file {tuple(tensors[k].shape)}, encoder {tuple(own[k].shape)}" for k in own
             if k in tensors and tensors[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise DataError(f"model.pretrained.{w.modality}: {w.path} does not fit the {w.modality} encoder: "
                        f"missing {missing[:8]}, unexpected {unexpected[:8]}, shapes {wrong[:8]}")
    encoder.load_state_dict(tensors, strict=True)
    return {"source": w.source, "file": str(w.path), "sha256": digest, "tensors": len(tensors), "dropped": dropped}

