"""DDRNet (Deep Dual-Resolution Network, Hong et al. 2021), written from the paper.

Two branches share a ResNet stem: a high-resolution branch kept at 1/8 of the input and
a low-resolution branch going down to 1/64; "bilateral fusion" exchanges information
between them twice (low->high by 1x1 conv + bilinear upsampling, high->low by strided
3x3 convs). The Deep Aggregation Pyramid Pooling Module (DAPPM) enriches the 1/64 context
before it is added to the high-resolution branch for the segmentation head. The facial
vitiligo paper (SEEDS.md A) uses it because it keeps thin lesion borders at low cost.

Default size: DDRNet-23-slim (planes 32, spp 128, head 64, layers [2,2,2,2]).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_MOMENTUM = 0.1


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, no_relu: bool = False) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.downsample = downsample
        self.no_relu = no_relu  # last block of a stage: fusion adds before the ReLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + residual
        return out if self.no_relu else F.relu(out)


class Bottleneck(nn.Module):
    expansion = 2  # DDRNet uses expansion 2, not ResNet's 4

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, no_relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=BN_MOMENTUM)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out)) + residual
        return out if self.no_relu else F.relu(out)


def _make_stage(block: type[BasicBlock] | type[Bottleneck], cin: int, planes: int,
                blocks: int, stride: int = 1) -> nn.Sequential:
    downsample = None
    if stride != 1 or cin != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(cin, planes * block.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion, momentum=BN_MOMENTUM))
    mods: list[nn.Module] = [block(cin, planes, stride, downsample)]
    cin = planes * block.expansion
    for i in range(1, blocks):
        mods.append(block(cin, planes, 1, None, no_relu=(i == blocks - 1)))
    return nn.Sequential(*mods)


def _bn_relu_conv(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(cin, momentum=BN_MOMENTUM), nn.ReLU(inplace=True),
                         nn.Conv2d(cin, cout, k, padding=k // 2, bias=False))


class DAPPM(nn.Module):
    """Deep Aggregation Pyramid Pooling: pooled contexts at 1/2, 1/4, 1/8 and global,
    each fused hierarchically with the previous scale (3x3 conv after adding)."""

    def __init__(self, cin: int, branch: int, cout: int) -> None:
        super().__init__()
        self.scale0 = _bn_relu_conv(cin, branch)
        self.pools = nn.ModuleList([
            nn.AvgPool2d(5, stride=2, padding=2),
            nn.AvgPool2d(9, stride=4, padding=4),
            nn.AvgPool2d(17, stride=8, padding=8),
            nn.AdaptiveAvgPool2d(1),
        ])
        self.scales = nn.ModuleList([_bn_relu_conv(cin, branch) for _ in range(4)])
        self.processes = nn.ModuleList([_bn_relu_conv(branch, branch, 3) for _ in range(4)])
        self.compression = _bn_relu_conv(branch * 5, cout)
        self.shortcut = _bn_relu_conv(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [self.scale0(x)]
        for pool, scale, process in zip(self.pools, self.scales, self.processes):
            up = F.interpolate(scale(pool(x)), size=size, mode="bilinear", align_corners=False)
            outs.append(process(up + outs[-1]))
        return self.compression(torch.cat(outs, 1)) + self.shortcut(x)


class SegmentHead(nn.Module):
    def __init__(self, cin: int, mid: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = _bn_relu_conv(cin, mid, 3)
        self.conv2 = nn.Sequential(nn.BatchNorm2d(mid, momentum=BN_MOMENTUM), nn.ReLU(inplace=True),
                                   nn.Conv2d(mid, num_classes, 1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class DDRNet(nn.Module):
    """DDRNet for semantic segmentation.

    forward(x) returns logits (N, C, H, W) at the input size; in training mode with
    ``aux_head`` it returns ``(main_logits, aux_logits)`` (both at input size), the aux
    head reading the high-resolution branch after the first bilateral fusion.
    Set ``upsample=False`` at call time to get 1/8-resolution logits (cheaper inference).
    """

    def __init__(self, num_classes: int = 2, planes: int = 32, spp_planes: int = 128,
                 head_planes: int = 64, layers: list[int] | tuple[int, ...] = (2, 2, 2, 2),
                 aux_head: bool = True, in_channels: int = 3) -> None:
        super().__init__()
        hr = planes * 2  # high-resolution branch width
        self.stem = nn.Sequential(
            _conv3x3(in_channels, planes, 2), nn.BatchNorm2d(planes, momentum=BN_MOMENTUM), nn.ReLU(inplace=True),
            _conv3x3(planes, planes, 2), nn.BatchNorm2d(planes, momentum=BN_MOMENTUM), nn.ReLU(inplace=True))
        self.layer1 = _make_stage(BasicBlock, planes, planes, layers[0])
        self.layer2 = _make_stage(BasicBlock, planes, planes * 2, layers[1], stride=2)
        self.layer3 = _make_stage(BasicBlock, planes * 2, planes * 4, layers[2], stride=2)
        self.layer4 = _make_stage(BasicBlock, planes * 4, planes * 8, layers[3], stride=2)
        self.layer5 = _make_stage(Bottleneck, planes * 8, planes * 8, 1, stride=2)
        # high-resolution branch (stays at 1/8)
        self.layer3_hr = _make_stage(BasicBlock, planes * 2, hr, 2)
        self.layer4_hr = _make_stage(BasicBlock, hr, hr, 2)
        self.layer5_hr = _make_stage(Bottleneck, hr, hr, 1)
        # bilateral fusion
        self.compression3 = nn.Sequential(nn.Conv2d(planes * 4, hr, 1, bias=False),
                                          nn.BatchNorm2d(hr, momentum=BN_MOMENTUM))
        self.compression4 = nn.Sequential(nn.Conv2d(planes * 8, hr, 1, bias=False),
                                          nn.BatchNorm2d(hr, momentum=BN_MOMENTUM))
        self.down3 = nn.Sequential(_conv3x3(hr, planes * 4, 2), nn.BatchNorm2d(planes * 4, momentum=BN_MOMENTUM))
        self.down4 = nn.Sequential(
            _conv3x3(hr, planes * 4, 2), nn.BatchNorm2d(planes * 4, momentum=BN_MOMENTUM), nn.ReLU(inplace=True),
            _conv3x3(planes * 4, planes * 8, 2), nn.BatchNorm2d(planes * 8, momentum=BN_MOMENTUM))
        self.spp = DAPPM(planes * 16, spp_planes, planes * 4)
        self.final_head = SegmentHead(planes * 4, head_planes, num_classes)
        self.aux_head = SegmentHead(hr, head_planes, num_classes) if aux_head else None
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, upsample: bool = True
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        in_size = x.shape[-2:]
        x = self.stem(x)
        x1 = self.layer1(x)
        x2 = self.layer2(F.relu(x1))
        hr_size = x2.shape[-2:]
        low = self.layer3(F.relu(x2))
        high = self.layer3_hr(F.relu(x2))
        # first bilateral fusion
        low_fused = low + self.down3(F.relu(high))
        high = high + F.interpolate(self.compression3(F.relu(low)), size=hr_size,
                                    mode="bilinear", align_corners=False)
        aux_in = high
        low = self.layer4(F.relu(low_fused))
        high = self.layer4_hr(F.relu(high))
        # second bilateral fusion
        low_fused = low + self.down4(F.relu(high))
        high = high + F.interpolate(self.compression4(F.relu(low)), size=hr_size,
                                    mode="bilinear", align_corners=False)
        high = self.layer5_hr(F.relu(high))
        ctx = self.spp(self.layer5(F.relu(low_fused)))
        ctx = F.interpolate(ctx, size=hr_size, mode="bilinear", align_corners=False)
        out = self.final_head(ctx + high)
        if upsample:
            out = F.interpolate(out, size=in_size, mode="bilinear", align_corners=False)
        if self.training and self.aux_head is not None:
            aux = self.aux_head(aux_in)
            if upsample:
                aux = F.interpolate(aux, size=in_size, mode="bilinear", align_corners=False)
            return out, aux
        return out


def build_model(cfg: "ModelConfig") -> DDRNet:  # noqa: F821 (forward ref to config)
    """Network from a ModelConfig (models.config)."""
    if cfg.architecture != "ddrnet":
        raise ValueError(f"unknown architecture {cfg.architecture!r}")
    return DDRNet(num_classes=cfg.num_classes, planes=cfg.planes, spp_planes=cfg.spp_planes,
                  head_planes=cfg.head_planes, layers=list(cfg.layers), aux_head=cfg.aux_head,
                  in_channels=cfg.in_channels)
