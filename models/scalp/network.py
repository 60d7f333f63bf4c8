"""ScalpNet: one MONAI EfficientNetBN backbone shared by six 4-class heads (SEEDS.md, D)."""
from __future__ import annotations

import torch
from monai.networks.nets import EfficientNetBN
from torch import nn

from .config import ScalpModelConfig


class ScalpNet(nn.Module):
    """Image (B, 3, S, S) -> logits (B, num_indicators, num_grades)."""

    def __init__(self, cfg: ScalpModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ScalpModelConfig()
        if cfg.pretrained:
            raise ValueError("pretrained=True would download ImageNet weights; use init_weights instead")
        self.backbone = EfficientNetBN(
            cfg.backbone, pretrained=False, progress=False, spatial_dims=2, in_channels=3,
            num_classes=1,
        )
        features = self.backbone._fc.in_features
        self.backbone._fc = nn.Identity()  # pooled features after the family's own dropout (b0 0.2 .. b4 0.4)
        self.heads = nn.ModuleList(nn.Linear(features, cfg.num_grades) for _ in range(cfg.num_indicators))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        return torch.stack([head(f) for head in self.heads], dim=1)


def build_scalp_model(cfg: ScalpModelConfig) -> ScalpNet:
    return ScalpNet(cfg)
