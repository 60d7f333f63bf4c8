"""Synthetic facial-vitiligo training pairs, and vitiligo painted onto real photographs.

No licensed photographs with masks are reachable here (DESIGN.md "Data"), so the lesion
network learns from images this module renders. What matters for transfer, and what the
paper reports as failure modes, is modelled explicitly:

* skin of Fitzpatrick types I-VI with melanin/redness mottling, pores, freckles and naevi;
* lighting gradients, face-shaped shading and **specular highlights (never labelled)**;
* hair strands, eyebrows and stubble crossing the skin;
* depigmented patches (amelanotic: lighter, pinker-white, texture kept) with irregular
  borders whose softness varies along the outline, some with perifollicular
  repigmentation dots;
* a visible-light and a UV (Wood's lamp) rendering: skin dark violet-blue, vitiligo
  bright blue-white, highlights still present;
* the app's input domain: a face-ROI crop with everything outside the face-skin mask 0.

The ground-truth lesion mask is always ``blend_weight >= 0.5`` inside the skin mask.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import cv2
import numpy as np

# Approximate sRGB of unexposed skin per Fitzpatrick type (index 1..6).
FITZPATRICK_RGB = np.array([
    [0, 0, 0],
    [243, 216, 198],
    [229, 188, 160],
    [207, 158, 122],
    [170, 120, 85],
    [120, 80, 55],
    [76, 50, 36],
], dtype=np.float32)
# Amelanotic (vitiligo) skin: almost white with a pink hue from the dermal blood.
AMELANOTIC_RGB = np.array([252, 236, 228], dtype=np.float32)
UV_SKIN_RGB = np.array([70, 58, 128], dtype=np.float32)  # Wood's lamp, fair skin
UV_VITILIGO_RGB = np.array([185, 205, 255], dtype=np.float32)  # bright blue-white
HAIR_COLOURS = np.array([[20, 15, 12], [45, 30, 20], [90, 60, 35], [150, 115, 70],
                         [170, 165, 160], [60, 40, 30]], dtype=np.float32)


@dataclass
class SyntheticSample:
    """One ROI-shaped sample in the app's input form (zero outside ``skin_mask``)."""

    image: np.ndarray  # uint8 (H, W, 3) RGB
    lesion_mask: np.ndarray  # bool (H, W), subset of skin_mask
    skin_mask: np.ndarray  # bool (H, W)
    uv: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- noise
def smooth_noise(shape: tuple[int, int], rng: np.random.Generator, cell_px: float) -> np.ndarray:
    """Zero-mean, unit-std noise with features of about ``cell_px`` pixels (cheap: low-res
    Gaussian noise upsampled bicubically)."""
    h, w = shape
    gh, gw = max(2, int(round(h / cell_px)) + 2), max(2, int(round(w / cell_px)) + 2)
    small = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    big -= big.mean()
    std = big.std()
    return big / std if std > 1e-6 else big


def _unit_noise(shape: tuple[int, int], rng: np.random.Generator, cell_px: float) -> np.ndarray:
    """Smooth noise squashed to [0, 1]."""
    return 1.0 / (1.0 + np.exp(-1.5 * smooth_noise(shape, rng, cell_px)))


# --------------------------------------------------------------------------- lesions
def depigmentation_weight(region_mask: np.ndarray, rng: np.random.Generator,
                          n_patches: int | None = None,
                          size_range: tuple[float, float] = (0.05, 0.22),
                          border_range: tuple[float, float] = (0.02, 0.35),
                          repigmentation_prob: float = 0.35) -> np.ndarray:
    """Blend weight in [0, 1] of irregular depigmented patches inside ``region_mask``.

    Each patch is a union of 1-3 jittered ellipses whose outline is warped by smooth noise;
    the weight ramps linearly across the outline over a border width that itself varies
    along the outline (sharp in places, blurred in others), so ``weight >= 0.5`` is exactly
    the warped outline. Sizes are relative to sqrt(region area): the same call works on a
    384-px sample and on a 1500-px face ROI.
    """
    h, w = region_mask.shape
    weight = np.zeros((h, w), np.float32)
    ys, xs = np.nonzero(region_mask)
    if ys.size == 0:
        return weight
    scale = float(np.sqrt(ys.size))
    if n_patches is None:
        n_patches = int(rng.choice([1, 1, 2, 2, 3, 3, 4, 5, 6]))
    for _ in range(n_patches):
        i = rng.integers(ys.size)
        cy, cx = float(ys[i]), float(xs[i])
        radius = scale * rng.uniform(*size_range)
        r_int = int(radius * 2.2) + 4
        y0, y1 = max(0, int(cy) - r_int), min(h, int(cy) + r_int + 1)
        x0, x1 = max(0, int(cx) - r_int), min(w, int(cx) + r_int + 1)
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        field_ = np.full(yy.shape, -1e3, np.float32)  # signed "inside-ness" in radius units
        for _lobe in range(int(rng.integers(1, 4))):
            ly = cy + rng.normal(0, 0.35) * radius
            lx = cx + rng.normal(0, 0.35) * radius
            a = radius * rng.uniform(0.5, 1.0)
            b = a * rng.uniform(0.45, 1.0)
            th = rng.uniform(0, np.pi)
            dy, dx = yy - ly, xx - lx
            u = (dx * np.cos(th) + dy * np.sin(th)) / a
            v = (-dx * np.sin(th) + dy * np.cos(th)) / b
            field_ = np.maximum(field_, 1.0 - np.sqrt(u * u + v * v))
        shp = yy.shape
        warp = 0.30 * smooth_noise(shp, rng, max(3.0, radius * 0.45)) \
            + 0.10 * smooth_noise(shp, rng, max(2.0, radius * 0.12))
        signed_px = (field_ + warp) * radius  # > 0 inside the outline
        border = radius * (border_range[0] + (border_range[1] - border_range[0])
                           * _unit_noise(shp, rng, max(3.0, radius * 0.6)))
        border = np.maximum(border, 1.0)
        patch = np.clip(0.5 + signed_px / border, 0.0, 1.0)
        if rng.random() < repigmentation_prob:
            patch = _add_repigmentation_dots(patch, rng, radius)
        weight[y0:y1, x0:x1] = np.maximum(weight[y0:y1, x0:x1], patch)
    weight *= region_mask
    return weight


def _add_repigmentation_dots(patch: np.ndarray, rng: np.random.Generator, radius: float) -> np.ndarray:
    """Perifollicular repigmentation: small pigmented islands inside the patch. Their
    weight stays >= 0.55 so the patch is still labelled vitiligo as a whole (the way
    dermatologists outline it)."""
    inside = np.argwhere(patch > 0.9)
    if inside.size == 0:
        return patch
    dots = np.zeros_like(patch)
    n = int(rng.integers(5, 25))
    dot_r = max(1, int(round(radius * 0.04)))
    for idx in rng.integers(0, len(inside), n):
        y, x = inside[idx]
        cv2.circle(dots, (int(x), int(y)), int(dot_r + rng.integers(0, 2)), 1.0, -1)
    dots = cv2.GaussianBlur(dots, (0, 0), max(0.6, dot_r * 0.6))
    return np.where(patch > 0.5, np.maximum(patch - 0.4 * dots, 0.55 * (patch > 0.5)), patch)


def paint_depigmentation(image_rgb: np.ndarray, region_mask: np.ndarray, rng: np.random.Generator,
                         n_patches: int | None = None, strength: float | None = None,
                         weight: np.ndarray | None = None, uv: bool = False,
                         size_range: tuple[float, float] = (0.05, 0.22),
                         target_rgb: np.ndarray | None = None, exposure: float | None = None,
                         label_weight: np.ndarray | None = None,
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Paint vitiligo-like depigmented patches onto a real (or synthetic) photograph.

    The melanin is removed, not the skin: each pixel is moved towards amelanotic
    pinkish-white skin (or, with ``uv=True``, Wood's-lamp blue-white) while its local
    shading (low-pass luminance) and texture (high-pass ratio) are kept, so pores,
    lighting and highlights survive inside the patch. Borders are irregular and partly
    blurred. Returns ``(new_image uint8, lesion_mask bool)`` where the mask is
    ``blend weight >= 0.5`` inside ``region_mask`` — the ground truth for F-Vitiligo.
    Pixels far from the patches are returned unchanged.

    ``target_rgb`` / ``exposure`` fix the lesion colour and the photograph's exposure
    (default: the first painter's choice, which dimmed lesions on dark skin);
    ``label_weight`` (default ``weight``) defines the truth when they differ, e.g. when
    perifollicular repigmentation dots recolour part of a lesion that is still outlined.
    """
    img = np.asarray(image_rgb)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError("image_rgb must be uint8 (H, W, 3)")
    region = np.asarray(region_mask, dtype=bool)
    if region.shape != img.shape[:2]:
        raise ValueError("region_mask must match the image size")
    if weight is None:
        weight = depigmentation_weight(region, rng, n_patches=n_patches, size_range=size_range)
    weight = weight.astype(np.float32) * region
    lesion = ((weight if label_weight is None else label_weight) >= 0.5) & region
    touched = weight > 0
    if not touched.any():
        return img.copy(), lesion
    # Work only on the bounding box of the patches: fast on 4000-px photographs.
    ys, xs = np.nonzero(touched)
    scale = float(np.sqrt(max(1, np.count_nonzero(region))))
    pad = int(scale * 0.06) + 3
    y0, y1 = max(0, ys.min() - pad), min(img.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(img.shape[1], xs.max() + pad + 1)
    sub = img[y0:y1, x0:x1].astype(np.float32)
    reg = region[y0:y1, x0:x1].astype(np.float32)
    wsub = weight[y0:y1, x0:x1]
    # Local shading from skin pixels only (normalised convolution), so eyes and hair
    # outside the region do not bleed into the estimate.
    sigma = max(1.5, scale * 0.03)
    lum = sub.mean(axis=2)
    num = cv2.GaussianBlur(lum * reg, (0, 0), sigma)
    den = cv2.GaussianBlur(reg, (0, 0), sigma) + 1e-3
    local = num / den
    ref = float(np.median(lum[reg > 0])) if (reg > 0).any() else float(lum.mean())
    ref = max(ref, 1.0)
    shading = np.clip(local / ref, 0.35, 1.6)
    texture = np.clip(lum / np.maximum(local, 1.0), 0.6, 1.5)  # pores, fine detail
    s = float(rng.uniform(0.8, 1.0)) if strength is None else float(strength)
    if target_rgb is None:
        if uv:
            target_rgb = UV_VITILIGO_RGB * rng.uniform(0.85, 1.05)
        else:
            target_rgb = AMELANOTIC_RGB + rng.normal(0, 4, 3).astype(np.float32)
    target_rgb = np.asarray(target_rgb, np.float32)
    # Keep the photo's brightness level: a dim photo gives a dimmer (still lighter) patch.
    if exposure is None:
        exposure = np.clip(ref / 185.0, 0.55, 1.15) if not uv else np.clip(ref / 80.0, 0.5, 1.2)
    target_rgb = np.clip(target_rgb * (0.55 + 0.45 * exposure), 0, 255)
    target = target_rgb[None, None, :] * (shading * texture)[..., None]
    depig = sub + s * (np.maximum(target, sub) - sub)  # never darker than before
    out_sub = sub + wsub[..., None] * (depig - sub)
    out = img.copy()
    out[y0:y1, x0:x1] = np.clip(out_sub + 0.5, 0, 255).astype(np.uint8)
    return out, lesion


# --------------------------------------------------------------------------- face shape
@dataclass
class FaceLayout:
    """Face geometry in ROI pixels (what the skin mask excludes)."""

    skin_mask: np.ndarray
    oval: np.ndarray  # (N, 2) int polygon
    eyes: list[tuple[tuple[int, int], tuple[int, int], float]]
    brows: list[tuple[tuple[int, int], tuple[int, int], float]]
    mouth: tuple[tuple[int, int], tuple[int, int], float]
    center: tuple[float, float]
    axes: tuple[float, float]


def face_layout(h: int, w: int, rng: np.random.Generator) -> FaceLayout:
    """A face-oval skin region minus eyes, brows and lips (FaceMesh-style), with random
    yaw (feature shift, one side narrower), roll and proportions."""
    cx = w * (0.5 + rng.uniform(-0.04, 0.04))
    cy = h * (0.5 + rng.uniform(-0.03, 0.05))
    ax = w * rng.uniform(0.38, 0.47)
    ay = h * rng.uniform(0.40, 0.47)
    yaw = rng.uniform(-0.45, 0.45)  # -1..1 would be full profile
    roll = rng.uniform(-0.15, 0.15)
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    rad_noise = 1.0 + 0.03 * np.interp(t, np.linspace(0, 2 * np.pi, 9), rng.standard_normal(9))
    # narrower jaw/chin: lower half (sin > 0, image y down) pulled in
    jaw = 1.0 - rng.uniform(0.10, 0.25) * np.clip(np.sin(t), 0, None) ** 2 * np.abs(np.cos(t))
    side = np.where(np.cos(t) * yaw > 0, 1.0 - 0.35 * abs(yaw), 1.0)
    px = ax * np.cos(t) * rad_noise * jaw * side
    py = ay * np.sin(t) * rad_noise
    cr, sr = np.cos(roll), np.sin(roll)
    oval = np.stack([cx + px * cr - py * sr, cy + px * sr + py * cr], 1).astype(np.int32)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [oval], 1)

    def place(dx: float, dy: float) -> tuple[int, int]:
        x = dx * ax + yaw * 0.35 * ax
        y = dy * ay
        return int(cx + x * cr - y * sr), int(cy + x * sr + y * cr)

    eye_y = rng.uniform(-0.22, -0.08)
    eye_dx = rng.uniform(0.36, 0.46)
    eye_ax = (int(ax * rng.uniform(0.17, 0.23)), int(ay * rng.uniform(0.06, 0.09)))
    deg = float(np.degrees(roll))
    eyes = [(place(s * eye_dx, eye_y), eye_ax, deg) for s in (-1, 1)]
    brow_ax = (int(ax * rng.uniform(0.22, 0.28)), int(ay * rng.uniform(0.035, 0.06)))
    brows = [(place(s * eye_dx, eye_y - rng.uniform(0.13, 0.18)), brow_ax, deg) for s in (-1, 1)]
    mouth = (place(0.0, rng.uniform(0.42, 0.55)),
             (int(ax * rng.uniform(0.3, 0.42)), int(ay * rng.uniform(0.07, 0.12))), deg)
    for (c, a, d) in [*eyes, *brows, mouth]:
        cv2.ellipse(mask, c, a, d, 0, 360, 0, -1)
    return FaceLayout(mask.astype(bool), oval, eyes, brows, mouth, (cx, cy), (ax, ay))


# --------------------------------------------------------------------------- rendering
def _dots(shape: tuple[int, int], rng: np.random.Generator, n: int, r_range: tuple[float, float],
          sigma: float) -> np.ndarray:
    """Soft dot map in [0, 1] (pores, freckles, naevi, stubble)."""
    h, w = shape
    m = np.zeros((h, w), np.float32)
    if n <= 0:
        return m
    ys = rng.integers(0, h, n)
    xs = rng.integers(0, w, n)
    rs = rng.uniform(*r_range, n)
    vals = rng.uniform(0.5, 1.0, n)
    for y, x, r, v in zip(ys, xs, rs, vals):
        cv2.circle(m, (int(x), int(y)), max(0, int(round(r))), float(v), -1)
    if sigma > 0:
        m = cv2.GaussianBlur(m, (0, 0), sigma)
    return np.clip(m, 0, 1)


def _specular_map(shape: tuple[int, int], layout: FaceLayout, rng: np.random.Generator) -> np.ndarray:
    """Specular highlights on forehead, nose and cheeks: elongated Gaussian blobs with a
    hot core; in [0, 1]. These are hard negatives, never lesion."""
    h, w = shape
    spec = np.zeros((h, w), np.float32)
    n = int(rng.choice([0, 1, 2, 3, 4, 5, 6, 8]))
    cx, cy = layout.center
    ax, ay = layout.axes
    anchors = [(0.0, -0.55), (0.0, -0.05), (0.0, 0.15), (-0.45, 0.1), (0.45, 0.1), (-0.3, -0.5),
               (0.3, -0.5), (0.0, 0.7)]
    for _ in range(n):
        dx, dy = anchors[int(rng.integers(len(anchors)))]
        x = cx + (dx + rng.normal(0, 0.12)) * ax
        y = cy + (dy + rng.normal(0, 0.10)) * ay
        length = ax * rng.uniform(0.03, 0.22)
        width = length * rng.uniform(0.2, 0.8)
        blob = np.zeros((h, w), np.float32)
        cv2.ellipse(blob, (int(x), int(y)), (max(1, int(length)), max(1, int(width))),
                    float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), max(0.8, width * rng.uniform(0.3, 0.9)))
        blob *= 1.0 / max(blob.max(), 1e-6) * rng.uniform(0.5, 1.0)
        if rng.random() < 0.5:  # small speckled glints (oily skin)
            blob *= 0.6 + 0.4 * (_dots((h, w), rng, int(length * width * 0.2) + 1, (0, 1.2), 0.7) > 0.2)
        spec = np.maximum(spec, blob)
    if rng.random() < 0.35:  # broad sheen
        sheen = np.zeros((h, w), np.float32)
        cv2.ellipse(sheen, (int(cx + rng.normal(0, 0.2) * ax), int(cy + rng.normal(-0.2, 0.2) * ay)),
                    (int(ax * rng.uniform(0.15, 0.4)), int(ay * rng.uniform(0.1, 0.3))),
                    float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        sheen = cv2.GaussianBlur(sheen, (0, 0), ax * 0.12) * rng.uniform(0.15, 0.35)
        spec = np.maximum(spec, sheen)
    return spec


def _hair_layer(shape: tuple[int, int], layout: FaceLayout, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """Hair strands over forehead/temples, eyebrows (partly over the skin mask's edge)
    and optional stubble. Returns (coverage [0,1], colour RGB)."""
    h, w = shape
    cov = np.zeros((h, w), np.float32)
    colour = HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))] * rng.uniform(0.8, 1.2)
    cx, cy = layout.center
    ax, ay = layout.axes
    thick = max(1, int(round(min(h, w) / 300)))
    # loose strands from the hairline
    for _ in range(int(rng.choice([0, 0, 3, 8, 15, 30]))):
        x = cx + rng.uniform(-1.0, 1.0) * ax
        y = cy - ay * rng.uniform(0.75, 1.05)
        ang = rng.uniform(0.3, 2.8)
        curve = rng.normal(0, 0.03)
        length = ay * rng.uniform(0.2, 0.9)
        pts = []
        for _s in range(12):
            pts.append((x, y))
            x += np.cos(ang) * length / 12
            y += np.sin(ang) * length / 12
            ang += curve * 12
        cv2.polylines(cov, [np.array(pts, np.int32)], False, float(rng.uniform(0.6, 1.0)), thick,
                      lineType=cv2.LINE_AA)
    # eyebrows: many short strokes, drawn slightly larger than the excluded ellipse
    for (c, a, d) in layout.brows:
        for _ in range(int(a[0] * 1.5) + 10):
            u = rng.uniform(-1.2, 1.2)
            x = c[0] + u * a[0]
            y = c[1] + rng.normal(0, 0.6) * a[1] - 0.6 * a[1] * (1 - u * u)
            ang = np.radians(d) + (0.3 if u < 0 else -0.3) * np.sign(u + 1e-6) + rng.normal(0, 0.2)
            ln = a[1] * rng.uniform(0.8, 2.0)
            cv2.line(cov, (int(x), int(y)), (int(x + np.cos(ang) * ln), int(y + np.sin(ang) * ln)),
                     float(rng.uniform(0.5, 1.0)), thick, lineType=cv2.LINE_AA)
    if rng.random() < 0.15:  # stubble on the lower face
        stub = _dots((h, w), rng, int(ax * ay * 0.02), (0, 0.8), 0.5)
        lower = np.zeros((h, w), np.float32)
        cv2.ellipse(lower, (int(cx), int(cy + 0.55 * ay)), (int(ax * 0.8), int(ay * 0.45)), 0, 0, 360, 1.0, -1)
        cov = np.maximum(cov, stub * lower * rng.uniform(0.4, 0.8))
    return np.clip(cov, 0, 1), colour


def render_face(h: int, w: int, rng: np.random.Generator, uv: bool = False,
                fitzpatrick: float | None = None, lesion_prob: float = 0.9,
                painted_lesions: bool | None = None,
                lesion_fn: Callable[[FaceLayout, np.random.Generator], tuple[np.ndarray, np.ndarray]] | None = None,
                amelanotic_rgb: np.ndarray | None = None) -> SyntheticSample:
    """Render one synthetic face-ROI sample (visible light or UV).

    ``lesion_fn(layout, rng) -> (label_weight, colour_weight)`` replaces the first
    painter's patches (``models.facial.vitiligo_generator`` uses it for extent-controlled,
    symmetric lesions); ``amelanotic_rgb`` fixes the lesion colour."""
    layout = face_layout(h, w, rng)
    skin = layout.skin_mask
    fitz = float(rng.uniform(1.0, 6.0)) if fitzpatrick is None else float(fitzpatrick)
    lo = int(np.floor(fitz))
    hi = min(6, lo + 1)
    base = FITZPATRICK_RGB[lo] + (fitz - lo) * (FITZPATRICK_RGB[hi] - FITZPATRICK_RGB[lo])
    base = base + rng.normal(0, 5, 3).astype(np.float32)
    melanin = (fitz - 1.0) / 5.0  # 0 (type I) .. 1 (type VI)
    shape = (h, w)
    scale = float(np.sqrt(max(1, skin.sum())))

    # --- pigmentation field (melanin mottling, redness) in "skin colour" space
    mottling = 1.0 + 0.035 * smooth_noise(shape, rng, scale * 0.25) + 0.02 * smooth_noise(shape, rng, scale * 0.06)
    redness = np.clip(_unit_noise(shape, rng, scale * 0.3) - 0.4, 0, None) * rng.uniform(0.0, 0.25)
    colour = base[None, None, :] * mottling[..., None]
    colour[..., 1] *= 1.0 - 0.5 * redness
    colour[..., 2] *= 1.0 - 0.4 * redness

    # --- lesions (melanin removed) before texture and lighting, which act on them too
    has_lesions = rng.random() < lesion_prob
    if painted_lesions is None:
        painted_lesions = rng.random() < 0.3
    if has_lesions and lesion_fn is not None:
        weight, colour_weight = lesion_fn(layout, rng)
    else:
        weight = (depigmentation_weight(skin, rng) if has_lesions else np.zeros(shape, np.float32))
        colour_weight = weight
    strength = rng.uniform(0.75, 1.0)
    if not painted_lesions:
        amel = (AMELANOTIC_RGB + rng.normal(0, 4, 3).astype(np.float32)) if amelanotic_rgb is None \
            else np.asarray(amelanotic_rgb, np.float32)
        depig = base + strength * (amel - base)
        colour = colour + colour_weight[..., None] * (depig[None, None, :] * (0.5 + 0.5 * mottling[..., None]) - colour)

    # --- freckles / naevi (pigment: absent inside lesions), pores (kept everywhere)
    pigment_spots = _dots(shape, rng, int(rng.choice([0, 0, 20, 80, 250]) * scale / 300), (0.5, 1.6), 0.7)
    naevi = _dots(shape, rng, int(rng.integers(0, 5)), (1.5, scale * 0.012 + 2), 0.8)
    spots = np.maximum(pigment_spots * 0.5, naevi * 0.8) * (1.0 - np.clip(colour_weight * 2 - 0.6, 0, 1))
    pores = _dots(shape, rng, int(scale * scale * rng.uniform(0.01, 0.04)), (0, 0.7), 0.5)
    fine = smooth_noise(shape, rng, 1.5)

    if uv:
        # Wood's lamp: melanin absorbs UV, so darker skin is darker; vitiligo fluoresces.
        uv_skin = UV_SKIN_RGB * (1.0 - 0.45 * melanin) * rng.uniform(0.75, 1.2)
        img = uv_skin[None, None, :] * mottling[..., None]
        vit = UV_VITILIGO_RGB * rng.uniform(0.75, 1.05) * strength
        img = img + colour_weight[..., None] * (vit[None, None, :] * (0.7 + 0.3 * mottling[..., None]) - img)
        img *= (1.0 - 0.55 * spots)[..., None]  # pigment spots are enhanced under UV
    else:
        dark_spot = np.array([0.55, 0.45, 0.40], np.float32)
        img = colour * (1.0 - spots[..., None] * (1.0 - dark_spot[None, None, :]))
    img *= (1.0 - rng.uniform(0.05, 0.15) * pores)[..., None]
    img *= (1.0 + rng.uniform(0.01, 0.04) * fine)[..., None]

    # --- lighting: face curvature shading + directional gradient + exposure
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d2 = ((xx - layout.center[0]) / layout.axes[0]) ** 2 + ((yy - layout.center[1]) / layout.axes[1]) ** 2
    shade = 1.0 - rng.uniform(0.05, 0.35) * np.clip(d2, 0, 1.2) ** 1.5
    ang = rng.uniform(0, 2 * np.pi)
    grad = ((xx - w / 2) * np.cos(ang) + (yy - h / 2) * np.sin(ang)) / (0.5 * max(h, w))
    shade *= 1.0 + rng.uniform(0.0, 0.3) * grad
    shade *= rng.uniform(0.75, 1.05) if not uv else rng.uniform(0.7, 1.3)
    img *= shade[..., None]

    if painted_lesions and has_lesions:
        tmp = np.clip(img, 0, 255).astype(np.uint8)
        tmp, _ = paint_depigmentation(tmp, skin, rng, weight=colour_weight, uv=uv, strength=strength,
                                      target_rgb=None if (uv or amelanotic_rgb is None) else amelanotic_rgb,
                                      exposure=None if amelanotic_rgb is None else 1.0)
        img = tmp.astype(np.float32)

    # --- specular highlights (after lesions: they sit on top and are not lesion)
    spec = _specular_map(shape, layout, rng)
    tint = np.array([255, 250, 245], np.float32) if not uv else np.array([225, 215, 255], np.float32)
    img = img + spec[..., None] * (tint[None, None, :] * rng.uniform(0.9, 1.05) - img)

    # --- hair on top
    hair, hair_rgb = _hair_layer(shape, layout, rng)
    if uv:
        hair_rgb = hair_rgb * 0.35 + np.array([10, 8, 25], np.float32)
    img = img + hair[..., None] * (hair_rgb[None, None, :] - img)

    # --- sensor noise
    img += rng.normal(0, rng.uniform(1.0, 4.0 if not uv else 7.0), img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    img[~skin] = 0
    lesion = (weight >= 0.5) & skin
    return SyntheticSample(img, lesion, skin, uv=uv,
                           meta={"fitzpatrick": fitz, "painted": bool(painted_lesions)})


# --------------------------------------------------------------------------- astronaut
# Face-skin region of skimage.data.astronaut() (512x512): oval minus eyes, brows, lips.
# Training-data fallback only; the app uses models.face.
_ASTRONAUT_OVAL = [(178, 82), (200, 77), (225, 76), (248, 80), (262, 92), (266, 110), (263, 128),
                   (256, 145), (246, 158), (232, 167), (218, 170), (204, 166), (192, 156),
                   (183, 142), (176, 125), (174, 105)]
_ASTRONAUT_HOLES = [((203, 102), (10, 5)), ((247, 103), (10, 5)), ((200, 91), (12, 4)),
                    ((246, 90), (13, 4)), ((223, 146), (20, 8))]


@lru_cache(maxsize=1)
def astronaut_face() -> tuple[np.ndarray, np.ndarray]:
    """(image, skin_mask) of scikit-image's astronaut photo (ships with the package).

    Uses ``models.face.FaceSkinMasker`` when it is importable and finds a face, so the
    training mask matches the app's; otherwise a hand-drawn polygon."""
    from skimage import data

    img = np.ascontiguousarray(data.astronaut())
    try:
        from models.face import FaceSkinMasker  # type: ignore[import-not-found]

        skin = np.asarray(FaceSkinMasker().mask(img).skin_mask, dtype=bool)
        if skin.shape == img.shape[:2] and skin.sum() > 2000:
            return img, skin
    except Exception:  # noqa: BLE001 - any failure: fall back to the fixed polygon
        pass
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.array(_ASTRONAUT_OVAL, np.int32)], 1)
    for c, a in _ASTRONAUT_HOLES:
        cv2.ellipse(mask, c, a, 0, 0, 360, 0, -1)
    return img, mask.astype(bool)


def face_roi(skin_mask: np.ndarray, enlarge: float = 1.25) -> tuple[int, int, int, int]:
    """Enlarged bounding box (y0, y1, x0, x1) of a skin mask, like the app's face ROI."""
    ys, xs = np.nonzero(skin_mask)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    hh = (ys.max() - ys.min() + 1) * enlarge / 2
    hw = (xs.max() - xs.min() + 1) * enlarge / 2
    h, w = skin_mask.shape
    return (max(0, int(cy - hh)), min(h, int(cy + hh) + 1), max(0, int(cx - hw)), min(w, int(cx + hw) + 1))


def astronaut_sample(rng: np.random.Generator, long_side: int = 384, uv: bool = False) -> SyntheticSample:
    """Face ROI of the astronaut, upscaled so its long side is ``long_side``, with patches
    painted at that resolution (as the app's tests paint them on a full-size photo)."""
    img, skin = astronaut_face()
    y0, y1, x0, x1 = face_roi(skin, rng.uniform(1.1, 1.4))
    roi = img[y0:y1, x0:x1]
    roi_skin = skin[y0:y1, x0:x1]
    s = long_side / max(roi.shape[:2])
    size = (int(round(roi.shape[1] * s)), int(round(roi.shape[0] * s)))
    roi = cv2.resize(roi, size, interpolation=cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA)
    roi_skin = cv2.resize(roi_skin.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    if uv:  # crude Wood's-lamp look of the real photo: keep luminance, violet-blue tint
        lum = roi.astype(np.float32).mean(axis=2, keepdims=True) / 255.0
        roi = np.clip(lum * UV_SKIN_RGB[None, None, :] * rng.uniform(1.2, 1.8), 0, 255).astype(np.uint8)
    if rng.random() < 0.9:
        out, lesion = paint_depigmentation(roi, roi_skin, rng, uv=uv)
    else:
        out, lesion = roi.copy(), np.zeros(roi_skin.shape, bool)
    out[~roi_skin] = 0
    return SyntheticSample(out, lesion & roi_skin, roi_skin, uv=uv, meta={"astronaut": True})


def random_roi_shape(rng: np.random.Generator, long_side: int) -> tuple[int, int]:
    """Height/width of a face ROI: portrait, aspect 1.0-1.45 (faces are taller than wide)."""
    aspect = rng.uniform(1.0, 1.45)
    return long_side, max(32, int(round(long_side / aspect)))


def generate_sample(rng: np.random.Generator, long_side: int = 384, uv_fraction: float = 0.35,
                    astronaut_fraction: float = 0.25, uv: bool | None = None,
                    astronaut: bool | None = None) -> SyntheticSample:
    """One training/evaluation sample of the mixture (synthetic visible/UV, astronaut)."""
    if uv is None:
        uv = bool(rng.random() < uv_fraction)
    if astronaut is None:
        astronaut = bool(rng.random() < astronaut_fraction)
    if astronaut:
        return astronaut_sample(rng, long_side, uv=uv and rng.random() < 0.5)
    h, w = random_roi_shape(rng, long_side)
    return render_face(h, w, rng, uv=uv)


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """Independent, reproducible generator for sample ``index`` of a run seeded ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
