"""Severity of vitiligo on a close-up photograph (SEEDS.md B), plain numpy/OpenCV.

* **RGB difference** (the paper's measure): Euclidean distance between the mean RGB of the
  lesion pixels and the mean RGB of the surrounding normal skin, in 8-bit units.
* **CIEDE2000** (Sharma, Wu, Dalal 2005): the perceptual colour difference between the
  mean CIELAB colour of the lesion and of the surrounding skin (sRGB, D65). Less
  dependent on exposure than the RGB distance.
* **Surrounding normal skin**: a ring around the lesions, between ``gap`` and
  ``gap + band`` pixels from the nearest lesion pixel (both relative to the size of the
  visible skin), restricted to visible skin that is not lesion. If the ring is too small
  (lesions cover nearly all skin), all non-lesion visible skin is used and the result
  says so (``reference = "all skin"``).
* **Lesion area %** = lesion pixels / visible-skin pixels x 100. Visible skin is the
  network's learned skin class (skin or vitiligo), never a colour threshold, so
  depigmented skin always stays in the denominator.
* **Lesion count**: 8-connected components of the lesion mask of at least
  ``min_lesion_fraction`` of the visible skin (and 16 px); smaller specks are dropped from
  the lesion mask, so area and count describe the same lesions.

Colour statistics are computed on a copy at most ``work_side`` pixels on its long side
(area-averaged); areas and counts at full resolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


# --------------------------------------------------------------------------- colour
def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 255] (..., 3) -> CIELAB (D65 white, 2 deg observer)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray, kl: float = 1.0, kc: float = 1.0, kh: float = 1.0) -> np.ndarray:
    """CIEDE2000 colour difference (Sharma et al. 2005, eqs. 1-22), vectorised over (..., 3)."""
    lab1, lab2 = np.asarray(lab1, np.float64), np.asarray(lab2, np.float64)
    l1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    l2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_bar**7 / (c_bar**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.where((a1p == 0) & (b1 == 0), 0.0, np.degrees(np.arctan2(b1, a1p)) % 360)
    h2p = np.where((a2p == 0) & (b2 == 0), 0.0, np.degrees(np.arctan2(b2, a2p)) % 360)
    dlp, dcp = l2 - l1, c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(c1p * c2p == 0, 0.0, dh)
    dhp = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2)
    lp_bar, cp_bar = (l1 + l2) / 2, (c1p + c2p) / 2
    hsum = h1p + h2p
    hp_bar = np.where(
        c1p * c2p == 0, hsum,
        np.where(np.abs(h1p - h2p) <= 180, hsum / 2, np.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2)),
    )
    t = (1 - 0.17 * np.cos(np.radians(hp_bar - 30)) + 0.24 * np.cos(np.radians(2 * hp_bar))
         + 0.32 * np.cos(np.radians(3 * hp_bar + 6)) - 0.20 * np.cos(np.radians(4 * hp_bar - 63)))
    d_theta = 30 * np.exp(-(((hp_bar - 275) / 25) ** 2))
    rc = 2 * np.sqrt(cp_bar**7 / (cp_bar**7 + 25.0**7))
    sl = 1 + 0.015 * (lp_bar - 50) ** 2 / np.sqrt(20 + (lp_bar - 50) ** 2)
    sc = 1 + 0.045 * cp_bar
    sh = 1 + 0.015 * cp_bar * t
    rt = -np.sin(np.radians(2 * d_theta)) * rc
    return np.sqrt((dlp / (kl * sl)) ** 2 + (dcp / (kc * sc)) ** 2 + (dhp / (kh * sh)) ** 2
                   + rt * (dcp / (kc * sc)) * (dhp / (kh * sh)))


def rgb_difference(mean_rgb_1, mean_rgb_2) -> float:
    """The paper's severity number: Euclidean distance of two mean RGB colours (0-255)."""
    return float(np.linalg.norm(np.asarray(mean_rgb_1, np.float64) - np.asarray(mean_rgb_2, np.float64)))


# --------------------------------------------------------------------------- masks
def clean_lesions(lesion: np.ndarray, min_pixels: int) -> tuple[np.ndarray, int]:
    """Drop 8-connected components under ``min_pixels``; return (mask, number of lesions)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(lesion.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_pixels
    return keep[labels], int(keep.sum())


def surrounding_ring(lesion: np.ndarray, skin: np.ndarray, gap_px: float, band_px: float) -> np.ndarray:
    """Skin pixels between ``gap_px`` and ``gap_px + band_px`` from the nearest lesion pixel."""
    dist = cv2.distanceTransform((~lesion).astype(np.uint8), cv2.DIST_L2, 3)
    return (dist > gap_px) & (dist <= gap_px + band_px) & skin & ~lesion


def outline_of(mask: np.ndarray, scale: float = 1.0) -> np.ndarray | None:
    """Closed polygon (N, 2) x,y of the largest region of ``mask``, in full-image pixels."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    c = max(contours, key=cv2.contourArea)
    c = cv2.approxPolyDP(c, 0.002 * cv2.arcLength(c, True) + 0.5, True)
    xy = c[:, 0, :].astype(np.float64)
    if len(xy) < 3:
        x, y, w, h = cv2.boundingRect(c)
        xy = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64)
    return (xy + 0.5) * scale - 0.5 if scale != 1.0 else xy


def hull_of(mask: np.ndarray, scale: float = 1.0) -> np.ndarray | None:
    """Convex hull (N, 2) x,y of all regions of ``mask``, in full-image pixels."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    hull = cv2.convexHull(np.concatenate(contours))
    xy = hull[:, 0, :].astype(np.float64)
    if len(xy) < 3:
        x, y, w, h = cv2.boundingRect(hull)
        xy = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64)
    return (xy + 0.5) * scale - 0.5 if scale != 1.0 else xy


@dataclass
class SeverityResult:
    lesion_mask: np.ndarray  # bool (H, W), specks removed
    skin_pixels: int
    lesion_pixels: int
    lesion_percent: float
    lesion_count: int
    lesion_mean_rgb: tuple[float, float, float] | None
    skin_mean_rgb: tuple[float, float, float] | None
    rgb_difference: float | None
    delta_e2000: float | None
    reference: str  # "ring", "all skin" or "none"
    skin_outline_xy: np.ndarray | None
    lesion_hull_xy: np.ndarray | None = None


def measure(rgb: np.ndarray, skin: np.ndarray, lesion: np.ndarray, min_lesion_fraction: float = 0.001,
            ring_gap: float = 0.01, ring_band: float = 0.06, min_ring_pixels: int = 50,
            work_side: int = 1024) -> SeverityResult:
    """Area %, count and colour severity of ``lesion`` (inside ``skin``) on ``rgb``."""
    skin = np.asarray(skin, bool)
    lesion = np.asarray(lesion, bool) & skin
    skin_px = int(np.count_nonzero(skin))
    lesion, count = clean_lesions(lesion, max(16, int(np.ceil(min_lesion_fraction * skin_px))))
    lesion_px = int(np.count_nonzero(lesion))
    percent = 100.0 * lesion_px / skin_px if skin_px else 0.0

    h, w = skin.shape
    scale = min(1.0, work_side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb_w = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        skin_w = cv2.resize(skin.view(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        lesion_w = cv2.resize(lesion.view(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool) & skin_w
    else:
        rgb_w, skin_w, lesion_w = rgb, skin, lesion
    factor = (w / skin_w.shape[1]) if scale < 1.0 else 1.0
    outline = outline_of(skin_w, factor)
    hull = hull_of(lesion_w, factor)

    lesion_rgb = skin_rgb = diff = de = None
    reference = "none"
    if lesion_w.any():
        side = float(np.sqrt(max(1, np.count_nonzero(skin_w))))
        ring = surrounding_ring(lesion_w, skin_w, max(1.0, ring_gap * side), max(3.0, ring_band * side))
        reference = "ring"
        if np.count_nonzero(ring) < min_ring_pixels:
            ring, reference = skin_w & ~lesion_w, "all skin"
        if np.count_nonzero(ring) >= min(min_ring_pixels, 1):
            pix_l = rgb_w[lesion_w].astype(np.float64)
            pix_s = rgb_w[ring].astype(np.float64)
            lesion_rgb = tuple(float(v) for v in pix_l.mean(0))
            skin_rgb = tuple(float(v) for v in pix_s.mean(0))
            diff = rgb_difference(lesion_rgb, skin_rgb)
            de = float(ciede2000(srgb_to_lab(pix_l).mean(0), srgb_to_lab(pix_s).mean(0)))
        else:
            reference = "none"
    return SeverityResult(lesion, skin_px, lesion_px, percent, count, lesion_rgb, skin_rgb, diff, de, reference,
                          outline, hull)
