"""Training samples in the app's input form: letterboxing, augmentation, datasets.

Train and inference must see the same thing: a face ROI whose pixels outside the
face-skin mask are 0, letterboxed (aspect kept, zero padding) into a square of
``input_size``. ``letterbox`` is shared with ``models.facial.inference`` for that reason.

User dataset layout (``DataConfig.source = "folder"``)::

    ROOT/images/NAME.png|jpg|jpeg   photograph or face ROI (RGB)
    ROOT/masks/NAME.png             lesion mask, nonzero = vitiligo (same size)
    ROOT/skin/NAME.png              optional face-skin mask, nonzero = skin;
                                    absent: the whole image counts as skin

When a skin mask is given the sample is cropped to its bounding box (the app's ROI).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..config import AugmentConfig, DataConfig
from .synthetic import SyntheticSample, generate_sample, sample_rng

IGNORE_INDEX = 255
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Input normalisation shared by training and inference (pixels outside the skin are 0).
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25


@dataclass(frozen=True)
class LetterboxInfo:
    """Where the resized content sits inside the square: rows y0:y0+h, cols x0:x0+w."""

    scale: float
    y0: int
    x0: int
    h: int
    w: int


def letterbox_geometry(height: int, width: int, size: int) -> LetterboxInfo:
    scale = size / max(height, width)
    h = max(1, min(size, int(round(height * scale))))
    w = max(1, min(size, int(round(width * scale))))
    return LetterboxInfo(scale, (size - h) // 2, (size - w) // 2, h, w)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize keeping aspect (INTER_AREA when shrinking) and pad with 0 to size x size."""
    info = letterbox_geometry(image.shape[0], image.shape[1], size)
    interp = cv2.INTER_AREA if info.scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (info.w, info.h), interpolation=interp)
    out = np.zeros((size, size) + image.shape[2:], dtype=image.dtype)
    out[info.y0:info.y0 + info.h, info.x0:info.x0 + info.w] = resized
    return out, info


def letterbox_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Letterbox a boolean mask by area-averaging then thresholding at 0.5."""
    boxed, _ = letterbox(mask.astype(np.float32), size)
    return boxed >= 0.5


def to_tensor(image_rgb: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> normalised float (3, H, W)."""
    t = torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1).float()
    return (t / 255.0 - PIXEL_MEAN) / PIXEL_STD


def model_input(boxed_rgb: np.ndarray, boxed_skin: np.ndarray, skin_relative: bool) -> torch.Tensor:
    """The network's input for one letterboxed sample, identical in training and inference:
    normalised RGB, plus (``skin_relative``) the per-photograph channels of
    ``models.skin_reference`` computed on this very image and skin mask."""
    rgb = to_tensor(boxed_rgb)
    if not skin_relative:
        return rgb
    from ..skin_reference import skin_relative_channels

    rel = skin_relative_channels(boxed_rgb, boxed_skin)
    return torch.cat([rgb, torch.from_numpy(rel).permute(2, 0, 1)], 0)


# --------------------------------------------------------------------------- augmentation
def augment(image: np.ndarray, lesion: np.ndarray, skin: np.ndarray, cfg: AugmentConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale/rotation/flip/perspective, colour, blur, noise and JPEG on a letterboxed
    square sample; the background is re-zeroed afterwards (as the app masks after
    the camera's processing)."""
    size = image.shape[0]
    if rng.random() < cfg.hflip:
        image, lesion, skin = image[:, ::-1], lesion[:, ::-1], skin[:, ::-1]
    scale = rng.uniform(*cfg.scale)
    angle = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    m[:, 2] += rng.normal(0, 0.03 * size, 2)
    src = np.float32([[0, 0], [size, 0], [size, size], [0, size]])
    jitter = rng.normal(0, 0.03 * size, (4, 2)).astype(np.float32)  # mild perspective (turned views)
    persp = cv2.getPerspectiveTransform(src, src + jitter)
    full = persp @ np.vstack([m, [0, 0, 1]])
    image = cv2.warpPerspective(np.ascontiguousarray(image), full, (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    warp_mask = lambda a: cv2.warpPerspective(np.ascontiguousarray(a).astype(np.float32), full, (size, size),  # noqa: E731
                                              flags=cv2.INTER_LINEAR, borderValue=0) >= 0.5
    lesion, skin = warp_mask(lesion), warp_mask(skin)
    img = image.astype(np.float32)
    # brightness / contrast around the skin mean
    mean = img[skin].mean(axis=0) if skin.any() else np.full(3, 128.0, np.float32)
    img = (img - mean) * (1 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    img *= 1 + rng.uniform(-cfg.brightness, cfg.brightness)
    img *= 1 + rng.normal(0, 0.04, 3).astype(np.float32)  # white balance
    img = np.clip(img, 0, 255).astype(np.uint8)
    if cfg.hue_deg > 0 or cfg.saturation > 0:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + int(round(rng.uniform(-cfg.hue_deg, cfg.hue_deg) / 2))) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * (1 + rng.uniform(-cfg.saturation, cfg.saturation)), 0, 255)
        img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    if rng.random() < cfg.blur_prob:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(*cfg.blur_sigma))
    if rng.random() < cfg.noise_prob:
        img = np.clip(img + rng.normal(0, cfg.noise_sigma * rng.uniform(0.3, 1.0), img.shape), 0, 255).astype(np.uint8)
    if rng.random() < cfg.jpeg_prob:
        q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    img = np.ascontiguousarray(img)
    img[~skin] = 0
    return img, lesion & skin, skin


def prepare(sample: SyntheticSample, size: int, aug: AugmentConfig | None,
            rng: np.random.Generator, skin_relative: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample -> (normalised image tensor, target: 1 lesion, 0 skin, 255 ignore)."""
    image = sample.image.copy()
    image[~sample.skin_mask] = 0
    boxed, _ = letterbox(image, size)
    lesion = letterbox_mask(sample.lesion_mask, size)
    skin = letterbox_mask(sample.skin_mask, size)
    if aug is not None and aug.enabled:
        boxed, lesion, skin = augment(boxed, lesion, skin, aug, rng)
    else:
        boxed[~skin] = 0
    target = np.full((size, size), IGNORE_INDEX, np.int64)
    target[skin] = 0
    target[lesion & skin] = 1
    return model_input(boxed, skin, skin_relative), torch.from_numpy(target)


# --------------------------------------------------------------------------- sources
class SyntheticSource:
    """Synthetic mixture; sample ``i`` is a pure function of (seed, i). With
    ``pool_size > 0`` the first ``pool_size`` samples are generated once, cached and
    reused with fresh augmentations (generation costs ~30 ms, training 2 cores)."""

    def __init__(self, cfg: DataConfig, seed: int, pool_size: int = 0, long_side: int | None = None) -> None:
        self.cfg = cfg
        self.seed = seed
        self.pool_size = pool_size
        self.long_side = long_side or cfg.input_size
        self._cache: dict[int, SyntheticSample] = {}

    def get(self, index: int) -> SyntheticSample:
        key = index % self.pool_size if self.pool_size > 0 else index
        if key in self._cache:
            return self._cache[key]
        rng = sample_rng(self.seed, key)
        if self.cfg.generator == "v2":
            from .vitiligo_generator import generate_face_sample, sample_extent, sample_fitzpatrick

            lo, hi = self.cfg.roi_long_side
            long_side = int(rng.integers(lo, hi + 1)) if hi > 0 else self.long_side
            mix = {}
            c = self.cfg
            if (c.skin_type_weights, c.no_lesion_fraction, c.small_extent_fraction) != (None, None, None):
                mix = {"fitz": sample_fitzpatrick(rng, c.skin_type_weights),
                       "extent": sample_extent(rng, c.no_lesion_fraction, c.small_extent_fraction)}
            sample = generate_face_sample(rng, long_side, uv_fraction=self.cfg.uv_fraction,
                                          portrait_fraction=self.cfg.astronaut_fraction, **mix)
        else:
            sample = generate_sample(rng, self.long_side, self.cfg.uv_fraction, self.cfg.astronaut_fraction)
        if self.pool_size > 0:
            self._cache[key] = sample
        return sample


def list_folder_dataset(root: str | Path) -> list[str]:
    """Names that have both ``images/NAME.*`` and ``masks/NAME.png``; errors if none."""
    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise FileNotFoundError(f"{root}: expected images/ and masks/ subfolders")
    names = sorted(p.stem for p in img_dir.iterdir()
                   if p.suffix.lower() in IMAGE_EXTENSIONS and (mask_dir / f"{p.stem}.png").exists())
    if not names:
        raise FileNotFoundError(f"{root}: no image with a matching masks/NAME.png")
    return names


def load_folder_sample(root: str | Path, name: str) -> SyntheticSample:
    """Read one user sample (see module docstring), cropped to the skin bounding box."""
    root = Path(root)
    img_path = next(p for p in (root / "images").iterdir()
                    if p.stem == name and p.suffix.lower() in IMAGE_EXTENSIONS)
    bgr = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read {img_path}")
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    lesion = cv2.imread(str(root / "masks" / f"{name}.png"), cv2.IMREAD_GRAYSCALE) > 0
    skin_path = root / "skin" / f"{name}.png"
    skin = (cv2.imread(str(skin_path), cv2.IMREAD_GRAYSCALE) > 0) if skin_path.exists() \
        else np.ones(lesion.shape, bool)
    if lesion.shape != rgb.shape[:2] or skin.shape != rgb.shape[:2]:
        raise ValueError(f"{name}: image and mask sizes differ")
    if skin_path.exists() and skin.any():
        ys, xs = np.nonzero(skin)
        sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        rgb, lesion, skin = rgb[sl], lesion[sl], skin[sl]
    rgb = rgb.copy()
    rgb[~skin] = 0
    return SyntheticSample(rgb, lesion & skin, skin, meta={"name": name})


class FolderSource:
    """User dataset; samples are loaded lazily and kept in memory."""

    def __init__(self, root: str | Path, names: list[str]) -> None:
        self.root = Path(root)
        self.names = names
        self._cache: dict[str, SyntheticSample] = {}

    def __len__(self) -> int:
        return len(self.names)

    def get(self, index: int) -> SyntheticSample:
        name = self.names[index % len(self.names)]
        if name not in self._cache:
            self._cache[name] = load_folder_sample(self.root, name)
        return self._cache[name]


def split_folder(names: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic train/val split of a user dataset (at least one training image)."""
    order = list(np.random.default_rng(seed).permutation(len(names)))
    n_val = int(round(len(names) * val_fraction)) if len(names) > 1 else 0
    n_val = min(n_val, len(names) - 1)
    val = sorted(names[i] for i in order[:n_val])
    train = sorted(names[i] for i in order[n_val:])
    return train, val
