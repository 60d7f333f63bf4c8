"""Typed configuration of a skin prick segmentation run, saved as YAML beside the weights.

``skin_prick_paper.yaml`` is the paper's recipe (U-Net base width 64, 512x512, Dice loss,
Adam lr 1e-3, batch 32, 100 epochs, early stopping patience 15, rotation 30 deg, flips,
30 % shift and zoom); ``skin_prick_shipped.yaml`` is the CPU schedule the shipped weights
were trained with. Both use the same schema and code path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from models.config import load_yaml_config, save_yaml_config


@dataclass
class UNetConfig:
    """The paper's U-Net layout; ``base_width`` channels at full resolution, x2 per level."""

    architecture: Literal["unet"] = "unet"
    base_width: int = 64
    depth: int = 4  # number of 2x2 max-pools (the original U-Net: 4)
    num_classes: int = 3  # background, erythema halo, wheal
    batch_norm: bool = False  # not in the paper; helps a narrow net converge in few iterations
    # "softmax": one 3-class decision (background / erythema halo / wheal), the paper's kind.
    # "sigmoid": three independent maps (whole reaction, wheal, prick-site mark): the wheal
    # is its own decision, not a runner-up to the halo, and the site map feeds the grid fit.
    head: Literal["softmax", "sigmoid"] = "softmax"
    # sigmoid head: probability thresholds of (reaction, wheal, site mark), chosen on
    # validation photographs (models.prick.evaluate_arms --tune-thresholds), never on test ones.
    thresholds: tuple[float, float, float] = (0.5, 0.5, 0.5)
    # Hysteresis for the reaction map: pixels above this lower probability join a reaction
    # when they connect to one above thresholds[0]. A faint flare's outer part sits at
    # 0.4-0.7 (the net is unsure of it, not of the reaction); a lone pixel there is no
    # reaction. None: one threshold.
    reaction_grow_threshold: float | None = None


@dataclass
class AugmentConfig:
    """The paper's augmentations (Keras ImageDataGenerator style) plus optional colour jitter."""

    enabled: bool = True
    rotation_deg: float = 30.0
    hflip: float = 0.5
    vflip: float = 0.5
    shift: float = 0.3  # fraction of the image side
    zoom: float = 0.3  # scale in [1 - zoom, 1 + zoom]
    brightness: float = 0.0  # multiplicative +- (not in the paper)
    saturation: float = 0.0  # +- (not in the paper)


@dataclass
class DataConfig:
    """Training samples: the synthetic generator or a user folder (images/ + masks/).

    Folder layout: ``ROOT/images/NAME.png|jpg|jpeg`` (RGB photograph) and
    ``ROOT/masks/NAME.png`` (label map, same size: 0 background, 1 erythema halo,
    2 wheal; the wheal lies inside the erythema).
    """

    source: Literal["synthetic", "folder"] = "synthetic"
    folder: str | None = None
    input_size: int = 512  # the photograph is letterboxed to input_size x input_size
    train_crop: int = 0  # >0: train on random crops of this size (scale kept), infer at input_size
    synthetic_pool: int = 400  # synthetic samples generated once and re-augmented
    # Synthetic photographs are drawn at input_size x U(scale) on the long side, then
    # letterboxed to input_size (as the app does with a real photograph).
    synthetic_scale: tuple[float, float] = (1.0, 1.0)
    val_samples: int = 40  # synthetic validation samples (another seed range)
    # Fraction of the synthetic photographs (pool and validation) drawn by a second painter,
    # models.prick.independent_painter (its own skin, flare, wheal and camera models): a net
    # that knew one painter under-read the other's flares by ~40 %. The rest come from
    # models.prick.synthetic, the only one with quiet sites and site marks.
    independent_fraction: float = 0.0
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)  # folder: train/val/test (paper 7:1:2)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimConfig:
    optimizer: Literal["adam"] = "adam"
    lr: float = 1e-3
    batch_size: int = 32
    epochs: int = 100
    iterations_per_epoch: int = 0  # 0: one pass over the training set
    early_stopping_patience: int = 15  # epochs without validation Dice improvement
    max_minutes: float = 0.0  # >0: stop (keeping the best epoch) after this wall time


@dataclass
class LossConfig:
    name: Literal["dice", "dice_ce", "sigmoid_dice_bce"] = "dice"  # the paper: Dice-coefficient loss
    ce_weight: float = 1.0  # dice_ce only
    # sigmoid_dice_bce only, per map (reaction, wheal, site mark): BCE positive weight, Dice weight
    pos_weight: tuple[float, float, float] = (1.0, 2.0, 5.0)
    dice_weight: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class FlareEdgeConfig:
    """Where a reaction's flare ends, read from the photograph's own colours after the net.

    The net reads a faint flare on fair skin only in part (a ragged patch around the
    wheal). Its edge is taken where the redness falls to ``half_contrast`` of the flare's
    own contrast against the skin just beyond it, counting only pixels whose colour change
    points the way this flare's does (at most ``max_off_axis`` of it sideways), so shading,
    a pink sheet or a pen mark is not taken for flare; it reaches at most ``reach`` x the
    reaction's equivalent radius beyond the net's outline. A flare whose redness is under
    ``min_contrast_sd`` robust SDs of the skin's (dark skin, flare-less wheals) is left as
    the net read it. A region less solid than ``min_solidity`` (a ragged part-read of a
    faint flare, or the net's flare run together with a red sheet along the arm: 0.42; merged
    flares are 0.75 or more) only has its gaps filled, within its convex hull.
    Chosen on validation panels (seed 7031), never on the card's test ones.
    """

    enabled: bool = False
    half_contrast: float = 0.7
    max_off_axis: float = 0.4
    reach: float = 0.35
    min_contrast_sd: float = 3.0
    min_solidity: float = 0.6
    # Each reaction is read at most this many pixels of radius (then scaled back): a 40 mm
    # flare in a 12 MP photograph is ~300 px across, and its edge needs no more detail than
    # the net's own input gave (full resolution: +1.7 s per 12 MP photograph, same results).
    read_radius_px: float = 48.0


@dataclass
class PrickConfig:
    name: str = "skin_prick_unet"
    version: str = "0.0.0"
    description: str = ""
    seed: int = 0
    num_threads: int = 2
    init_weights: str | None = None  # start from these weights (fine-tune / continue a run)
    model: UNetConfig = field(default_factory=UNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    flare_edge: FlareEdgeConfig = field(default_factory=FlareEdgeConfig)


def load_config(path: str | Path) -> PrickConfig:
    """The skin prick training config (see ``models.config.load_yaml_config``)."""
    return load_yaml_config(PrickConfig, path)


def save_config(cfg: PrickConfig, path: str | Path) -> None:
    save_yaml_config(cfg, path)
