"""Synthetic skin prick test photographs of a forearm panel, with exact truth per site.

Built to look like real tests (issue 13): a panel of prick sites on a rows x columns grid
(hand-placed: ~1.5 mm jitter) with a known spacing (20-35 mm) on the volar forearm,
sometimes a table / sleeve beside the arm; every site has its puncture mark and usually a
pen number or control code ("H", "NC") written beside it. Each site is negative (puncture
only) or reacts: a pale raised wheal 0-15 mm (sometimes with pseudopods) inside an
erythema flare from none at all to 40 mm; the wheal is typically 4-9 % of the flare's
area, small and large reactions share an arm, large flares of neighbours merge. Skin
types I-VI (erythema contrast falls with pigmentation), freckles, naevi, hair, lighting,
photographs from 512 px to 12 MP and oblique views (a perspective warp).

Truth: label map (0 background, 1 erythema outside the wheal, 2 wheal), a site-mark map
(a 1.2 mm disc at every puncture: the grid fitting's evidence), and per site the mean
diameters and areas in mm / mm2 measured on its own drawn masks before any overlap (the
clinical numbers), the grid position and ``px_per_mm`` of the frontal view. Seeded by
``(seed, index)``: same arguments, same sample.
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
SITE_MARK_MM = 1.2  # radius of the site-mark disc in the site map


@dataclass
class PrickSite:
    center_xy: tuple[float, float]  # in the photograph (after any oblique warp)
    positive: bool  # any reaction drawn (wheal or flare)
    wheal_mm: float = 0.0  # mean diameter of the drawn wheal (0 = none)
    erythema_mm: float = 0.0  # mean diameter of the whole reaction (flare incl. wheal; 0 = none)
    label: str = ""
    row: int = -1  # grid position (-1: a reaction outside the grid)
    col: int = -1
    wheal_area_mm2: float = 0.0
    erythema_area_mm2: float = 0.0


@dataclass
class PrickSample:
    image: np.ndarray  # uint8 (H, W, 3) RGB
    label: np.ndarray  # uint8 (H, W): 0/1/2
    px_per_mm: float  # of the frontal view (exact unless ``oblique``)
    fitzpatrick: int
    sites: list[PrickSite] = field(default_factory=list)
    covered_rows: tuple[int, int] = (0, 0)  # rows [start, stop) hidden by a background strip
    site_mask: np.ndarray | None = None  # uint8 (H, W): 1 within SITE_MARK_MM of a puncture
    rows: int = 1
    cols: int = 1
    spacing_mm: float = 0.0
    oblique: bool = False
    extra: list[PrickSite] = field(default_factory=list)  # reactions outside the grid
    background: str = "none"  # what shows beside the arm: "none", or a "light" / "mid-tone" / "dark" surface

    @property
    def positive_sites(self) -> int:
        return sum(s.positive for s in self.sites)


def _surface_kind(rgb) -> str:
    """A surface beside the arm by its luma: a light sheet or wall, a mid-tone (skin-like
    lightness), or a dark sleeve; evaluation breaks results down by it."""
    r, g, b = (float(c) for c in rgb)
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    return "light" if luma >= 170 else ("dark" if luma < 80 else "mid-tone")


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


def _fill(shape: tuple[int, int], polygon: np.ndarray, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    pts = np.round((polygon - np.array(offset, np.float64)) * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def draw_reaction_sizes(rng: np.random.Generator, kind: str) -> tuple[float, float]:
    """(wheal mean diameter, flare mean diameter) in mm for a site of ``kind``.

    Kinds: "negative" (0, 0), "histamine" (wheal 3-8 mm, large flare), "small" (wheal
    1-3 mm), "positive" (wheal 2-15 mm), "wheal_only" (no flare), "flare_only". The flare
    holds the wheal with the wheal 4-9 % of its area typically (some 2-40 %), at most 40 mm.
    """
    if kind == "negative":
        return 0.0, 0.0
    if kind == "flare_only":
        return 0.0, float(rng.uniform(4, 20))
    wheal = {"histamine": (3.0, 8.0), "small": (1.0, 3.0), "positive": (2.0, 15.0),
             "wheal_only": (1.5, 8.0)}[kind]
    w = float(rng.uniform(*wheal))
    if kind == "wheal_only":
        return w, 0.0
    ratio = rng.uniform(0.04, 0.09) if rng.random() < 0.7 else rng.uniform(0.02, 0.4)
    f = w / np.sqrt(ratio)
    f = float(np.clip(f, w + 1.5, 40.0))
    return w, f


def _site_kinds(rng: np.random.Generator, n: int, negative_fraction: float, positive_control: bool) -> list[str]:
    kinds = []
    for i in range(n):
        if i == 0:
            kinds.append("histamine" if positive_control else "negative")
        elif i == 1 and n > 2:
            kinds.append("negative" if rng.random() < 0.9 else "small")  # saline
        elif rng.random() < negative_fraction:
            kinds.append("negative")
        else:
            kinds.append(str(rng.choice(["positive", "positive", "small", "wheal_only", "flare_only"],
                                        p=[0.45, 0.2, 0.2, 0.08, 0.07])))
    return kinds


def _hair(rng: np.random.Generator, img: np.ndarray, px_per_mm: float, axis_angle: float, density: float) -> None:
    h, w = img.shape[:2]
    n = int(density * h * w / (px_per_mm * px_per_mm) / 400)
    colour = np.array([40, 30, 25], np.float32) * rng.uniform(0.6, 1.4)
    thick = max(1, int(round(0.06 * px_per_mm)))
    for _ in range(n):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        length = rng.uniform(4, 14) * px_per_mm
        a = axis_angle + rng.normal(0, 0.35)
        bend = rng.normal(0, 0.2)
        pts = []
        for t in np.linspace(0, 1, 8):
            aa = a + bend * t
            pts.append((x + np.cos(aa) * length * t, y + np.sin(aa) * length * t))
        cv2.polylines(img, [np.round(np.array(pts) * 4).astype(np.int32)], False,
                      tuple(float(c) for c in colour), thick, cv2.LINE_AA, shift=2)


def _pen_marks(rng: np.random.Generator, img: np.ndarray, sites: list[PrickSite], px_per_mm: float,
               spacing_mm: float) -> None:
    """Numbers / control codes written beside the sites (distractors), sometimes a dot or tick."""
    ink = [(30, 40, 140), (25, 25, 30), (20, 90, 40), (110, 30, 120)][int(rng.integers(0, 4))]
    scale = max(0.3, 0.13 * px_per_mm * rng.uniform(0.8, 1.3))
    thickness = max(1, int(round(0.3 * px_per_mm)))
    side = int(rng.integers(0, 3))  # a clinic writes all numbers on the same side
    for site in sites:
        x, y = site.center_xy
        reach = 0.35 * spacing_mm * px_per_mm
        if rng.random() < 0.85:
            text = site.label
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
            if side == 0:
                org = (int(x - tw / 2), int(y - reach))
            elif side == 1:
                org = (int(x - tw / 2), int(y + reach + th))
            else:
                org = (int(x + reach), int(y + th / 2))
            cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness, cv2.LINE_AA)
        if rng.random() < 0.3:  # a tick marking the site
            a = rng.uniform(0, 2 * np.pi)
            p0 = (int(x + np.cos(a) * reach), int(y + np.sin(a) * reach))
            p1 = (int(x + np.cos(a) * (reach + 3 * px_per_mm)), int(y + np.sin(a) * (reach + 3 * px_per_mm)))
            cv2.line(img, p0, p1, ink, thickness, cv2.LINE_AA)


def _measure_mm(mask: np.ndarray, px_per_mm: float) -> tuple[float, float]:
    from .measure import diameters

    if not mask.any():
        return 0.0, 0.0
    return diameters(mask).mean / px_per_mm, float(np.count_nonzero(mask)) / px_per_mm**2


def generate_sample(seed: int, index: int, size: tuple[int, int] = (512, 512),
                    n_sites: int | None = None, negative_fraction: float = 0.35,
                    fitzpatrick: int | None = None, positive_control: bool = True,
                    grid: tuple[int, int] | None = None, spacing_mm: float | None = None,
                    reactions: dict[int, tuple[float, float]] | None = None,
                    extra: list[tuple[float, float, float, float]] = (),
                    oblique: bool | None = None, hair: float | None = None,
                    px_per_mm: float | None = None, labels: list[str] | None = None) -> PrickSample:
    """One synthetic panel photograph ``size`` = (height, width) and its exact truth.

    Sites are numbered in reading order of the grid (row by row); site 0 is the histamine
    control ("H", reacting unless ``positive_control`` is False), site 1 the saline
    control ("NC", negative in 90 %). ``reactions`` forces (wheal, flare) mean diameters
    in mm for site indices; ``extra`` adds reactions outside the grid as (x, y offset in mm
    from the grid's last site, wheal mm, flare mm).
    """
    rng = sample_rng(seed, index)
    h, w = size
    fitz = int(fitzpatrick or rng.integers(1, 7))
    if grid is None:
        n = int(n_sites or rng.integers(2, 13))
        rows = 1 if n <= 3 else (2 if n <= 10 or rng.random() < 0.5 else 3)
        cols = int(np.ceil(n / rows))
    else:
        rows, cols = grid
        n = n_sites or rows * cols
    spacing = float(spacing_mm or rng.uniform(20, 35))
    extent_x = (cols - 1) * spacing
    extent_y = (rows - 1) * spacing
    if px_per_mm is None:
        fov = max(extent_x + rng.uniform(30, 70), (extent_y + rng.uniform(30, 60)) * w / h, 60.0)
        px_per_mm = w / fov
    ppm = float(px_per_mm)

    # --- skin and arm ------------------------------------------------------------------
    base = np.array(FITZPATRICK_RGB[fitz], np.float32) * rng.uniform(0.92, 1.06, 3).astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    img *= (1 + 0.035 * _smooth_noise(rng, h, w, 12 * ppm) + 0.02 * _smooth_noise(rng, h, w, 1.2 * ppm))[..., None]
    flush = np.clip(_smooth_noise(rng, h, w, 25 * ppm), 0, None) * rng.uniform(0, 0.05)
    img[..., 1] *= 1 - flush
    img[..., 2] *= 1 - 0.8 * flush
    angle = float(rng.normal(0, 0.12))  # the arm's (and the grid's) axis
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ca, sa = np.cos(angle), np.sin(angle)
    cx0, cy0 = w / 2 + rng.normal(0, 0.03 * w), h / 2 + rng.normal(0, 0.03 * h)
    across = (-(xx - cx0) * sa + (yy - cy0) * ca) / ppm  # mm across the arm
    arm_half = max(extent_y / 2 + rng.uniform(18, 35), 30.0)
    v = np.clip(across / arm_half, -1, 1)
    img *= (1 - rng.uniform(0.1, 0.3) * v**2)[..., None]
    a = rng.uniform(0, 2 * np.pi)
    img *= (1 + rng.uniform(0.05, 0.3) * (np.cos(a) * (xx / w - 0.5) + np.sin(a) * (yy / h - 0.5)))[..., None]
    del yy, xx

    # --- freckles, naevi (before reactions: a wheal blanches a freckle only a little) ----
    freckles = int(rng.integers(0, 4) * (3 if fitz <= 3 else 1) * rng.integers(0, 12))
    for _ in range(freckles):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = max(1, int(rng.uniform(0.3, 1.2) * ppm))
        cv2.circle(img, (int(x), int(y)), r, tuple(float(c) for c in base * rng.uniform(0.7, 0.88)), -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 4))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        cv2.circle(img, (int(x), int(y)), max(1, int(rng.uniform(0.8, 2.5) * ppm)),
                   tuple(float(c) for c in base * rng.uniform(0.4, 0.65)), -1, cv2.LINE_AA)

    # --- the panel grid ------------------------------------------------------------------
    gx = (np.arange(cols) - (cols - 1) / 2) * spacing
    gy = (np.arange(rows) - (rows - 1) / 2) * spacing
    centers, rc = [], []
    for r_ in range(rows):
        for c_ in range(cols):
            if len(centers) >= n:
                break
            dx, dy = gx[c_] + rng.normal(0, 1.5), gy[r_] + rng.normal(0, 1.5)
            centers.append((cx0 + (dx * ca - dy * sa) * ppm, cy0 + (dx * sa + dy * ca) * ppm))
            rc.append((r_, c_))
    kinds = _site_kinds(rng, len(centers), negative_fraction, positive_control)
    names = list(labels) if labels else ["H", "NC"] + [str(i) for i in range(1, 40)]
    sizes = [draw_reaction_sizes(rng, k) for k in kinds]
    for k, v_ in (reactions or {}).items():
        sizes[k] = v_
    sites = [PrickSite(centers[i], positive=sizes[i] != (0.0, 0.0), label=names[i], row=rc[i][0], col=rc[i][1])
             for i in range(len(centers))]
    extras = []
    if extra:
        lx, ly = centers[-1]
        for dx, dy, wm, fm in extra:
            p = (lx + (dx * ca - dy * sa) * ppm, ly + (dx * sa + dy * ca) * ppm)
            extras.append(PrickSite(p, positive=True, label="", row=-1, col=-1))
            sizes.append((wm, fm))

    label = np.zeros((h, w), np.uint8)
    red = np.zeros((h, w), np.float32)
    wheal_alpha = np.zeros((h, w), np.float32)
    tone = 1.0 - 0.11 * (fitz - 1)  # erythema is hard to see on dark skin
    for site, (wheal_mm, flare_mm) in zip(sites + extras, sizes):
        if wheal_mm <= 0 and flare_mm <= 0:
            continue
        cx, cy = site.center_xy
        R = int(max(wheal_mm, flare_mm) * ppm) + int(4 * ppm) + 4
        x0, y0 = max(0, int(cx) - R), max(0, int(cy) - R)
        x1, y1 = min(w, int(cx) + R + 1), min(h, int(cy) + R + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        roi = (y1 - y0, x1 - x0)
        er = np.zeros(roi, bool)
        if flare_mm > 0:
            er = _fill(roi, _blob_polygon(rng, cx, cy, flare_mm / 2 * ppm, rng.uniform(0.1, 0.45),
                                          rng.uniform(1, 1.2)), (x0, y0))
        wh = np.zeros(roi, bool)
        if wheal_mm > 0:
            ox, oy = rng.normal(0, 0.05 * max(flare_mm - wheal_mm, 0) * ppm, 2)
            if rng.random() < 0.25 and wheal_mm >= 4:
                poly = _pseudopod_polygon(rng, cx + ox, cy + oy, wheal_mm / 2.5 * ppm)
            else:
                poly = _blob_polygon(rng, cx + ox, cy + oy, wheal_mm / 2 * ppm, rng.uniform(0.05, 0.3),
                                     rng.uniform(1, 1.15))
            wh = _fill(roi, poly, (x0, y0))
            if not wh.any():  # below one pixel: keep the centre pixel
                wh[int(np.clip(cy - y0, 0, roi[0] - 1)), int(np.clip(cx - x0, 0, roi[1] - 1))] = True
            if flare_mm > 0:
                k = 2 * max(1, int(round(0.5 * ppm))) + 1
                wh &= cv2.erode(er.view(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
        whole = er | wh
        site.wheal_mm, site.wheal_area_mm2 = _measure_mm(wh, ppm)
        site.erythema_mm, site.erythema_area_mm2 = _measure_mm(whole, ppm)
        site.positive = bool(whole.any())
        lab = label[y0:y1, x0:x1]
        lab[er & (lab == 0)] = ERYTHEMA_HALO
        lab[wh] = WHEAL
        if er.any():
            strength = rng.uniform(0.3, 1.0)
            sigma = max(0.7, rng.uniform(0.06, 0.14) * flare_mm / 2 * ppm)
            blurred = cv2.GaussianBlur(er.astype(np.float32), (0, 0), sigma)
            red[y0:y1, x0:x1] = np.maximum(red[y0:y1, x0:x1], strength * np.clip(blurred * 1.1, 0, 1))
        wa = cv2.GaussianBlur(wh.astype(np.float32), (0, 0), max(0.6, 0.25 * ppm))
        wheal_alpha[y0:y1, x0:x1] = np.maximum(wheal_alpha[y0:y1, x0:x1], wa)

    img[..., 0] *= 1 + 0.06 * red * tone
    img[..., 1] *= 1 - 0.32 * red * tone
    img[..., 2] *= 1 - 0.26 * red * tone
    pale = np.array([1.05, 1.12, 1.10], np.float32) * (1 + 0.03 * (fitz - 1))
    img *= 1 + wheal_alpha[..., None] * (pale - 1)
    gyy, gxx = np.gradient(cv2.GaussianBlur(wheal_alpha, (0, 0), max(0.8, 0.4 * ppm)))
    light = np.array([np.cos(a + np.pi), np.sin(a + np.pi)], np.float32)
    shade = (gxx * light[0] + gyy * light[1]) * ppm * rng.uniform(3, 7)
    img *= (1 + np.clip(shade, -0.15, 0.15))[..., None]
    del gyy, gxx, shade, red
    site_mask = np.zeros((h, w), np.uint8)
    for site in sites + extras:
        cx, cy = site.center_xy
        if site.wheal_mm > 1.5:  # specular highlight on the wheal's dome
            r = max(1, int(site.wheal_mm * ppm * 0.12))
            off = site.wheal_mm * ppm * 0.15
            hx, hy = int(cx - off * light[0]), int(cy - off * light[1])
            R = 4 * r + 4
            ys0, xs0 = max(0, hy - R), max(0, hx - R)
            ys1, xs1 = min(h, hy + R), min(w, hx + R)
            if ys1 > ys0 and xs1 > xs0:
                hl = np.zeros((ys1 - ys0, xs1 - xs0), np.float32)
                cv2.circle(hl, (hx - xs0, hy - ys0), r, 1.0, -1)
                hl = cv2.GaussianBlur(hl, (0, 0), max(0.6, r * 0.7)) * rng.uniform(0.1, 0.3)
                patch = img[ys0:ys1, xs0:xs1]
                patch += hl[..., None] * (255 - patch) * 0.9
        if site.row >= 0:  # the puncture: a tiny dark-red dot (negative sites show only this)
            r_px = max(0.6, 0.3 * ppm)
            cv2.circle(img, (int(round(cx)), int(round(cy))), int(np.ceil(r_px)),
                       tuple(float(c) for c in np.array([120, 45, 45]) * rng.uniform(0.7, 1.1)), -1, cv2.LINE_AA)
            cv2.circle(site_mask, (int(round(cx)), int(round(cy))), max(1, int(round(SITE_MARK_MM * ppm))), 1, -1)

    if hair is None:
        hair = float(rng.choice([0.0, 0.3, 1.0, 2.5], p=[0.3, 0.3, 0.25, 0.15]))
    if hair > 0:
        _hair(rng, img, ppm, angle, hair)
    out = np.clip(img, 0, 255).astype(np.uint8)
    del img
    _pen_marks(rng, out, sites, ppm, spacing)

    # Background beside the arm (table, sleeve) where the arm ends.
    covered = (0, 0)
    background = "none"
    edge = np.abs(across) > arm_half
    if edge.any():
        colour = rng.integers(20, 235, 3).astype(np.uint8)
        background = _surface_kind(colour)
        out[edge] = colour
        label[edge] = 0
        site_mask[edge] = 0
    del across, edge

    is_oblique = bool(rng.random() < 0.3) if oblique is None else bool(oblique)
    if is_oblique:  # a camera tilted up to ~25 deg: a perspective warp of everything
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        d = rng.uniform(0, 0.09, (4, 2)) * np.array([w, h])
        sign = np.float32([[1, 1], [-1, 1], [-1, -1], [1, -1]])
        Hm = cv2.getPerspectiveTransform(src, (src + sign * d).astype(np.float32))
        border = tuple(int(c) for c in rng.integers(20, 235, 3))
        if background == "none":  # the warp's border is what shows beside the arm
            background = _surface_kind(border)
        out = cv2.warpPerspective(out, Hm, (w, h), flags=cv2.INTER_LINEAR, borderValue=border)
        label = cv2.warpPerspective(label, Hm, (w, h), flags=cv2.INTER_NEAREST)
        site_mask = cv2.warpPerspective(site_mask, Hm, (w, h), flags=cv2.INTER_NEAREST)
        for site in sites + extras:
            p = cv2.perspectiveTransform(np.float32([[site.center_xy]]), Hm)[0, 0]
            site.center_xy = (float(p[0]), float(p[1]))
    noise = rng.normal(0, rng.uniform(1, 4), (h, w, 1)).astype(np.float32)  # luminance noise
    out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.0))
    return PrickSample(image=out, label=label, px_per_mm=ppm, fitzpatrick=fitz, sites=sites,
                       covered_rows=covered, site_mask=site_mask, rows=rows, cols=cols, spacing_mm=spacing,
                       oblique=is_oblique, extra=extras, background=background)
