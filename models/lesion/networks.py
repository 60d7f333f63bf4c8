"""Segmentation networks of the close-up vitiligo paper (SEEDS.md B), without torchvision.

Architectures: ``deeplabv3`` (ASPP head on an output-stride-16 encoder, like torchvision's
DeepLabv3 without its auxiliary head) and ``unet`` (decoder with skip connections at
strides 16/8/4/2). Encoders: ``resnet50`` (MONAI's ``monai.networks.nets.resnet50``, its
stages used as feature extractor; last stage dilated for DeepLab) and ``mobilenetv3_small``
(our own MobileNetV3-Small: inverted residuals, squeeze-excitation, hard-swish).
No ImageNet weights are loaded (nothing downloads); the paper fine-tuned pretrained ones.

Output: logits (N, num_classes, H, W) at the input size. The app uses 3 classes:
0 = not skin (background, clothing, hair mass), 1 = normally pigmented skin, 2 = vitiligo.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("deeplabv3", "unet")
ENCODERS = ("resnet50", "mobilenetv3_small")


# --------------------------------------------------------------------------- encoders
class ResNet50Encoder(nn.Module):
    """MONAI ResNet-50 stages -> features at strides 2, 4, 8, 16, 32 (or 16 when dilated)."""

    channels = (64, 256, 512, 1024, 2048)

    def __init__(self, dilate_last: bool = False) -> None:
        super().__init__()
        from monai.networks.nets import resnet50

        net = resnet50(spatial_dims=2, n_input_channels=3, pretrained=False, feed_forward=False,
                       conv1_t_size=7, conv1_t_stride=2)  # torchvision-style stem (MONAI defaults to stride 1)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.act)
        self.pool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if dilate_last:  # output stride 16: stride 1 + dilation 2 in the last stage
            for i, block in enumerate(self.layer4):
                if i == 0:
                    block.conv2.stride = (1, 1)
                    if block.downsample is not None:
                        block.downsample[0].stride = (1, 1)
                block.conv2.dilation, block.conv2.padding = (2, 2), (2, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.stem(x)
        f2 = self.layer1(self.pool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer3(f3)
        f5 = self.layer4(f4)
        return [f1, f2, f3, f4, f5]


class HSwish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3.0) / 6.0


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(8, (channels // 4 + 7) // 8 * 8)
        self.fc1, self.fc2 = nn.Conv2d(channels, hidden, 1), nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.relu(self.fc1(s))
        return x * F.hardsigmoid(self.fc2(s))


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, dilation: int = 1,
             act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, dilation * (k // 2), dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, exp: int, cout: int, k: int, stride: int, se: bool, hs: bool,
                 dilation: int = 1) -> None:
        super().__init__()
        act = HSwish if hs else nn.ReLU
        layers: list[nn.Module] = []
        if exp != cin:
            layers.append(_conv_bn(cin, exp, 1, act=act))
        layers.append(_conv_bn(exp, exp, k, stride, groups=exp, dilation=dilation, act=act))
        if se:
            layers.append(SqueezeExcite(exp))
        layers.append(_conv_bn(exp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


# MobileNetV3-Small (Howard et al. 2019, table 2): k, exp, out, SE, HS, stride
_MBV3_SMALL = [
    [(3, 16, 16, True, False, 2)],
    [(3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1)],
    [(5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
     (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1)],
    [(5, 288, 96, True, True, 2), (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1)],
]


class MobileNetV3SmallEncoder(nn.Module):
    """MobileNetV3-Small trunk -> features at strides 2, 4, 8, 16, 32 (or 16 when dilated)."""

    channels = (16, 16, 24, 48, 96)

    def __init__(self, dilate_last: bool = False) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16, 3, 2, act=HSwish)
        stages = []
        cin = 16
        for s_index, spec in enumerate(_MBV3_SMALL):
            blocks = []
            last = s_index == len(_MBV3_SMALL) - 1
            for k, exp, cout, se, hs, stride in spec:
                dilation = 1
                if last and dilate_last:  # output stride 16
                    dilation, stride = 2, 1
                blocks.append(InvertedResidual(cin, exp, cout, k, stride, se, hs, dilation))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


def build_encoder(name: str, dilate_last: bool = False) -> nn.Module:
    if name == "resnet50":
        return ResNet50Encoder(dilate_last)
    if name == "mobilenetv3_small":
        return MobileNetV3SmallEncoder(dilate_last)
    raise ValueError(f"unknown encoder {name!r}; choose one of {ENCODERS}")


# --------------------------------------------------------------------------- heads
class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3): 1x1, three dilated 3x3, image pooling."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn(cin, cout, 1)] + [_conv_bn(cin, cout, 3, dilation=r) for r in rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU())
        self.project = nn.Sequential(_conv_bn(cout * (len(rates) + 2), cout, 1), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(outs, 1))


class DeepLabV3(nn.Module):
    def __init__(self, encoder: str, num_classes: int = 3, head_channels: int | None = None) -> None:
        super().__init__()
        self.encoder = build_encoder(encoder, dilate_last=True)
        cin = self.encoder.channels[-1]
        head = head_channels or (256 if encoder == "resnet50" else 128)
        self.head = nn.Sequential(ASPP(cin, head), _conv_bn(head, head, 3), nn.Conv2d(head, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.encoder(x)[-1])
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class UNet(nn.Module):
    """U-Net decoder over an encoder's five feature levels, upsampled back to the input."""

    def __init__(self, encoder: str, num_classes: int = 3, decoder_channels: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.encoder = build_encoder(encoder)
        enc = self.encoder.channels
        dec = decoder_channels or ((256, 128, 64, 32) if encoder == "resnet50" else (64, 32, 24, 16))
        blocks, cin = [], enc[-1]
        for skip, cout in zip(reversed(enc[:-1]), dec):
            blocks.append(nn.Sequential(_conv_bn(cin + skip, cout, 3), _conv_bn(cout, cout, 3)))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.final = nn.Sequential(_conv_bn(cin, cin, 3), nn.Conv2d(cin, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y = feats[-1]
        for block, skip in zip(self.decoder, reversed(feats[:-1])):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], 1))
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.final(y)


def build_model(architecture: str, encoder: str, num_classes: int = 3) -> nn.Module:
    if architecture == "deeplabv3":
        return DeepLabV3(encoder, num_classes)
    if architecture == "unet":
        return UNet(encoder, num_classes)
    raise ValueError(f"unknown architecture {architecture!r}; choose one of {ARCHITECTURES}")


def describe(architecture: str, encoder: str) -> str:
    names = {"deeplabv3": "DeepLabv3 (ASPP)", "unet": "U-Net"}
    encs = {"resnet50": "ResNet-50 (MONAI)", "mobilenetv3_small": "MobileNetV3-Small"}
    return f"{names.get(architecture, architecture)}, {encs.get(encoder, encoder)} encoder"
