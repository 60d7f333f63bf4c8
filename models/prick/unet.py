"""The skin prick paper's U-Net (Ronneberger et al. layout, Keras implementation in the paper).

Per level: 3x3 conv + ReLU twice ("same" padding, so output size = input size);
down: 2x2 max-pool; up: 2x2 transposed conv (stride 2), concatenation with the skip,
then 3x3 conv + ReLU twice; a 1x1 conv gives the class logits. Widths double per level
from ``base_width`` (the paper's 64; the shipped CPU model is narrower). Input sides must
be divisible by 2**depth.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import UNetConfig


def _double_conv(cin: int, cout: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(2):
        layers.append(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 3, base_width: int = 64, depth: int = 4,
                 batch_norm: bool = False) -> None:
        super().__init__()
        if depth < 1 or base_width < 1:
            raise ValueError("depth and base_width must be positive")
        self.depth = depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_double_conv(cin, w, batch_norm))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(w * 2, w, 2, stride=2))
            self.up_conv.append(_double_conv(w * 2, w, batch_norm))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2**self.depth
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"input sides {tuple(x.shape[-2:])} must be divisible by {factor}")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = self.pool(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips)):
            x = conv(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def build_unet(cfg: UNetConfig) -> UNet:
    net = UNet(3, cfg.num_classes, cfg.base_width, cfg.depth, cfg.batch_norm)
    net.head_kind = cfg.head  # how predict_label_maps reads the logits
    net.thresholds = tuple(cfg.thresholds)
    net.reaction_grow_threshold = cfg.reaction_grow_threshold
    return net
