"""An independent painter of synthetic skin-prick-test forearm photographs with exact truth.

Written without looking at the project's own prick synthesiser, so that a segmenter trained on
that one can be checked on photographs "drawn by someone else". Everything is painted from
smooth fields whose thresholds *are* the truth: a flare's truth is where its own redness field
is >= half its peak, a wheal's truth is the raised dome it is shaded from. Choices: a volar
forearm as a tapering cylinder lit from one side (Lambert + faint sheen), skin RGB per
Fitzpatrick type with mottling, pores and creases; flares as tapered blotchy radial fields
(redness = lower green/blue, weaker on darker skin); wheals as pale flat-topped plateaus with
harmonic/finger outlines whose shading stays inside the outline; puncture dots, freckles and
naevi, hair, pen labels; table/sheet/drape background, sometimes a sleeve; blur, noise, white
balance, vignetting and JPEG. Overlapping flares are painted as the maximum of their fields.

    python -m models.prick.independent_painter --out DIR --count 6 --seed 0
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

# Volar forearm RGB at the arm's crown (Fitzpatrick I..VI) and how visible erythema is on it.
SKIN_RGB = {1: (240, 206, 188), 2: (228, 188, 162), 3: (206, 162, 128), 4: (168, 122, 88),
            5: (122, 84, 60), 6: (80, 55, 42)}
RED_VISIBILITY = {1: 1.0, 2: 0.9, 3: 0.72, 4: 0.5, 5: 0.34, 6: 0.22}
BACKGROUNDS = {"table": [(150, 112, 80), (182, 178, 170), (228, 226, 220)],
               "sheet": [(234, 236, 238), (204, 218, 232)], "drape": [(62, 118, 104), (72, 106, 152)]}
SLEEVES = [(38, 40, 58), (30, 30, 32), (110, 112, 118), (96, 36, 44)]


@dataclass
class PaintedArm:
    """One photograph and its truth.

    ``label``: 0 normal skin/background, 1 erythema outside the wheal, 2 wheal. ``sites``:
    (x, y, wheal_mm, flare_mm) per prick site, x/y in pixels of ``image``; the mm are
    equivalent-circle diameters (2 sqrt(area / pi)) of that site's own truth masks, the flare
    one being its flare region united with its wheal, clipped to visible skin. Neighbouring
    flares may merge in ``label``; each site is still measured on its own mask.
    """

    image: np.ndarray
    label: np.ndarray
    px_per_mm: float
    fitzpatrick: int
    sites: list[tuple[float, float, float, float]]
    background: str = ""
    meta: dict = field(default_factory=dict)


def _noise(rng: np.random.Generator, h: int, w: int, cell_y: float, cell_x: float | None = None) -> np.ndarray:
    """Smooth ~unit noise: a coarse random grid resized up (cheap even at 12 MP)."""
    cell_x = cell_y if cell_x is None else cell_x
    grid = rng.standard_normal((max(2, int(h / max(cell_y, 1.0)) + 2), max(2, int(w / max(cell_x, 1.0)) + 2)))
    out = cv2.resize(grid.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return out / (out[::7, ::7].std() + 1e-6)


def _window(x0: int, y0: int, n: int, h: int, w: int, nw: int | None = None):
    """Image slices and local slices of an n x nw window at (x0, y0), clipped to the frame."""
    nw = n if nw is None else nw
    ax0, ay0 = min(w, max(0, x0)), min(h, max(0, y0))
    ax1, ay1 = max(ax0, min(w, x0 + nw)), max(ay0, min(h, y0 + n))
    return (slice(ay0, ay1), slice(ax0, ax1)), (slice(ay0 - y0, ay1 - y0), slice(ax0 - x0, ax1 - x0))


def _around(x: float, y: float, radius: float, h: int, w: int):
    """Planar-image index of the square around (x, y) in the frame, and its pixels' distances."""
    n = int(2 * radius + 4)
    img_s, _ = _window(int(x) - n // 2, int(y) - n // 2, n, h, w)
    yy, xx = np.ogrid[img_s]
    return (slice(None), *img_s), np.hypot(xx - x, yy - y).astype(np.float32)


def _flare(rng: np.random.Generator, sx: float, sy: float, radius: float, ppm: float, h: int, w: int):
    """Blotchy redness field (peak 1) around (sx, sy) whose half-peak region has area pi radius^2.

    Computed on a coarse grid (k pixels per sample, ~6 samples/mm; a flare is smooth), tapered to
    zero well outside the half-peak line (no window edges), and resized by k over the part in the
    frame; the truth is thresholded on the resized field, i.e. on exactly what gets painted.
    """
    k = max(1, int(round(ppm / 6)))
    half = int(math.ceil((2.6 * radius + 2 * ppm) / k))
    n, x0, y0 = 2 * half, int(round(sx)) - half * k, int(round(sy)) - half * k
    c = (np.arange(n, dtype=np.float32) + 0.5) * k - 0.5
    gx, gy = c[None, :] + x0 - sx, c[:, None] + y0 - sy
    rho, th = np.hypot(gx, gy), np.arctan2(gy, gx)
    shape = np.ones_like(th)
    for j in range(1, 5):  # irregular outline: a few low harmonics
        shape += rng.uniform(0, 0.2) / j * np.cos(j * th + rng.uniform(0, 2 * np.pi))
    blot, mottle = _noise(rng, n, n, 0.75 * radius / k), _noise(rng, n, n, 0.4 * radius / k)
    a, b, p = rng.uniform(0.08, 0.22), rng.uniform(0.04, 0.12), rng.uniform(2.0, 3.5)
    scale = 1.0
    for _ in range(4):  # rescale until the half-peak area matches the target
        q = rho / (scale * radius * shape) * np.exp(a * blot)
        taper = np.clip((2.3 - q) / 0.6, 0, 1)
        g = np.exp(-math.log(2) * q ** p) * np.clip(1 + b * mottle, 0, None) * taper * taper * (3 - 2 * taper)
        area = np.count_nonzero(g >= 0.5 * g.max()) * k * k
        scale *= math.sqrt(math.pi * radius ** 2 / max(area, 1.0))
    # Crop to the frame (+2 samples so resize's border never reaches it) and upsample by k.
    j0, i0 = max(0, -x0 // k - 2), max(0, -y0 // k - 2)
    j1, i1 = min(n, (w - x0) // k + 3), min(n, (h - y0) // k + 3)
    crop = np.ascontiguousarray(g[i0:i1, j0:j1] / g.max())
    big = cv2.resize(crop, ((j1 - j0) * k, (i1 - i0) * k), interpolation=cv2.INTER_LINEAR)
    return big / big.max(), x0 + j0 * k, y0 + i0 * k


def _wheal(rng: np.random.Generator, sx: float, sy: float, radius: float, big: bool, light: np.ndarray,
           ppm: float):
    """A pale dome with an irregular (star-shaped) outline, maybe pseudopods, lit from `light`.

    Returns (x0, y0, truth, ind, paleness weight, multiplicative shade, specular); the shading
    is weighted by the anti-aliased indicator, so nothing of it leaves the truth outline.
    """
    th = np.linspace(-np.pi, np.pi, 720, endpoint=False)
    r = np.ones_like(th)
    irr = rng.uniform(0.0, 0.3)
    for k in range(2, 6):
        r += rng.uniform(0, irr) / k * np.cos(k * th + rng.uniform(0, 2 * np.pi))
    if rng.random() < (0.55 if big else 0.25):  # pseudopods: fingers of constant width
        for _ in range(int(rng.integers(1, 4))):
            d = np.angle(np.exp(1j * (th - rng.uniform(-np.pi, np.pi))))
            half_w, length = rng.uniform(0.15, 0.35), rng.uniform(1.2, 1.7)
            along, across = np.cos(d), np.abs(np.sin(d)) + 1e-6
            r = np.maximum(r, np.where(along > 0, np.minimum(length / np.maximum(along, 1e-6), half_w / across), 0))
    kernel = np.exp(-0.5 * (np.arange(-15, 16) / 5.0) ** 2)
    r = np.convolve(np.r_[r[-15:], r, r[:15]], kernel / kernel.sum(), "valid")  # round the corners
    r /= math.sqrt(np.mean(r ** 2))  # equivalent-circle radius 1 (area = pi mean(r^2))
    n = int(2 * radius * r.max() + 8)
    x0, y0 = int(round(sx - n / 2)), int(round(sy - n / 2))
    c = np.arange(n, dtype=np.float32)
    gx, gy = c[None, :] + x0 - sx, c[:, None] + y0 - sy
    rho = np.hypot(gx, gy)
    rr = radius * np.interp(np.arctan2(gy, gx), th, r, period=2 * np.pi).astype(np.float32)
    f = rho / rr
    truth = f < 1
    ind = np.clip(rr - rho + 0.5, 0, 1)
    dome = np.clip(1 - f ** rng.uniform(2, 4), 0, 1)  # flat-topped: wheals are plateaus
    hy, hx = np.gradient(rng.uniform(0.1, 0.22) * radius * dome)
    norm = np.sqrt(1 + hx * hx + hy * hy)
    dot = (-hx * light[0] - hy * light[1] + light[2]) / norm
    shade = 1 + rng.uniform(0.6, 1.0) * (dot - light[2]) * ind
    half = light + np.array([0, 0, 1], np.float32); half /= np.linalg.norm(half)
    spec = np.clip((-hx * half[0] - hy * half[1] + half[2]) / norm, 0, 1) ** 60 * rng.uniform(0, 0.15) * ind
    soft = np.clip((rr - rho) / max(1.0, rng.uniform(0.15, 0.4) * ppm) + 0.5, 0, 1)  # centred on the outline
    pale = rng.uniform(0.35, 0.75) * soft * (0.75 + 0.25 * dome)
    return x0, y0, truth, ind, pale, shade, spec


def _ink(img: np.ndarray, mask: np.ndarray, rgb, opacity: float) -> None:
    """Blend a colour into planar `img` through an 8-bit coverage mask, touching only its pixels."""
    ys, xs = np.nonzero(mask)
    a = mask[ys, xs].astype(np.float32) * (opacity / 255)
    for c in range(3):
        img[c, ys, xs] = img[c, ys, xs] * (1 - a) + rgb[c] * a


def paint_arm(seed: int, index: int, size: tuple[int, int], fitzpatrick: int | None = None) -> PaintedArm:
    """Paint photograph `index` of stream `seed` at `size` = (height, width); deterministic."""
    rng = np.random.default_rng([seed, index])
    drawn = int(rng.integers(1, 7))
    fitz = int(fitzpatrick) if fitzpatrick else drawn
    vis = RED_VISIBILITY[fitz]
    portrait = size[0] > size[1]
    h, w = (size[1], size[0]) if portrait else size  # paint landscape, turn at the end
    # Arm geometry: a tapering band along u, across v; pixels per mm from arm width and frame.
    arm_mm, s_col = rng.uniform(60, 80), rng.uniform(20, 35)
    s_row = rng.uniform(20, min(35.0, arm_mm - 28))
    ppm = min(rng.uniform(0.55, 0.85) * h / arm_mm, 0.95 * w / (2 * s_col + 44))
    ang = math.radians(rng.uniform(-10, 10)); ca, sa = math.cos(ang), math.sin(ang)
    hw0 = arm_mm * ppm / 2
    cx, cy = w / 2 + rng.uniform(-0.04, 0.04) * w, h / 2 + rng.uniform(-0.5, 0.5) * max(0.0, h / 2 - hw0)
    xs, ys = np.arange(w, dtype=np.float32) - cx, np.arange(h, dtype=np.float32)[:, None] - cy
    u, v = xs * ca + ys * sa, ys * ca - xs * sa
    hw = hw0 * (1 + rng.uniform(-0.12, 0.12) * u / (100 * ppm))
    t = np.clip(v / hw, -1, 1)
    arm_a = np.clip((hw - np.abs(v)) / max(1.0, 0.15 * ppm) + 0.5, 0, 1)
    # Light: lateral magnitude m at azimuth phi (arm frame); the cylinder sees only its v part.
    m, phi = rng.uniform(0.3, 0.65), rng.uniform(0, 2 * np.pi)
    lu, lv, lz = m * math.cos(phi), m * math.sin(phi), math.sqrt(1 - m * m)
    light = np.array([lu * ca - lv * sa, lu * sa + lv * ca, lz], np.float32)
    amb = rng.uniform(0.3, 0.45)
    nz = np.sqrt(1 - t * t)
    lum = (amb + (1 - amb) * np.clip(lv * t + lz * nz, 0, 1)) / (amb + (1 - amb) * lz)
    hz = (lz + 1) / math.hypot(lv, lz + 1)
    sheen = np.clip(t * lv / math.hypot(lv, lz + 1) + nz * hz, 0, 1) ** rng.uniform(8, 25)
    sheen *= rng.uniform(0, 0.08) * 255
    glob = (1 + rng.uniform(-0.1, 0.1) * (xs / w)) * (1 + rng.uniform(-0.1, 0.1) * (ys / h))
    lum *= glob * (1 + 0.035 * _noise(rng, h, w, 12 * ppm) + 0.025 * _noise(rng, h, w, 0.25 * ppm)
                   + 0.02 * np.minimum(_noise(rng, h, w, 0.3 * ppm, 2 * ppm), 0))
    # Sleeve over one end of the arm, well beyond the outer sites.
    sleeve_a = None
    if rng.random() < 0.4:
        side = float(rng.choice([-1.0, 1.0]))
        edge = (s_col + rng.uniform(24, 34)) * ppm + 3 * ppm * np.sin(v / hw0 * 2 + rng.uniform(0, 6))
        sleeve_a = np.clip((side * u - edge) / 2 + 0.5, 0, 1) * np.clip((1.3 * hw - np.abs(v)) / 2 + 0.5, 0, 1)
        if sleeve_a.mean() < 0.02:
            sleeve_a = None
    skin_ok = (arm_a >= 0.5) if sleeve_a is None else (arm_a >= 0.5) & (sleeve_a < 0.5)
    # Sites: two rows of three, one large reaction.
    big_i = int(rng.integers(6))
    u0, ery = rng.uniform(-3, 3) * ppm, np.zeros((h, w), np.float32)
    label, sites, wheals = np.zeros((h, w), np.uint8), [], []
    for i in range(6):
        su = u0 + ((i % 3) - 1) * s_col * ppm + rng.uniform(-2, 2) * ppm
        sv = (i // 3 - 0.5) * s_row * ppm + rng.uniform(-1.5, 1.5) * ppm
        sx, sy = cx + su * ca - sv * sa, cy + su * sa + sv * ca
        d_w = rng.uniform(8, 12) if i == big_i else rng.uniform(2, 4.5)
        d_f = min(d_w / math.sqrt(rng.uniform(0.04, 0.09)), 40.0)
        g, fx, fy = _flare(rng, sx, sy, d_f * ppm / 2, ppm, h, w)
        img_s, loc = _window(fx, fy, g.shape[0], h, w, g.shape[1])
        ery[img_s] = np.maximum(ery[img_s], rng.uniform(0.3, 0.95) * g[loc])
        wx, wy, truth, ind, pale, shade, spec = _wheal(rng, sx, sy, d_w * ppm / 2, i == big_i, light, ppm)
        w_img, w_loc = _window(wx, wy, truth.shape[0], h, w)
        # The site's own masks over its flare window (in the frame); non-skin is out.
        flare = (g[loc] >= 0.5) & skin_ok[img_s]
        wt = truth[w_loc] & skin_ok[w_img]
        wheal = np.zeros_like(flare)
        oy, ox = w_img[0].start - img_s[0].start, w_img[1].start - img_s[1].start
        wheal[oy:oy + wt.shape[0], ox:ox + wt.shape[1]] = wt
        label[img_s][flare] = 1
        wheals.append((w_img, w_loc, wt, ind, pale, shade, spec, sv, truth.shape[0] / 2 - 4))
        sites.append([sx, sy, 2 * math.sqrt(np.count_nonzero(wheal) / math.pi) / ppm,
                      2 * math.sqrt(np.count_nonzero(flare | wheal) / math.pi) / ppm])
    for w_img, w_loc, wt, ind, *_ in wheals:  # the wheal blanches the redness under it
        label[w_img][wt] = 2
        ery[w_img] *= 1 - rng.uniform(0.75, 0.95) * ind[w_loc]
    col = np.array(SKIN_RGB[fitz], np.float32) * rng.uniform(0.93, 1.05) * rng.uniform(0.97, 1.03, 3)
    red_k = np.array([0.04 + 0.2 * (fitz >= 4), 0.5, 0.42], np.float32)
    red = np.maximum(_noise(rng, h, w, 8 * ppm), 0) * (0.04 * vis) + vis * ery
    img = np.empty((3, h, w), np.float32)  # planar while painting: per-channel ops stay contiguous
    for c in range(3):
        img[c] = lum * col[c] * (1 - red * red_k[c]) + sheen
    pale_col = col + (255 - col) * 0.12 * np.array([1.0, 1.0, 0.8], np.float32) + 10 * (1 - vis)
    for w_img, w_loc, wt, ind, pale, shade, spec, *_ in wheals:
        pw, lw = pale[w_loc], lum[w_img]
        for c in range(3):
            sk = img[(c, *w_img)]
            img[(c, *w_img)] = (sk * (1 - pw) + lw * pale_col[c] * pw) * shade[w_loc] + 255 * spec[w_loc]
    # Freckles and naevi (away from the wheals), then puncture dots.
    brown = col * np.array([0.55, 0.42, 0.36], np.float32)
    n_spots = int(rng.poisson(25 if fitz <= 2 else 6)) + int(rng.integers(0, 4))
    for j in range(n_spots):
        naevus = j < 3 and rng.random() < 0.5
        bu, bv = rng.uniform(-0.5, 0.5) * w, rng.uniform(-0.85, 0.85) * hw0
        bx, by = cx + bu * ca - bv * sa, cy + bu * sa + bv * ca
        if any(math.hypot(bx - s[0], by - s[1]) < 8 * ppm for s in sites):
            continue
        rad = (rng.uniform(0.8, 2.0) if naevus else rng.uniform(0.3, 1.1)) * ppm
        win, d = _around(bx, by, 2 * rad, h, w)
        alpha = (np.clip((rad - d) / max(1.0, 0.2 * rad), 0, 1) * rng.uniform(0.6, 0.9) if naevus
                 else np.exp(-(d / rad) ** 2) * rng.uniform(0.15, 0.4))
        img[win] = img[win] * (1 - alpha) + (brown * (0.6 if naevus else 1.0))[:, None, None] * alpha
    for sx, sy, *_ in sites:
        rad = rng.uniform(0.2, 0.35) * ppm
        win, d = _around(sx, sy, rad + 2, h, w)
        alpha = np.clip(rad - d + 0.5, 0, 1) * 0.85
        img[win] = img[win] * (1 - alpha) + np.array([88, 36, 34], np.float32)[:, None, None] * alpha
    # Background with grain/folds and the arm's soft cast shadow, then the arm over it.
    kind = str(rng.choice(list(BACKGROUNDS)))
    bcol = np.array(BACKGROUNDS[kind][int(rng.integers(len(BACKGROUNDS[kind])))], np.float32)
    grain = _noise(rng, h, w, 0.6 * ppm, 20 * ppm) if kind == "table" else _noise(rng, h, w, 30 * ppm)
    shadow_d = np.maximum((-1.0 if lv > 0 else 1.0) * v - hw, 0)
    blum = glob * (1 + (0.05 if kind == "table" else 0.07) * grain) \
        * (1 - rng.uniform(0.2, 0.4) * np.exp(-shadow_d / (rng.uniform(3, 8) * ppm)))
    blum *= 1 - arm_a
    for c in range(3):
        img[c] = img[c] * arm_a + blum * bcol[c]
    # Hair (mostly along the arm, thinner than a pixel at low resolution) and pen numbers.
    hair_mask = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.choice([0, 0.003, 0.01]) * (w / ppm) * arm_mm)):
        hu, hv = rng.uniform(-0.5, 0.5) * w, rng.uniform(-0.95, 0.95) * hw0
        length, a0, bend = rng.uniform(4, 14) * ppm, ang + rng.normal(0, 0.35), rng.normal(0, 0.3)
        st = np.linspace(0, 1, 7)
        px = cx + hu * ca - hv * sa + length * st * np.cos(a0 + bend * st)
        py = cy + hu * sa + hv * ca + length * st * np.sin(a0 + bend * st)
        cv2.polylines(hair_mask, [np.stack([px, py], 1).astype(np.int32)], False, 255,
                      max(1, round(0.05 * ppm)), cv2.LINE_AA)
    hair_rgb = (150, 112, 70) if fitz <= 2 and rng.random() < 0.5 else (40, 32, 28)
    _ink(img, hair_mask, hair_rgb, min(0.85, 0.06 * ppm / max(1, round(0.05 * ppm))))
    pen = np.zeros((h, w), np.uint8)
    names = [str(k + 1) for k in range(6)] if rng.random() < 0.5 else ["H", "Dp", "Df", "Gr", "Ca", "Bi"]
    fscale, thick = 3.5 * ppm / 22, max(1, round(0.3 * ppm))
    for (sx, sy, *_), wh, name in zip(sites, wheals, names):
        (tw, th), _ = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, fscale, thick)
        dist = max(wh[8], 2 * ppm) + rng.uniform(2.5, 5) * ppm + 0.6 * max(tw, th)
        sgn = 1 if wh[7] > 0 else -1
        tx, ty = sx - sgn * sa * dist, sy + sgn * ca * dist
        cv2.putText(pen, name, (int(tx - tw / 2), int(ty + th / 2)), cv2.FONT_HERSHEY_SIMPLEX,
                    fscale, 255, thick, cv2.LINE_AA)
    _ink(img, pen, (30, 40, 105) if rng.random() < 0.6 else (25, 25, 30), rng.uniform(0.7, 0.9))
    if sleeve_a is not None:
        scol = np.array(SLEEVES[int(rng.integers(len(SLEEVES)))], np.float32)
        slum = glob * (0.55 + 0.45 * np.sqrt(np.clip(1 - (v / (1.3 * hw)) ** 2, 0, 1))) \
            * (1 + 0.06 * _noise(rng, h, w, 0.5 * ppm) + 0.08 * _noise(rng, h, w, 10 * ppm))
        slum *= sleeve_a
        for c in range(3):
            img[c] = img[c] * (1 - sleeve_a) + slum * scol[c]
    # Camera: white balance, exposure, vignetting, blur, sensor noise, JPEG.
    k_v = rng.uniform(0, 0.5)
    vig_x = np.exp(-k_v * ((np.arange(w) - w / 2) / (w / 2)) ** 2).astype(np.float32)
    vig_y = np.exp(-k_v * ((np.arange(h) - h / 2) / (w / 2)) ** 2).astype(np.float32)
    gains = np.array([rng.uniform(0.92, 1.08), 1.0, rng.uniform(0.9, 1.1)]) * rng.uniform(0.9, 1.08)
    vig = vig_y[:, None] * vig_x[None, :]
    sigma, noise = rng.uniform(0.4, 1.1) * (1 + min(h, w) / 3000), rng.uniform(1.5, 4.5)
    planes = []
    for c in range(3):
        plane = cv2.GaussianBlur(img[c] * vig * float(gains[c]), (0, 0), sigma)
        plane += rng.standard_normal((h, w), dtype=np.float32) * noise + 0.5
        planes.append(np.clip(plane, 0, 255, out=plane).astype(np.uint8))
    img = cv2.merge(planes)
    if portrait:  # a photograph taken the other way round: turn 90 degrees clockwise
        img, label = cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE), cv2.rotate(label, cv2.ROTATE_90_CLOCKWISE)
        sites = [[h - 1 - s[1], s[0], s[2], s[3]] for s in sites]
    _, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 96))])
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
    return PaintedArm(img, label, float(ppm), fitz, [tuple(float(a) for a in s) for s in sites],
                      kind + ("+sleeve" if sleeve_a is not None else ""), {"large_site": big_i})


def _tile(rgb: np.ndarray, label: np.ndarray, box: tuple[int, int, int, int] | None, height: int):
    """(photograph, photograph with truth outlines) resized to `height`, optionally cropped."""
    if box is not None:
        x0, y0, x1, y1 = box
        rgb, label = rgb[y0:y1, x0:x1], label[y0:y1, x0:x1]
    size = (max(1, round(rgb.shape[1] * height / rgb.shape[0])), height)
    photo = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    lab = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    over = photo.copy()
    for value, colour in ((1, (0, 255, 0)), (2, (255, 255, 0))):
        cs, _ = cv2.findContours((lab >= value).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(over, cs, -1, colour, 1)
    return photo, over


def main() -> int:
    """Paint a few photographs and write a contact sheet: photo | truth | zoom on the large site."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = [(384, 512), (768, 1024), (3000, 4000), (1024, 768), (1200, 1600), (1536, 2048)]
    rows = []
    for i in range(args.count):
        t0 = time.perf_counter()
        arm = paint_arm(args.seed, i, sizes[i % len(sizes)], fitzpatrick=i % 6 + 1)
        dt = time.perf_counter() - t0
        x, y, wmm, fmm = arm.sites[arm.meta["large_site"]]
        r = int((fmm / 2 + 6) * arm.px_per_mm)
        hh, ww = arm.label.shape
        box = (max(0, int(x) - r), max(0, int(y) - r), min(ww, int(x) + r), min(hh, int(y) + r))
        row = np.hstack([*_tile(arm.image, arm.label, None, 300), *_tile(arm.image, arm.label, box, 300)])
        rows.append(row)
        print(f"{i}: {ww}x{hh} Fitzpatrick {arm.fitzpatrick} {arm.background} {arm.px_per_mm:.1f} px/mm "
              f"{dt:.2f} s; sites (wheal/flare mm): " + ", ".join(f"{s[2]:.1f}/{s[3]:.1f}" for s in arm.sites))
    width = max(r.shape[1] for r in rows)
    sheet = np.vstack([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows])
    path = args.out / f"prick_foreign_sheet_seed{args.seed}.png"
    cv2.imwrite(str(path), sheet[..., ::-1])
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
