"""Compare each pixel with this person's own pigmented skin, as a clinician does.

Vitiligo is "lighter than this person's skin", not "lighter than some fixed colour" and not
"lighter than the median of the face": when 80 % of a face is depigmented the median *is*
the lesion colour. The reference here is the darker of two clusters of skin lightness
(a 1-D two-means fit on CIELAB L*), i.e. the pigmented skin that remains; with no lesion
the two clusters are simply shadowed vs lit skin and lie a few L* units apart.

Two things use it:

* ``skin_relative_channels``: extra network input channels (L*, a*, b* and a melanin-like
  index, each minus the reference, on fixed scales, plus L* as a z-score against the
  pigmented cluster's own spread), computed per photograph at network resolution, in
  training and inference alike;
* ``colour_rule_mask``: the plain baseline the issue measured (L* above Otsu's threshold
  inside the skin mask), selectable in ``models.facial.evaluate`` and used by the quality flags.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Fixed scales keep absolute differences meaningful ("12 L* units lighter than my skin").
DELTA_L_SCALE = 15.0
DELTA_AB_SCALE = 8.0
DELTA_MELANIN_SCALE = 0.15
Z_SCALE = 4.0
N_RELATIVE_CHANNELS = 5
MAX_REFERENCE_PIXELS = 6000


@dataclass(frozen=True)
class SkinReference:
    """Robust colour statistics of one photograph's skin.

    ``lab`` is the median CIELAB of the pigmented (darker) cluster, ``spread_l`` the robust
    spread of its L*, ``lesion_l`` the median L* of the lighter cluster and
    ``dark_fraction`` the share of skin pixels in the darker cluster.
    """

    lab: tuple[float, float, float]
    melanin: float
    spread_l: float
    lesion_l: float
    dark_fraction: float

    @property
    def cluster_gap_l(self) -> float:
        """L* distance between the lighter and darker skin clusters (lesion contrast proxy)."""
        return self.lesion_l - self.lab[0]


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) -> float32 CIELAB (L* 0..100, a*, b* about -128..127)."""
    arr = np.ascontiguousarray(rgb, dtype=np.float32) / 255.0
    flat = arr.reshape(-1, 1, 3)
    return cv2.cvtColor(flat, cv2.COLOR_RGB2LAB).reshape(arr.shape)


def melanin_index(rgb: np.ndarray) -> np.ndarray:
    """Melanin-like index: log10 of inverse red reflectance (Dawson's MI without the
    scale factor). Melanin absorbs red light far more than haemoglobin does."""
    red = np.asarray(rgb, dtype=np.float32)[..., 0]
    return np.log10(255.0 / (red + 1.0)).astype(np.float32)


def _two_means_threshold(values: np.ndarray, iterations: int = 12) -> float:
    """Threshold between two 1-D clusters (Lloyd's algorithm from the 10th/90th percentiles)."""
    lo, hi = np.percentile(values, [10, 90]).astype(np.float64)
    if hi - lo < 1e-6:
        return float(hi)
    for _ in range(iterations):
        t = 0.5 * (lo + hi)
        dark, light = values[values <= t], values[values > t]
        if dark.size == 0 or light.size == 0:
            break
        lo, hi = float(dark.mean()), float(light.mean())
    return 0.5 * (lo + hi)


def skin_reference(rgb: np.ndarray, skin_mask: np.ndarray) -> SkinReference | None:
    """Reference colour of the pigmented skin, or None with fewer than 50 skin pixels."""
    mask = np.asarray(skin_mask, dtype=bool)
    n = int(np.count_nonzero(mask))
    if n < 50:
        return None
    pixels = np.asarray(rgb)[mask]
    if n > MAX_REFERENCE_PIXELS:  # deterministic subsample: same answer every run
        pixels = pixels[:: n // MAX_REFERENCE_PIXELS]
    lab = rgb_to_lab(pixels[:, None, :])[:, 0, :]
    light = lab[:, 0]
    t = _two_means_threshold(light)
    dark = light <= t
    if dark.sum() < 10:
        dark = light <= np.percentile(light, 30)
    ref = np.median(lab[dark], axis=0)
    mad = float(np.median(np.abs(light[dark] - ref[0])))
    lesion_l = float(np.median(light[~dark])) if (~dark).any() else float(ref[0])
    mi = float(np.median(melanin_index(pixels[dark])))
    return SkinReference(lab=(float(ref[0]), float(ref[1]), float(ref[2])), melanin=mi,
                         spread_l=max(1.0, 1.4826 * mad), lesion_l=lesion_l,
                         dark_fraction=float(dark.mean()))


def skin_relative_channels(rgb: np.ndarray, skin_mask: np.ndarray,
                           reference: SkinReference | None = None) -> np.ndarray:
    """(H, W, 5) float32: dL*, da*, db*, d(melanin index) against the pigmented-skin
    reference on fixed scales, and L* as a z-score of the pigmented skin's spread.
    Zero outside the skin mask (like the RGB input)."""
    mask = np.asarray(skin_mask, dtype=bool)
    h, w = mask.shape
    out = np.zeros((h, w, N_RELATIVE_CHANNELS), np.float32)
    ref = reference if reference is not None else skin_reference(rgb, mask)
    if ref is None:
        return out
    lab = rgb_to_lab(rgb)
    out[..., 0] = (lab[..., 0] - ref.lab[0]) / DELTA_L_SCALE
    out[..., 1] = (lab[..., 1] - ref.lab[1]) / DELTA_AB_SCALE
    out[..., 2] = (lab[..., 2] - ref.lab[2]) / DELTA_AB_SCALE
    out[..., 3] = (melanin_index(rgb) - ref.melanin) / DELTA_MELANIN_SCALE
    out[..., 4] = (lab[..., 0] - ref.lab[0]) / (ref.spread_l * Z_SCALE)
    np.clip(out, -4.0, 4.0, out=out)
    out[~mask] = 0.0
    return out


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (maximises between-class variance)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return 0.0
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-9:
        return hi
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between))])


def colour_rule_mask(rgb: np.ndarray, skin_mask: np.ndarray, max_side: int = 768,
                     light: np.ndarray | None = None) -> np.ndarray:
    """Baseline: skin pixels whose L* is above Otsu's threshold of the skin's L*.

    The threshold is found on a copy at most ``max_side`` pixels long (fast on 12 MP);
    the rule is applied at full resolution. It has no notion of "no lesion": it always
    splits the skin in two, which is exactly the weakness the issue measured. ``light``:
    the photograph's L* when the caller has it already (saves two colour conversions).
    """
    mask = np.asarray(skin_mask, dtype=bool)
    if not mask.any():
        return np.zeros(mask.shape, bool)
    h, w = mask.shape
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:
        size = (max(1, int(w * s)), max(1, int(h * s)))
        small = cv2.resize(np.asarray(rgb), size, interpolation=cv2.INTER_AREA)
        small_mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        if not small_mask.any():
            small, small_mask = np.asarray(rgb), mask
    else:
        small, small_mask = np.asarray(rgb), mask
    if light is None:
        light = rgb_to_lab(rgb)[..., 0]
    t = otsu_threshold(light[mask] if small is rgb or small_mask is mask
                       else rgb_to_lab(small[small_mask][:, None, :])[:, 0, 0])
    return (light > t) & mask
