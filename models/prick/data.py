"""Training samples for the prick U-Net: letterbox, the paper's augmentations, datasets.

Train and inference see the same thing: the whole photograph letterboxed (aspect kept,
zero padding) into ``input_size`` x ``input_size`` (``models.facial.data.letterbox``, shared with
the facial model). With ``train_crop`` > 0 training uses random crops of the letterboxed
image (same pixel scale as inference, cheaper per step).

User dataset (``DataConfig.source = "folder"``)::

    ROOT/images/NAME.png|jpg|jpeg   photograph (RGB)
    ROOT/masks/NAME.png             label map, same size: 0 background,
                                    1 erythema (outside the wheal), 2 wheal
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from models.facial.data import PIXEL_MEAN, PIXEL_STD, letterbox

from .config import AugmentConfig, DataConfig
from .synthetic import PrickSample, generate_sample, sample_rng

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Encoded training label maps: bits 0-1 the class (0/1/2), bit 2 a prick-site mark, bit 7
# set on every pixel of a sample whose truth has site marks (the generator's; user
# folders have none, so the site map is not trained on them).
SITE_BIT, SITE_KNOWN = 4, 128


def encode_label(label: np.ndarray, site_mask: np.ndarray | None) -> np.ndarray:
    """Class label map (0/1/2) plus site marks -> one uint8 map that survives warps (nearest)."""
    out = label.astype(np.uint8) & 3
    if site_mask is not None:
        out = out | (site_mask.astype(bool).astype(np.uint8) * SITE_BIT) | SITE_KNOWN
    return out


def decode_targets(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) encoded maps -> (N, 3, H, W) float targets (reaction, wheal, site) and (N,) site-known."""
    cls = target & 3
    t = torch.stack([(cls >= 1), (cls == 2), (target & SITE_BIT) > 0], 1).float()
    known = ((target & SITE_KNOWN) > 0).flatten(1).any(1)
    return t, known


def to_tensor(image_rgb: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> normalised float (3, H, W) (same normalisation as the facial model)."""
    t = torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1).float()
    return (t / 255.0 - PIXEL_MEAN) / PIXEL_STD


def letterbox_pair(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Letterbox an image (area) and its label map (nearest) to size x size."""
    boxed, info = letterbox(image, size)
    lab = cv2.resize(label, (info.w, info.h), interpolation=cv2.INTER_NEAREST)
    out = np.zeros((size, size), np.uint8)
    out[info.y0:info.y0 + info.h, info.x0:info.x0 + info.w] = lab
    return boxed, out


def augment(image: np.ndarray, label: np.ndarray, cfg: AugmentConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rotation, shift, zoom (one affine warp), flips; optional brightness/saturation."""
    if not cfg.enabled:
        return image, label
    h, w = label.shape
    angle = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    zoom = rng.uniform(1 - cfg.zoom, 1 + cfg.zoom)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, zoom)
    m[0, 2] += rng.uniform(-cfg.shift, cfg.shift) * w
    m[1, 2] += rng.uniform(-cfg.shift, cfg.shift) * h
    # Keras' default fill mode is "nearest" (edge replication).
    image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    label = cv2.warpAffine(label, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < cfg.hflip:
        image, label = image[:, ::-1], label[:, ::-1]
    if rng.random() < cfg.vflip:
        image, label = image[::-1], label[::-1]
    if cfg.brightness > 0 or cfg.saturation > 0:
        img = image.astype(np.float32)
        if cfg.saturation > 0:
            grey = img.mean(axis=2, keepdims=True)
            img = grey + (img - grey) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
        if cfg.brightness > 0:
            img *= rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
        image = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def random_crop(image: np.ndarray, label: np.ndarray, crop: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = label.shape
    if crop <= 0 or crop >= min(h, w):
        return image, label
    # Half of the crops are centred on labelled skin so small reactions are seen often.
    ys, xs = np.nonzero(label[::4, ::4])
    if len(ys) and rng.random() < 0.5:
        k = int(rng.integers(0, len(ys)))
        cy, cx = ys[k] * 4, xs[k] * 4
        y0 = int(np.clip(cy - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, h - crop))
        x0 = int(np.clip(cx - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, w - crop))
    else:
        y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    return image[y0:y0 + crop, x0:x0 + crop], label[y0:y0 + crop, x0:x0 + crop]


class SyntheticPrickDataset:
    """Generated samples, letterboxed to ``input_size``; a seed offset separates train/val/test."""

    def __init__(self, count: int, seed: int, input_size: int, offset: int = 0,
                 scale: tuple[float, float] = (1.0, 1.0), with_sites: bool = False,
                 independent_fraction: float = 0.0) -> None:
        self.count, self.seed, self.size, self.offset = count, seed, input_size, offset
        self.scale, self.with_sites = tuple(scale), with_sites
        self.independent_fraction = float(independent_fraction)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.count

    def _independent(self, index: int) -> bool:
        """Whether sample ``index`` is the second painter's: every k-th, spread evenly."""
        f = self.independent_fraction
        return f > 0 and int((index + 1) * f) > int(index * f)

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(letterboxed image, label map); the label is encoded (``encode_label``) with_sites."""
        if index not in self._cache:
            if self.scale == (1.0, 1.0):
                size = (self.size, self.size)
            else:  # photograph-like aspect and size, letterboxed as the app does
                rng = sample_rng(self.seed + 104729, self.offset + index)
                long = int(self.size * rng.uniform(*self.scale))
                aspect = float(rng.choice([4 / 3, 3 / 2, 16 / 9, 1.0]))
                size = (int(long / aspect), long) if rng.random() < 0.8 else (long, int(long / aspect))
            if self._independent(index):
                from .independent_painter import paint_arm

                s = paint_arm(self.seed, self.offset + index, size)  # no site marks: site map not trained
                label = encode_label(s.label, None) if self.with_sites else s.label
            else:
                s = generate_sample(self.seed, self.offset + index, size=size)
                label = encode_label(s.label, s.site_mask) if self.with_sites else s.label
            if s.image.shape[:2] != (self.size, self.size):
                image, label = letterbox_pair(s.image, label, self.size)
            else:
                image = s.image
            self._cache[index] = (image, label)
        return self._cache[index]


def list_folder_dataset(root: str | Path) -> list[str]:
    """Names having both ``images/NAME.*`` and ``masks/NAME.png``."""
    root = Path(root)
    images, masks = root / "images", root / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise FileNotFoundError(f"{root} must contain images/ and masks/")
    names = sorted(p.stem for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                   and (masks / f"{p.stem}.png").exists())
    if not names:
        raise FileNotFoundError(f"no image/mask pairs under {root}")
    return names


def load_folder_sample(root: str | Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    root = Path(root)
    image_path = next(p for p in (root / "images").iterdir() if p.stem == name and p.suffix.lower() in IMAGE_EXTENSIONS)
    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read {image_path}")
    label = cv2.imread(str(root / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise ValueError(f"cannot read mask of {name}")
    if label.ndim == 3:
        label = label[..., 0]
    if label.shape != image.shape[:2]:
        raise ValueError(f"{name}: mask {label.shape} and image {image.shape[:2]} differ in size")
    if label.max() > 2:
        raise ValueError(f"{name}: mask values must be 0 (background), 1 (erythema), 2 (wheal); max is {label.max()}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), label.astype(np.uint8)


class FolderPrickDataset:
    def __init__(self, root: str | Path, names: list[str], input_size: int) -> None:
        self.root, self.names, self.size = Path(root), list(names), input_size
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.names)

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self._cache:
            self._cache[index] = letterbox_pair(*load_folder_sample(self.root, self.names[index]), self.size)
        return self._cache[index]


def split_names(names: list[str], fractions: tuple[float, float, float], seed: int) -> tuple[list[str], list[str], list[str]]:
    """Seeded train/val/test split (the paper's 7:1:2); at least one training sample."""
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    n = len(order)
    n_test = int(round(fractions[2] * n))
    n_val = int(round(fractions[1] * n))
    while n - n_test - n_val < 1 and n_test + n_val > 0:  # tiny datasets: keep one to train on
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def kfold(names: list[str], k: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """k (train, test) splits of a seeded permutation."""
    if k < 2 or k > len(names):
        raise ValueError(f"k-fold needs 2 <= k <= {len(names)} samples, got k={k}")
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    folds = [order[i::k] for i in range(k)]
    return [([n for j, f in enumerate(folds) if j != i for n in f], folds[i]) for i in range(k)]


def training_batch(dataset, indices: np.ndarray, cfg: DataConfig, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of augmented (and cropped) samples; deterministic in (seed, step)."""
    images, labels = [], []
    for j, idx in enumerate(indices):
        rng = sample_rng(seed + 7919, step * 1000 + j)
        image, label = dataset.get(int(idx))
        image, label = augment(image, label, cfg.augment, rng)
        image, label = random_crop(image, label, cfg.train_crop, rng)
        images.append(to_tensor(image))
        labels.append(torch.from_numpy(np.ascontiguousarray(label)).long())
    return torch.stack(images), torch.stack(labels)


def as_sample(s: PrickSample) -> tuple[np.ndarray, np.ndarray]:
    return s.image, s.label
