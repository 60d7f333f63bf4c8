"""Synthetic skin prick test photographs with exact wheal/erythema label maps.

A forearm-like skin patch (Fitzpatrick I-VI base tones, mottled texture, cylinder
shading, a lighting gradient, sometimes a background strip at an edge) carries 2-8 prick
sites in a grid-ish layout with pen marks next to them (allergen numbers, "H", "NC",
ticks: distractors the net must ignore). Each site is either negative (a tiny puncture,
no label) or a reaction: an irregular rounded erythema halo (5-40 mm, redness from faint
to strong, diffuse border) holding a wheal (2-15 mm; pale, raised with shading, slightly
shiny, sometimes with pseudopods). Some brown naevi are added as colour distractors.

Label map: 0 background, 1 erythema halo (erythema outside the wheal), 2 wheal. The
labelled borders are the drawn shapes before blurring, i.e. mid-way through the diffuse
redness ramp. Everything is seeded by ``(seed, index)``: same arguments, same sample.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from . import ERYTHEMA_HALO, WHEAL

# Mean sRGB of Fitzpatrick skin types I..VI (approximate, inner forearm).
FITZPATRICK_RGB = {
    1: (244, 214, 196), 2: (232, 193, 166), 3: (208, 162, 126),
    4: (172, 123, 88), 5: (122, 82, 56), 6: (78, 52, 38),
}


@dataclass
class PrickSite:
    center_xy: tuple[float, float]
    positive: bool
    wheal_mm: float = 0.0  # mean diameter as drawn (0 = none)
    erythema_mm: float = 0.0
    label: str = ""


@dataclass
class PrickSample:
    image: np.ndarray  # uint8 (H, W, 3) RGB
    label: np.ndarray  # uint8 (H, W): 0/1/2
    px_per_mm: float
    fitzpatrick: int
    sites: list[PrickSite] = field(default_factory=list)
    covered_rows: tuple[int, int] = (0, 0)  # rows [start, stop) hidden by a background strip

    @property
    def positive_sites(self) -> int:
        return sum(s.positive for s in self.sites)


def sample_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), 0x5B7])


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-ish std low-frequency noise with features about ``scale`` pixels wide."""
    sh, sw = max(2, int(h / scale) + 2), max(2, int(w / scale) + 2)
    small = rng.standard_normal((sh, sw)).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return big / (big.std() + 1e-6)


def _blob_polygon(rng: np.random.Generator, cx: float, cy: float, radius: float, irregularity: float,
                  elongation: float, n: int = 72) -> np.ndarray:
    """An irregular rounded closed outline (x, y) around (cx, cy) with mean radius ``radius``."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += irregularity * rng.uniform(0, 1) / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    angle = rng.uniform(0, np.pi)
    x = radius * r * np.cos(theta) * elongation
    y = radius * r * np.sin(theta) / elongation
    ca, sa = np.cos(angle), np.sin(angle)
    return np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], axis=1)


def _pseudopod_polygon(rng: np.random.Generator, cx: float, cy: float, radius: float, n: int = 96) -> np.ndarray:
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones_like(theta)
    for _ in range(int(rng.integers(1, 4))):
        centre, width = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.35)
        d = np.angle(np.exp(1j * (theta - centre)))
        r += rng.uniform(0.3, 0.7) * np.exp(-0.5 * (d / width) ** 2)
    return np.stack([cx + radius * r * np.cos(theta), cy + radius * r * np.sin(theta)], axis=1)


def _fill(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    pts = np.round(polygon * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _site_grid(rng: np.random.Generator, h: int, w: int, n: int, px_per_mm: float) -> list[tuple[float, float]]:
    """2-8 sites in rows along the forearm (1-3 rows), jittered like hand-placed pricks."""
    rows = 1 if n <= 3 else int(rng.integers(2, 4)) if n >= 6 else 2
    per_row = int(np.ceil(n / rows))
    margin_x, margin_y = 0.12 * w, 0.16 * h
    xs = np.linspace(margin_x, w - margin_x, per_row) if per_row > 1 else np.array([w / 2])
    ys = np.linspace(margin_y, h - margin_y, rows) if rows > 1 else np.array([h / 2])
    jitter = 2.5 * px_per_mm
    pts = [(float(x + rng.normal(0, jitter)), float(y + rng.normal(0, jitter))) for y in ys for x in xs]
    order = rng.permutation(len(pts))[:n]
    return [pts[i] for i in sorted(order)]


def _pen_marks(rng: np.random.Generator, img: np.ndarray, sites: list[PrickSite], px_per_mm: float) -> None:
    ink = [(30, 40, 140), (25, 25, 30), (20, 90, 40), (110, 30, 120)][int(rng.integers(0, 4))]
    scale = max(0.35, 0.15 * px_per_mm * rng.uniform(0.8, 1.3))
    thickness = max(1, int(round(0.35 * px_per_mm)))
    for i, site in enumerate(sites):
        x, y = site.center_xy
        reach = max(site.erythema_mm, 8.0) / 2 * px_per_mm + rng.uniform(2, 5) * px_per_mm
        if rng.random() < 0.85:  # the allergen's number / control code next to the site
            text = site.label
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
            side = rng.integers(0, 3)
            if side == 0:
                org = (int(x - tw / 2), int(y - reach))
            elif side == 1:
                org = (int(x - tw / 2), int(y + reach + th))
            else:
                org = (int(x + reach), int(y + th / 2))
            cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness, cv2.LINE_AA)
        if rng.random() < 0.4:  # a tick or dot marking the site
            a = rng.uniform(0, 2 * np.pi)
            p0 = (int(x + np.cos(a) * reach), int(y + np.sin(a) * reach))
            p1 = (int(x + np.cos(a) * (reach + 3 * px_per_mm)), int(y + np.sin(a) * (reach + 3 * px_per_mm)))
            cv2.line(img, p0, p1, ink, thickness, cv2.LINE_AA)


def generate_sample(seed: int, index: int, size: tuple[int, int] = (512, 512),
                    n_sites: int | None = None, negative_fraction: float = 0.25,
                    fitzpatrick: int | None = None, positive_control: bool = True) -> PrickSample:
    """One synthetic photograph ``size`` = (height, width) and its label map.

    The first site is the histamine control ("H"), positive unless ``positive_control``
    is False (with ``negative_fraction=1`` that gives a photograph without any reaction).
    """
    rng = sample_rng(seed, index)
    h, w = size
    fitz = int(fitzpatrick or rng.integers(1, 7))
    n = int(n_sites or rng.integers(2, 9))
    # The patch spans 90-170 mm horizontally, so sites (20-45 mm apart) fit.
    px_per_mm = w / rng.uniform(90, 170) if n <= 4 else w / rng.uniform(120, 170)

    # --- skin ------------------------------------------------------------------------
    base = np.array(FITZPATRICK_RGB[fitz], np.float32) * rng.uniform(0.92, 1.06, 3).astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    mottle = _smooth_noise(rng, h, w, 12 * px_per_mm)
    fine = _smooth_noise(rng, h, w, 1.2 * px_per_mm)
    img *= (1 + 0.035 * mottle + 0.02 * fine)[..., None]
    # Slight redness of the skin itself (not erythema): no label.
    flush = np.clip(_smooth_noise(rng, h, w, 25 * px_per_mm), 0, None) * rng.uniform(0, 0.05)
    img[..., 1] *= 1 - flush
    img[..., 2] *= 1 - 0.8 * flush
    # Forearm: cylinder shading across its short axis (rows), lighting gradient across.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    v = (yy / h - 0.5) * 2
    img *= (1 - rng.uniform(0.1, 0.3) * v**2)[..., None]
    a = rng.uniform(0, 2 * np.pi)
    grad = (np.cos(a) * (xx / w - 0.5) + np.sin(a) * (yy / h - 0.5))
    img *= (1 + rng.uniform(0.05, 0.35) * grad)[..., None]

    # --- sites -----------------------------------------------------------------------
    centers = _site_grid(rng, h, w, n, px_per_mm)
    spacing = min((np.hypot(p[0] - q[0], p[1] - q[1]) for i, p in enumerate(centers) for q in centers[i + 1:]),
                  default=w) / px_per_mm
    label = np.zeros((h, w), np.uint8)
    red = np.zeros((h, w), np.float32)
    wheal_alpha = np.zeros((h, w), np.float32)
    names = ["H", "NC"] + [str(i) for i in range(1, 20)]
    sites: list[PrickSite] = []
    erythema_masks: list[np.ndarray] = []
    for i, (cx, cy) in enumerate(centers):
        site = PrickSite((cx, cy), positive=bool(rng.random() >= negative_fraction), label=names[i])
        if i == 0 and positive_control:  # histamine control is positive
            site.positive = True
        if site.positive:
            # Neighbouring halos mostly stay apart; now and then two touch (max 1.1 x spacing).
            ery_max = min(40.0, 1.1 * spacing if rng.random() < 0.15 else 0.9 * spacing)
            ery_mm = rng.uniform(5.0, max(5.5, ery_max))
            wheal_mm = rng.uniform(2.0, min(15.0, max(2.5, 0.75 * ery_mm)))
            site.erythema_mm, site.wheal_mm = float(ery_mm), float(wheal_mm)
            er_poly = _blob_polygon(rng, cx, cy, ery_mm / 2 * px_per_mm, rng.uniform(0.1, 0.5), rng.uniform(1, 1.25))
            er_mask = _fill((h, w), er_poly)
            ox, oy = rng.normal(0, 0.08 * (ery_mm - wheal_mm) * px_per_mm, 2)
            if rng.random() < 0.2:
                wh_poly = _pseudopod_polygon(rng, cx + ox, cy + oy, wheal_mm / 2.6 * px_per_mm)
            else:
                wh_poly = _blob_polygon(rng, cx + ox, cy + oy, wheal_mm / 2 * px_per_mm, rng.uniform(0.05, 0.3),
                                        rng.uniform(1, 1.15))
            # The wheal stays inside the halo with at least ~0.5 mm of erythema around it.
            k = 2 * max(1, int(round(0.5 * px_per_mm))) + 1
            wh_mask = _fill((h, w), wh_poly) & cv2.erode(er_mask.view(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
            erythema_masks.append(er_mask)
            strength = rng.uniform(0.25, 1.0)
            sigma = max(0.7, rng.uniform(0.06, 0.14) * ery_mm / 2 * px_per_mm)
            blurred = cv2.GaussianBlur(er_mask.astype(np.float32), (0, 0), sigma)
            # Diffuse border: the redness ramps across the labelled border (0.5 at the line).
            red = np.maximum(red, strength * np.clip(blurred * 1.1, 0, 1))
            label[er_mask & (label == 0)] = ERYTHEMA_HALO
            label[wh_mask] = WHEAL
            wheal_alpha = np.maximum(
                wheal_alpha, cv2.GaussianBlur(wh_mask.astype(np.float32), (0, 0), max(0.6, 0.25 * px_per_mm)))
        sites.append(site)

    # Redness: less green and blue, a touch more red; weaker contrast on dark skin.
    tone = 1.0 - 0.08 * (fitz - 1)
    img[..., 0] *= 1 + 0.06 * red * tone
    img[..., 1] *= 1 - 0.32 * red * tone
    img[..., 2] *= 1 - 0.26 * red * tone
    # Wheal: raised oedema is paler than the halo (blanched), with shading and a highlight.
    pale = np.array([1.05, 1.13, 1.10], np.float32) * (1 + 0.03 * (fitz - 1))
    img *= (1 + wheal_alpha[..., None] * (pale - 1))
    gy, gx = np.gradient(cv2.GaussianBlur(wheal_alpha, (0, 0), max(0.8, 0.4 * px_per_mm)))
    light = np.array([np.cos(a + np.pi), np.sin(a + np.pi)], np.float32)
    shade = (gx * light[0] + gy * light[1]) * px_per_mm * rng.uniform(3, 7)
    img *= (1 + np.clip(shade, -0.15, 0.15))[..., None]
    for site in sites:
        cx, cy = site.center_xy
        r_px = max(0.4, 0.25 * px_per_mm)
        if site.positive:  # specular highlight on the wheal's dome
            hl = np.zeros((h, w), np.float32)
            off = site.wheal_mm * px_per_mm * 0.15
            cv2.circle(hl, (int(cx - off * light[0]), int(cy - off * light[1])),
                       max(1, int(site.wheal_mm * px_per_mm * 0.12)), 1.0, -1)
            hl = cv2.GaussianBlur(hl, (0, 0), max(0.6, site.wheal_mm * px_per_mm * 0.08)) * rng.uniform(0.1, 0.35)
            img += hl[..., None] * (255 - img) * 0.9
        # The puncture itself: a tiny dark-red dot (negative sites show only this).
        cv2.circle(img, (int(round(cx)), int(round(cy))), int(np.ceil(r_px)), (110, 40, 40), -1, cv2.LINE_AA)

    # --- distractors, camera ------------------------------------------------------------
    for _ in range(int(rng.integers(0, 5))):  # naevi / freckles (brown, small)
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if any(np.hypot(x - s.center_xy[0], y - s.center_xy[1]) < (s.erythema_mm / 2 + 3) * px_per_mm for s in sites):
            continue
        cv2.circle(img, (int(x), int(y)), max(1, int(rng.uniform(0.5, 2) * px_per_mm)),
                   tuple(float(c) for c in base * rng.uniform(0.45, 0.7)), -1, cv2.LINE_AA)
    out = np.clip(img, 0, 255).astype(np.uint8)
    _pen_marks(rng, out, sites, px_per_mm)
    covered = (0, 0)
    if rng.random() < 0.25:  # a strip of background (table / sleeve) at one edge
        side = int(rng.integers(0, 2))
        k = int(rng.uniform(0.04, 0.1) * h)
        colour = rng.integers(20, 235, 3).astype(np.uint8)
        if side == 0:
            out[:k] = colour
            label[:k] = 0
            covered = (0, k)
        else:
            out[h - k:] = colour
            label[h - k:] = 0
            covered = (h - k, h)
    noise = rng.normal(0, rng.uniform(1, 4), out.shape).astype(np.float32)
    out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.0))
    return PrickSample(image=out, label=label, px_per_mm=float(px_per_mm), fitzpatrick=fitz, sites=sites,
                       covered_rows=covered)
