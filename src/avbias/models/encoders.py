"""ResNet18 encoders with a width setting (64 = the standard network; 8 trains in seconds on a CPU)."""

from __future__ import annotations

import torch
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


class ModalityEncoder(nn.Module):
    """Audio: (B, 1, F, T) spectrograms. Visual: (B, T, 3, H, W) frames, folded into the batch, pooled over T
    (mean: the OGM-GE code's adaptive average pooling over time and space; max: over time, after the spatial mean)."""

    def __init__(self, modality: str, width: int, frame_pooling: str = "mean") -> None:
        super().__init__()
        self.modality = modality
        self.frame_pooling = frame_pooling
        self.net = ResNet18(IN_CHANNELS[modality], width)
        self.out_dim = self.net.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.modality == "visual":
            b, t = x.shape[:2]
            per_frame = self.net(x.flatten(0, 1)).view(b, t, -1)
            return per_frame.amax(dim=1) if self.frame_pooling == "max" else per_frame.mean(dim=1)
        return self.net(x)
