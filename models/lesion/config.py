"""Run configuration of the close-up vitiligo segmenter (YAML <-> dataclasses).

Loaded by ``models.config.load_yaml_config`` (unknown keys refused). ``vitiligo_lesion_paper``
is the paper's recipe (SEEDS.md B); ``vitiligo_lesion_shipped`` what was trained here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from models.config import load_yaml_config, save_yaml_config


@dataclass
class LesionModelConfig:
    architecture: Literal["deeplabv3", "unet"] = "deeplabv3"
    encoder: Literal["resnet50", "mobilenetv3_small"] = "resnet50"
    num_classes: int = 3  # 0 not skin, 1 skin, 2 vitiligo


@dataclass
class LesionDataConfig:
    source: Literal["synthetic", "folder"] = "synthetic"
    folder: str = ""  # ROOT with images/ and masks/ (and optional skin/)
    n_train: int = 300  # the paper: 300 train / 125 validation images
    n_val: int = 125
    seed: int = 0
    val_seed: int = 1000  # held-out synthetic set (evaluation uses it too)
    resize: int = 312
    crop: int = 256
    # "v1": the first close-up painter; "v2": render_closeup_v2 (lesions of any extent 0-95 %,
    # same milky colour on any skin, light/white backgrounds)
    generator: Literal["v1", "v2"] = "v1"


@dataclass
class LesionAugmentConfig:
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    brightness_p: float = 0.5
    brightness: tuple[float, float] = (0.7, 1.3)


@dataclass
class LesionOptimConfig:
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    class_weights: tuple[float, float, float] = (1.0, 1.0, 3.0)
    threads: int = 2
    bf16: bool = False  # bfloat16 autocast for the forward pass (~2x faster on this CPU)


@dataclass
class LesionTrainConfig:
    name: str = "vitiligo_lesion_deeplabv3_resnet50"
    version: str = "0.1.0"
    model: LesionModelConfig = field(default_factory=LesionModelConfig)
    data: LesionDataConfig = field(default_factory=LesionDataConfig)
    augment: LesionAugmentConfig = field(default_factory=LesionAugmentConfig)
    optim: LesionOptimConfig = field(default_factory=LesionOptimConfig)


def load_lesion_config(path: str | Path) -> LesionTrainConfig:
    """The vitiligo close-up training config (see ``models.config.load_yaml_config``)."""
    return load_yaml_config(LesionTrainConfig, path)


def save_lesion_config(cfg: LesionTrainConfig, path: str | Path) -> None:
    save_yaml_config(cfg, path)
