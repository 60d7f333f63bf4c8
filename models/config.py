"""Typed training/evaluation configuration: dataclasses that round-trip through YAML.

One place holds every knob of a run so that the exact recipe can be saved beside the
weights (and reloaded by inference), and so the paper's recipe and the shipped CPU
schedule are two YAML files of the same schema rather than two code paths.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class ModelConfig:
    """DDRNet width/depth. Defaults are DDRNet-23-slim (Hong et al. 2021)."""

    architecture: Literal["ddrnet"] = "ddrnet"
    in_channels: int = 3  # 3 = RGB; 8 = RGB + models.skin_reference channels
    planes: int = 32
    spp_planes: int = 128
    head_planes: int = 64
    layers: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    num_classes: int = 2
    aux_head: bool = True  # auxiliary head on the high-resolution branch, training only
    aux_weight: float = 0.4  # weight of the auxiliary loss (DDRNet uses 0.4)


@dataclass
class AugmentConfig:
    """Train-time augmentations (applied before the skin mask zeroes the background)."""

    enabled: bool = True
    scale: tuple[float, float] = (0.75, 1.25)  # zoom of the ROI before letterboxing
    rotation_deg: float = 15.0
    hflip: float = 0.5
    brightness: float = 0.2  # multiplicative, +-
    contrast: float = 0.2  # +-
    hue_deg: float = 8.0
    saturation: float = 0.2
    blur_prob: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    jpeg_prob: float = 0.4
    jpeg_quality: tuple[int, int] = (35, 95)
    noise_prob: float = 0.3
    noise_sigma: float = 6.0


@dataclass
class DataConfig:
    """Where training samples come from and the square letterbox size the net sees.

    source="synthetic": our generator (visible + UV renderings) plus patches painted on
    scikit-image's astronaut photograph. source="folder": a user dataset laid out as
    ``ROOT/images/NAME.(png|jpg)``, ``ROOT/masks/NAME.png`` (lesion, nonzero = vitiligo)
    and optionally ``ROOT/skin/NAME.png`` (face-skin mask; whole image if absent).
    """

    source: Literal["synthetic", "folder"] = "synthetic"
    folder: str | None = None
    input_size: int = 384
    uv_fraction: float = 0.35  # share of synthetic samples rendered as Wood's-lamp UV
    astronaut_fraction: float = 0.25  # share painted on real portraits (v1: astronaut; v2: astronaut + Grace Hopper)
    val_fraction: float = 0.1  # folder source: share held out for validation
    val_samples: int = 24  # synthetic source: validation samples scored at each checkpoint
    synthetic_pool: int = 0  # >0: generate this many samples once, re-augment them (faster)
    # "v1": the first painter (small lighter patches); "v2": models.facial.vitiligo_generator
    # (milky lesions of any extent 0-95 %, skin types weighted to V-VI, real portraits).
    generator: Literal["v1", "v2"] = "v1"
    # Add per-photograph skin-relative colour channels (models.skin_reference) to RGB.
    skin_relative_inputs: bool = False
    # v2: ROI long side drawn from this range before letterboxing (resolution/blur variety);
    # (0, 0) = input_size.
    roi_long_side: tuple[int, int] = (0, 0)
    # v2 mix, None = the generator's own draw (SKIN_TYPE_WEIGHTS; 8 % no vitiligo, 22 % few
    # macules): share of Fitzpatrick types I..VI, of faces without vitiligo, and of faces
    # with few macules (extent 0.3-10 %).
    skin_type_weights: tuple[float, float, float, float, float, float] | None = None
    no_lesion_fraction: float | None = None
    small_extent_fraction: float | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimConfig:
    """AdamW with poly decay; the paper: lr 1e-3, weight decay 0.01, 500 epochs."""

    optimizer: Literal["adamw"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 8
    epochs: int = 500
    samples_per_epoch: int = 243  # paper: 81 patients x 3 views (train+val)
    iterations: int | None = None  # overrides epochs x samples_per_epoch / batch_size
    lr_schedule: Literal["poly", "constant"] = "poly"
    poly_power: float = 0.9
    warmup_iters: int = 0
    # Keep BatchNorm running statistics fixed (fine-tuning with small batches, e.g. on a
    # clinic's corrections; see models.engine.set_training).
    freeze_batchnorm: bool = False

    @property
    def total_iterations(self) -> int:
        if self.iterations is not None:
            return int(self.iterations)
        return max(1, (self.epochs * self.samples_per_epoch) // self.batch_size)


@dataclass
class LossConfig:
    """OHEM cross-entropy: keep pixels whose true-class prob < thresh, at least min_kept."""

    name: Literal["ohem_ce"] = "ohem_ce"
    thresh: float = 0.7
    min_kept: int = 100_000
    ignore_index: int = 255


@dataclass
class TrainConfig:
    """A whole run. Saved as YAML beside the weights; inference reads model+data from it."""

    name: str = "facial_vitiligo_ddrnet23slim"
    version: str = "0.0.0"
    description: str = ""
    seed: int = 0
    num_threads: int = 2
    checkpoint_every: int = 200  # iterations
    init_weights: str | None = None  # fine-tune from these weights (e.g. the shipped ones)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)


T = TypeVar("T")


def _coerce(tp: Any, value: Any) -> Any:
    """Convert a YAML value to the annotated type (nested dataclasses, tuples, lists)."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value or {})
    if origin is tuple:
        args = get_args(tp)
        return tuple(_coerce(a, v) for a, v in zip(args, value, strict=True))
    if origin is list:
        (arg,) = get_args(tp)
        return [_coerce(arg, v) for v in value]
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a dataclass from a dict, refusing unknown keys (typos must not pass silently)."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    kwargs = {k: _coerce(hints[k], v) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain dict (tuples become lists so YAML stays readable)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def load_yaml_config(cls: type[T], path: str | Path) -> T:
    """Load a training config dataclass from YAML; a bare name is looked up in models/configs/.

    The one loader of every task's config (facial, close-up, prick, scalp): unknown keys
    are refused by ``from_dict``.
    """
    p = Path(path)
    if not p.exists() and (CONFIG_DIR / f"{p.name}.yaml").exists():
        p = CONFIG_DIR / f"{p.name}.yaml"
    with open(p, encoding="utf-8") as fh:
        return from_dict(cls, yaml.safe_load(fh) or {})


def save_yaml_config(cfg: Any, path: str | Path) -> None:
    """Write a config dataclass as YAML (what a training run records next to its weights)."""
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(to_dict(cfg), fh, sort_keys=False)


def load_config(path: str | Path) -> TrainConfig:
    """The facial vitiligo training config (see ``load_yaml_config``)."""
    return load_yaml_config(TrainConfig, path)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    save_yaml_config(cfg, path)
