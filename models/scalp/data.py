"""Scalp samples in the network's input form: letterbox, normalisation, augmentation, datasets.

Training and inference share ``prepare_image``: the photograph is letterboxed (aspect
kept, zero padding) into ``input_size`` x ``input_size`` (the paper: 448) and normalised
with ImageNet statistics.

CSV layout (the one public scalp datasets use)::

    image,micro_keratin,excess_sebum,interfollicular_erythema,follicular_erythema_pustules,dandruff,hair_loss
    images/0001.jpg,1,0,2,0,1,0

Image paths are relative to ``image_root`` (default: the CSV's folder); grades are 0..3.
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import torch

from . import INDICATORS, NUM_GRADES
from .config import ScalpAugmentConfig

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (size, size, 3), aspect kept, INTER_AREA when shrinking, 0 padding."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((size, size, 3), np.uint8)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = resized
    return out


def content_resize(image: np.ndarray, size: int) -> np.ndarray:
    """The letterbox content only (long side = size): what pools store before augmentation."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def pad_square(content: np.ndarray, size: int) -> np.ndarray:
    h, w = content.shape[:2]
    out = np.zeros((size, size, 3), np.uint8)
    y0, x0 = (size - h) // 2, (size - w) // 2
    out[y0:y0 + h, x0:x0 + w] = content
    return out


def to_tensor(square_rgb: np.ndarray) -> torch.Tensor:
    """uint8 (S, S, 3) -> normalised float (3, S, S)."""
    x = (square_rgb.astype(np.float32) - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def prepare_image(rgb: np.ndarray, size: int) -> torch.Tensor:
    """The inference transform (also the validation one): letterbox + normalise."""
    return to_tensor(letterbox(rgb, size))


def augment(content: np.ndarray, cfg: ScalpAugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """The paper's augmentations on the letterbox content: hflip, rotation + scale (reflected
    borders: a close-up has no edge), brightness, contrast, hue, saturation."""
    img = content
    if not cfg.enabled:
        return img
    if rng.random() < cfg.hflip:
        img = img[:, ::-1]
    h, w = img.shape[:2]
    angle = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    scale = rng.uniform(*cfg.scale)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    img = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-cfg.hue_deg, cfg.hue_deg) * 256 / 360) % 256
    hsv[..., 1] *= 1 + rng.uniform(-cfg.saturation, cfg.saturation)
    img = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB_FULL).astype(np.float32)
    img *= 1 + rng.uniform(-cfg.brightness, cfg.brightness)
    mean = img.mean()
    img = (img - mean) * (1 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    return np.clip(img, 0, 255).astype(np.uint8)


class CsvError(ValueError):
    """A grades CSV that cannot be used, with the line that is wrong."""


def read_grades_csv(csv_path: str | Path, image_root: str | Path | None = None) -> tuple[list[Path], np.ndarray]:
    """(image paths, grades (N, 6) int64) from a grades CSV; checks columns, grades and files."""
    csv_path = Path(csv_path)
    root = Path(image_root) if image_root else csv_path.parent
    paths: list[Path] = []
    grades: list[list[int]] = []
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("image", *INDICATORS) if c not in (reader.fieldnames or [])]
        if missing:
            raise CsvError(f"{csv_path.name}: missing column(s) {missing}; expected image,{','.join(INDICATORS)}")
        for line, row in enumerate(reader, start=2):
            try:
                g = [int(str(row[c]).strip()) for c in INDICATORS]
            except ValueError as exc:
                raise CsvError(f"{csv_path.name} line {line}: grades must be integers 0-{NUM_GRADES - 1}") from exc
            if min(g) < 0 or max(g) >= NUM_GRADES:
                raise CsvError(f"{csv_path.name} line {line}: grades must be 0-{NUM_GRADES - 1}, got {g}")
            p = root / row["image"].strip()
            if not p.is_file():
                raise CsvError(f"{csv_path.name} line {line}: image {row['image']!r} not found under {root}")
            paths.append(p)
            grades.append(g)
    if not paths:
        raise CsvError(f"{csv_path.name}: no rows")
    return paths, np.asarray(grades, np.int64)


def load_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CsvError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class CsvScalpDataset:
    """A grades CSV + image folder; ``get(i)`` -> (uint8 RGB image, grades (6,))."""

    def __init__(self, csv_path: str | Path, image_root: str | Path | None = None) -> None:
        self.paths, self.grades = read_grades_csv(csv_path, image_root)

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return load_rgb(self.paths[index]), self.grades[index]


class SyntheticScalpDataset:
    """``n`` generated samples of ``seed`` starting at index ``start``."""

    def __init__(self, n: int, seed: int, start: int = 0) -> None:
        self.n, self.seed, self.start = n, seed, start

    def __len__(self) -> int:
        return self.n

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        from .synthetic import generate_sample

        s = generate_sample(self.seed, self.start + index)
        return s.image, s.grades


def build_pool(dataset, size: int, indices=None) -> tuple[list[np.ndarray], np.ndarray]:
    """Letterbox content of every sample (uint8, long side = size) + grades (N, 6)."""
    idx = range(len(dataset)) if indices is None else indices
    images, grades = [], []
    for i in idx:
        img, g = dataset.get(i)
        images.append(content_resize(img, size))
        grades.append(g)
    return images, np.asarray(grades, np.int64)
