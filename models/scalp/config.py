"""Scalp run configuration: dataclasses <-> YAML through ``models.config``'s helpers.

``models/configs/scalp_paper.yaml`` is the paper's recipe (EfficientNet-B4, 448x448,
focal loss gamma 2, AdamW 1e-4, batch 16, <= 30 epochs, early stop after 5 epochs without
validation macro-F1 gain); ``scalp_shipped.yaml`` is the small CPU schedule of the
shipped weights (EfficientNet-B0 at 224).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from models.config import load_yaml_config, save_yaml_config


@dataclass
class ScalpModelConfig:
    backbone: str = "efficientnet-b4"  # any MONAI EfficientNetBN name, efficientnet-b0 .. b7
    pretrained: bool = False  # ImageNet weights would be downloaded: never at run time
    num_indicators: int = 6
    num_grades: int = 4


@dataclass
class ScalpAugmentConfig:
    """The paper's augmentations: hflip, brightness, contrast, hue, saturation, rotation, scale."""

    enabled: bool = True
    hflip: float = 0.5
    brightness: float = 0.2  # multiplicative +-
    contrast: float = 0.2
    hue_deg: float = 6.0
    saturation: float = 0.2
    rotation_deg: float = 20.0
    scale: tuple[float, float] = (0.85, 1.2)


@dataclass
class ScalpDataConfig:
    """source="synthetic": ``models.scalp.synthetic``; source="csv": a grades CSV + image folder
    (``image,micro_keratin,excess_sebum,interfollicular_erythema,follicular_erythema_pustules,
    dandruff,hair_loss``; image paths relative to ``image_root``, default the CSV's folder)."""

    source: Literal["synthetic", "csv"] = "synthetic"
    csv: str | None = None
    image_root: str | None = None
    val_csv: str | None = None  # optional separate validation CSV; else val_fraction is held out
    val_fraction: float = 0.15  # the paper's split is 70/15/15
    input_size: int = 448
    train_samples: int = 12_450  # synthetic: 70% of 17,785
    val_samples: int = 2_668  # synthetic: 15%
    augment: ScalpAugmentConfig = field(default_factory=ScalpAugmentConfig)


@dataclass
class ScalpOptimConfig:
    optimizer: Literal["adamw"] = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.01
    batch_size: int = 16
    epochs: int = 30
    early_stop_patience: int = 5  # epochs without validation macro-F1 gain
    max_minutes: float | None = None  # wall-time cap (CPU schedules); None: no cap
    bf16_autocast: bool = False  # CPU bf16 autocast for the training forward pass (~2-3x faster)
    # Before each validation, re-estimate BatchNorm running statistics as exact averages over
    # this many training batches (0: off). MONAI's EfficientNet uses BN momentum 0.01, so after
    # a few hundred steps the running statistics still describe the random initial network
    # and eval-mode outputs collapse to one grade per indicator.
    bn_recalibration_batches: int = 8


@dataclass
class ScalpLossConfig:
    name: Literal["focal"] = "focal"
    gamma: float = 2.0
    # Per-grade weights against the label imbalance, from the training labels' frequencies:
    # "none", "inverse_sqrt" (w ~ f^-0.5) or "inverse" (w ~ 1/f); normalised to mean 1.
    class_weighting: Literal["none", "inverse_sqrt", "inverse"] = "none"


@dataclass
class ScalpTrainConfig:
    name: str = "scalp_efficientnet_b4"
    version: str = "0.0.0"
    description: str = ""
    seed: int = 0
    num_threads: int = 2
    init_weights: str | None = None  # fine-tune from these weights
    model: ScalpModelConfig = field(default_factory=ScalpModelConfig)
    data: ScalpDataConfig = field(default_factory=ScalpDataConfig)
    optim: ScalpOptimConfig = field(default_factory=ScalpOptimConfig)
    loss: ScalpLossConfig = field(default_factory=ScalpLossConfig)


def load_scalp_config(path: str | Path) -> ScalpTrainConfig:
    """The scalp grading training config (see ``models.config.load_yaml_config``)."""
    return load_yaml_config(ScalpTrainConfig, path)


def save_scalp_config(cfg: ScalpTrainConfig, path: str | Path) -> None:
    save_yaml_config(cfg, path)
