"""Encoders: ResNet18 with a width setting (64 = the standard network; 8 trains in seconds on a CPU), and
PANNs' CNN14 for audio pretrained on AudioSet (avbias.models.weights)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IN_CHANNELS = {"audio": 1, "visual": 3}


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 trunk + global average pooling: (B, C, H, W) -> (B, 8 * width)."""

    def __init__(self, in_channels: int, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, ch = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            out = width * mult
            layers += [BasicBlock(ch, out, 1 if i == 0 else 2), BasicBlock(out, out, 1)]
            ch = out
        self.layers = nn.Sequential(*layers)
        self.out_dim = ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x)).mean(dim=(2, 3))


class ConvBlock(nn.Module):
    """PANNs' ConvBlock: two 3x3 convolutions with BatchNorm and ReLU, then average pooling."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return F.avg_pool2d(x, pool) if pool > 1 else x


class Cnn14(nn.Module):
    """PANNs' CNN14 trunk (Kong et al. 2020, audioset_tagging_cnn pytorch/models.py Cnn14) up to its 2048-d
    embedding, the layer its fine-tuning template (finetune_template.py Transfer_Cnn14) builds on; the same
    parameter names, so a checkpoint loads as it is. Input: (B, 1, F, T) log-mel, F = the BatchNorm's bins.
    Not kept: PANNs' own front end (avbias extracts the features) and SpecAugment (a training augmentation)."""

    def __init__(self, mel_bins: int = 64, width: int = 64) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(mel_bins)
        channels = [1] + [width * 2**i for i in range(6)]
        self.blocks = [f"conv_block{i + 1}" for i in range(6)]
        for name, c_in, c_out in zip(self.blocks, channels, channels[1:], strict=False):
            self.add_module(name, ConvBlock(c_in, c_out))
        self.fc1 = nn.Linear(channels[-1], channels[-1])
        self.out_dim = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] != self.bn0.num_features:
            raise ValueError(f"CNN14 expects {self.bn0.num_features} mel bins, got spectrograms of {x.shape[2]}")
        x = self.bn0(x.transpose(1, 2)).transpose(1, 2).transpose(2, 3)   # per-bin norm; PANNs' (time, freq)
        for i, name in enumerate(self.blocks):
            x = F.dropout(getattr(self, name)(x, 2 if i < 5 else 1), 0.2, self.training)
        x = x.mean(dim=3)
        x = F.dropout(x.amax(dim=2) + x.mean(dim=2), 0.5, self.training)
        return F.dropout(torch.relu(self.fc1(x)), 0.5, self.training)


class ModalityEncoder(nn.Module):
    """Audio: (B, 1, F, T) spectrograms. Visual: (B, T, 3, H, W) frames, folded into the batch, pooled over T
    (mean: the OGM-GE code's adaptive average pooling over time and space; max: over time, after the spatial mean)."""

    def __init__(self, modality: str, width: int, frame_pooling: str = "mean", arch: str = "resnet18",
                 mel_bins: int = 64) -> None:
        super().__init__()
        self.modality = modality
        self.frame_pooling = frame_pooling
        if arch == "cnn14" and modality != "audio":
            raise ValueError("CNN14 is an audio encoder")
        self.net: nn.Module = Cnn14(mel_bins, width) if arch == "cnn14" else ResNet18(IN_CHANNELS[modality], width)
        self.out_dim = self.net.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.modality == "visual":
            b, t = x.shape[:2]
            per_frame = self.net(x.flatten(0, 1)).view(b, t, -1)
            return per_frame.amax(dim=1) if self.frame_pooling == "max" else per_frame.mean(dim=1)
        return self.net(x)
