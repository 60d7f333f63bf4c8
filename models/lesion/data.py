"""Datasets and the paper's preprocessing: resize 312, random crop 256, h/v flips p=0.5,
brightness x[0.7, 1.3] p=0.5 (SEEDS.md B). Labels: 0 not skin, 1 skin, 2 vitiligo.

Folder layout (a hospital's own data)::

    ROOT/images/NAME.png|jpg|jpeg   close-up photograph (RGB)
    ROOT/masks/NAME.png             lesion mask, nonzero = vitiligo, same size
    ROOT/skin/NAME.png              optional visible-skin mask; without it all pixels are skin
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from models.facial.synthetic import sample_rng

from .config import LesionAugmentConfig, LesionDataConfig
from .synthetic import generate_closeup, labels_of

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def resize_pair(image: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's resize to size x size (aspect not kept), labels by nearest neighbour."""
    img = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    lab = cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST)
    return img, lab


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8/float RGB (H, W, 3) -> normalised float tensor (3, H, W)."""
    x = (image.astype(np.float32) - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def augment(image: np.ndarray, labels: np.ndarray, crop: int, aug: LesionAugmentConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = labels.shape
    y0 = int(rng.integers(0, h - crop + 1)) if h > crop else 0
    x0 = int(rng.integers(0, w - crop + 1)) if w > crop else 0
    img = image[y0:y0 + crop, x0:x0 + crop].astype(np.float32)
    lab = labels[y0:y0 + crop, x0:x0 + crop]
    if rng.random() < aug.hflip_p:
        img, lab = img[:, ::-1], lab[:, ::-1]
    if rng.random() < aug.vflip_p:
        img, lab = img[::-1], lab[::-1]
    if rng.random() < aug.brightness_p:
        img = np.clip(img * rng.uniform(*aug.brightness), 0, 255)
    return img, lab


def read_folder(root: str | Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB image, label map) pairs of a user folder."""
    root = Path(root)
    images = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"no images in {root / 'images'}")
    pairs = []
    for path in images:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(root / "masks" / f"{path.stem}.png"), cv2.IMREAD_GRAYSCALE)
        if bgr is None or mask is None or mask.shape != bgr.shape[:2]:
            raise ValueError(f"{path.name}: unreadable image or missing/mismatched masks/{path.stem}.png")
        skin_path = root / "skin" / f"{path.stem}.png"
        skin = cv2.imread(str(skin_path), cv2.IMREAD_GRAYSCALE) if skin_path.exists() else None
        labels = np.ones(mask.shape, np.uint8) if skin is None else (skin > 0).astype(np.uint8)
        labels[mask > 0] = 2  # a lesion is always skin
        pairs.append((cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), labels))
    return pairs


def build_pairs(cfg: LesionDataConfig, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Resized (image, labels) pairs of a split: synthetic, or the folder (last 30 % = val)."""
    if cfg.source == "folder":
        pairs = read_folder(cfg.folder)
        cut = max(1, int(round(len(pairs) * 0.7))) if len(pairs) > 1 else 1
        pairs = pairs[:cut] if split == "train" else (pairs[cut:] or pairs[:1])
        return [resize_pair(i, l, cfg.resize) for i, l in pairs]
    n, seed = (cfg.n_train, cfg.seed) if split == "train" else (cfg.n_val, cfg.val_seed)
    out = []
    for index in range(n):
        sample = generate_closeup(seed, index, size=cfg.resize, generator=cfg.generator)
        out.append((sample.image, labels_of(sample)))
    return out


class AugmentedDataset(torch.utils.data.Dataset):
    """Training view: a new seeded crop/flip/brightness per (epoch, index)."""

    def __init__(self, pairs, crop: int, aug: LesionAugmentConfig, seed: int) -> None:
        self.pairs, self.crop, self.aug, self.seed = pairs, crop, aug, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        rng = sample_rng(self.seed + 7919 * (self.epoch + 1), index)
        img, lab = augment(*self.pairs[index], self.crop, self.aug, rng)
        return to_tensor(img), torch.from_numpy(np.ascontiguousarray(lab).astype(np.int64))
