"""Synthetic close-up skin photographs with vitiligo patches, any body site.

Reuses the facial generator's painters (``models.facial.synthetic``: Fitzpatrick skin colours,
smooth noise, ``depigmentation_weight``, ``paint_depigmentation``) on a close-up layout:

* skin of Fitzpatrick types I-VI with melanin mottling, redness, freckles, naevi, pores;
* optional non-skin area (background, clothing) behind a wavy border: the learned
  "not skin" class, so the visible-skin denominator is learned, never a colour threshold;
* body hair strands crossing skin and lesions (labels unchanged under hair);
* lighting gradient, vignetting, exposure, small specular highlights, sensor noise, blur;
* depigmented patches covering ~5 % of the pixels on average (the paper's lesion share),
  each photograph at one severity level: ``high`` (complete depigmentation), ``mid`` and
  ``low`` (partial), so the lesion-vs-skin RGB difference spreads like the paper's
  examples (44.8 / 26.2 / 17.0).

Labels: 0 not skin, 1 skin, 2 vitiligo (``weight >= 0.5`` inside the skin).
"""
from __future__ import annotations

import cv2
import numpy as np

from models.facial.synthetic import (
    AMELANOTIC_RGB,
    FITZPATRICK_RGB,
    HAIR_COLOURS,
    SyntheticSample,
    _dots,
    _unit_noise,
    depigmentation_weight,
    paint_depigmentation,
    sample_rng,
    smooth_noise,
)

SEVERITY_STRENGTH = {"high": (0.8, 1.0), "mid": (0.45, 0.7), "low": (0.25, 0.45)}
SEVERITIES = tuple(SEVERITY_STRENGTH)


def _background(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Clothing / bedsheet / wall: a flat or textured colour, sometimes striped."""
    h, w = shape
    colour = rng.uniform(20, 235, 3).astype(np.float32)
    img = np.broadcast_to(colour, (h, w, 3)).astype(np.float32).copy()
    img *= (1.0 + 0.08 * smooth_noise(shape, rng, rng.uniform(3, 30)))[..., None]
    if rng.random() < 0.3:
        period = rng.uniform(6, 30)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ang = rng.uniform(0, np.pi)
        stripes = (np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * 2 * np.pi / period) > 0).astype(np.float32)
        other = rng.uniform(20, 235, 3).astype(np.float32)
        img += stripes[..., None] * (other - img) * 0.8
    return img


def _skin_region(shape: tuple[int, int], rng: np.random.Generator, background_prob: float) -> np.ndarray:
    """Skin mask: the whole patch, or the patch minus a wavy-edged background area."""
    h, w = shape
    skin = np.ones(shape, bool)
    if rng.random() >= background_prob:
        return skin
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    proj = ((xx - w / 2) * np.cos(ang) + (yy - h / 2) * np.sin(ang)) / (0.5 * max(h, w))
    cut = rng.uniform(0.25, 0.85)  # background beyond this (fraction of the half-size)
    wave = 0.12 * smooth_noise(shape, rng, max(h, w) * rng.uniform(0.15, 0.5))
    if rng.random() < 0.35:  # a limb: skin is a band between two edges
        skin = np.abs(proj + wave) < cut
    else:
        skin = proj + wave < cut
    if skin.mean() < 0.3:
        return np.ones(shape, bool)
    return skin


def _body_hair(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coverage map and colour of thin body-hair strands (short curved lines)."""
    h, w = shape
    cov = np.zeros(shape, np.float32)
    if rng.random() < 0.4:
        return cov, HAIR_COLOURS[0]
    n = int(rng.uniform(5, 120) * h * w / 312**2)
    main = rng.uniform(0, np.pi)
    length = rng.uniform(0.04, 0.15) * max(h, w)
    thick = 1 if max(h, w) < 600 else max(1, int(round(max(h, w) / 600)))
    for _ in range(n):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        ang = main + rng.normal(0, 0.35)
        pts = []
        for _step in range(6):
            pts.append((int(x), int(y)))
            x += np.cos(ang) * length / 5
            y += np.sin(ang) * length / 5
            ang += rng.normal(0, 0.15)
        cv2.polylines(cov, [np.array(pts, np.int32)], False, float(rng.uniform(0.5, 1.0)), thick, cv2.LINE_AA)
    colour = HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))]
    return np.clip(cov, 0, 1), colour


def render_closeup(h: int, w: int, rng: np.random.Generator, fitzpatrick: float | None = None,
                   severity: str | None = None, lesion_prob: float = 0.92,
                   background_prob: float = 0.45) -> SyntheticSample:
    """One close-up skin photograph (RGB uint8) with its lesion and skin masks."""
    shape = (h, w)
    skin = _skin_region(shape, rng, background_prob)
    fitz = float(rng.uniform(1.0, 6.0)) if fitzpatrick is None else float(fitzpatrick)
    lo = int(np.floor(fitz))
    hi = min(6, lo + 1)
    base = FITZPATRICK_RGB[lo] + (fitz - lo) * (FITZPATRICK_RGB[hi] - FITZPATRICK_RGB[lo])
    base = base + rng.normal(0, 5, 3).astype(np.float32)
    scale = float(np.sqrt(h * w))

    mottling = 1.0 + 0.04 * smooth_noise(shape, rng, scale * 0.2) + 0.025 * smooth_noise(shape, rng, scale * 0.05)
    redness = np.clip(_unit_noise(shape, rng, scale * 0.3) - 0.4, 0, None) * rng.uniform(0.0, 0.3)
    colour = base[None, None, :] * mottling[..., None]
    colour[..., 1] *= 1.0 - 0.5 * redness
    colour[..., 2] *= 1.0 - 0.4 * redness

    severity = severity or str(rng.choice(SEVERITIES))
    strength = float(rng.uniform(*SEVERITY_STRENGTH[severity]))
    has_lesions = rng.random() < lesion_prob
    if has_lesions:
        n_patches = int(rng.choice([1, 1, 2, 2, 3, 4]))
        weight = depigmentation_weight(skin, rng, n_patches=n_patches, size_range=(0.045, 0.18))
    else:
        weight = np.zeros(shape, np.float32)
    painted = has_lesions and rng.random() < 0.3
    if not painted:
        amel = AMELANOTIC_RGB + rng.normal(0, 4, 3).astype(np.float32)
        depig = base + strength * (amel - base)
        colour = colour + weight[..., None] * (depig[None, None, :] * (0.5 + 0.5 * mottling[..., None]) - colour)

    freckles = _dots(shape, rng, int(rng.choice([0, 0, 20, 80, 200]) * scale / 312), (0.5, 1.6), 0.7)
    naevi = _dots(shape, rng, int(rng.integers(0, 4)), (1.5, scale * 0.015 + 2), 0.8)
    spots = np.maximum(freckles * 0.5, naevi * 0.8) * (1.0 - np.clip(weight * 2 - 0.6, 0, 1) * strength)
    pores = _dots(shape, rng, int(scale * scale * rng.uniform(0.005, 0.03)), (0, 0.8), 0.5)
    dark_spot = np.array([0.55, 0.45, 0.40], np.float32)
    img = colour * (1.0 - spots[..., None] * (1.0 - dark_spot[None, None, :]))
    img *= (1.0 - rng.uniform(0.05, 0.15) * pores)[..., None]
    img *= (1.0 + rng.uniform(0.01, 0.04) * smooth_noise(shape, rng, 1.5))[..., None]

    if painted:  # the real-photo painter, with the same severity
        tmp = np.clip(img, 0, 255).astype(np.uint8)
        tmp, _ = paint_depigmentation(tmp, skin, rng, weight=weight, strength=strength)
        img = tmp.astype(np.float32)

    bg = _background(shape, rng)
    edge = cv2.GaussianBlur(skin.astype(np.float32), (0, 0), rng.uniform(0.5, 2.0))
    img = img * edge[..., None] + bg * (1.0 - edge[..., None])

    # lighting over everything: gradient, vignetting, exposure, small highlights
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    grad = ((xx - w / 2) * np.cos(ang) + (yy - h / 2) * np.sin(ang)) / (0.5 * max(h, w))
    r2 = ((xx - w / 2) / (0.5 * w)) ** 2 + ((yy - h / 2) / (0.5 * h)) ** 2
    shade = (1.0 + rng.uniform(0.0, 0.35) * grad) * (1.0 - rng.uniform(0.0, 0.25) * np.clip(r2, 0, 2) / 2)
    shade *= rng.uniform(0.75, 1.1)
    img *= shade[..., None]
    if rng.random() < 0.4:
        spec = _dots(shape, rng, int(rng.integers(1, 6)), (scale * 0.01, scale * 0.05), 0.9) * skin
        spec = cv2.GaussianBlur(spec, (0, 0), scale * 0.01 + 0.5) * rng.uniform(0.3, 0.7)
        img += np.clip(spec, 0, 1)[..., None] * (np.array([255, 250, 245], np.float32) - img)

    hair, hair_rgb = _body_hair(shape, rng)
    img += hair[..., None] * (hair_rgb[None, None, :] - img)
    img += rng.normal(0, rng.uniform(1.0, 4.0), img.shape).astype(np.float32)
    if rng.random() < 0.25:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
    img = np.clip(img, 0, 255).astype(np.uint8)
    lesion = (weight >= 0.5) & skin
    return SyntheticSample(img, lesion, skin, meta={
        "fitzpatrick": fitz, "severity": severity, "strength": strength, "painted": bool(painted)})


def _light_background(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """White/light wall, sheet or paper: near-neutral 200-250, soft folds, sometimes a
    fabric weave or glitter. These were taken for skin, and for vitiligo, on real photos."""
    h, w = shape
    level = rng.uniform(200, 250)
    colour = np.clip(level + rng.normal(0, 6, 3), 0, 255).astype(np.float32)
    img = np.broadcast_to(colour, (h, w, 3)).astype(np.float32).copy()
    img *= (1.0 + rng.uniform(0.03, 0.12) * smooth_noise(shape, rng, max(h, w) * rng.uniform(0.1, 0.4)))[..., None]
    kind = "light wall"
    u = rng.random()
    if u < 0.35:  # fabric weave
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        period = rng.uniform(2.5, 6)
        weave = np.sin(xx * 2 * np.pi / period) * np.sin(yy * 2 * np.pi / period)
        img *= (1.0 + 0.05 * weave)[..., None]
        kind = "light fabric"
    elif u < 0.5:  # glitter / sparkle
        sparkle = _dots(shape, rng, int(h * w / 400), (0, 1.2), 0.4)
        img += sparkle[..., None] * (255 - img)
        kind = "glitter"
    return img, kind


def render_closeup_v2(h: int, w: int, rng: np.random.Generator) -> SyntheticSample:
    """Close-up with generator-v2 lesions (``models.facial.vitiligo_generator``): milky lesions of the
    same colour on any skin, extent ~uniform 0-95 % of the skin with pigmented islands,
    skin types weighted to V-VI, and light/white backgrounds in a third of the images."""
    from models.facial.vitiligo_generator import extent_weights, sample_extent, sample_fitzpatrick, sample_lesion_rgb, \
        skin_type_of

    shape = (h, w)
    skin = _skin_region(shape, rng, background_prob=0.6)
    fitz = sample_fitzpatrick(rng)
    lo = int(np.floor(fitz))
    hi = min(6, lo + 1)
    base = FITZPATRICK_RGB[lo] + (fitz - lo) * (FITZPATRICK_RGB[hi] - FITZPATRICK_RGB[lo])
    base = base + rng.normal(0, 5, 3).astype(np.float32)
    scale = float(np.sqrt(h * w))
    mottling = 1.0 + 0.04 * smooth_noise(shape, rng, scale * 0.2) + 0.025 * smooth_noise(shape, rng, scale * 0.05)
    redness = np.clip(_unit_noise(shape, rng, scale * 0.3) - 0.4, 0, None) * rng.uniform(0.0, 0.3)
    colour = base[None, None, :] * mottling[..., None]
    colour[..., 1] *= 1.0 - 0.5 * redness
    colour[..., 2] *= 1.0 - 0.4 * redness
    extent = sample_extent(rng)
    label_w, colour_w = extent_weights(skin, rng, extent)
    strength = float(rng.uniform(0.75, 1.0))
    depig = base + strength * (sample_lesion_rgb(rng) - base)
    colour = colour + colour_w[..., None] * (depig[None, None, :] * (0.5 + 0.5 * mottling[..., None]) - colour)
    freckles = _dots(shape, rng, int(rng.choice([0, 0, 20, 80, 200]) * scale / 312), (0.5, 1.6), 0.7)
    naevi = _dots(shape, rng, int(rng.integers(0, 4)), (1.5, scale * 0.015 + 2), 0.8)
    spots = np.maximum(freckles * 0.5, naevi * 0.8) * (1.0 - np.clip(colour_w * 2 - 0.6, 0, 1))
    pores = _dots(shape, rng, int(scale * scale * rng.uniform(0.005, 0.03)), (0, 0.8), 0.5)
    dark_spot = np.array([0.55, 0.45, 0.40], np.float32)
    img = colour * (1.0 - spots[..., None] * (1.0 - dark_spot[None, None, :]))
    img *= (1.0 - rng.uniform(0.05, 0.15) * pores)[..., None]
    img *= (1.0 + rng.uniform(0.01, 0.04) * smooth_noise(shape, rng, 1.5))[..., None]
    if skin.all():
        background = "none"
        bg = _background(shape, rng)
    elif rng.random() < 0.55:
        bg, background = _light_background(shape, rng)
    else:
        bg, background = _background(shape, rng), "other"
    edge = cv2.GaussianBlur(skin.astype(np.float32), (0, 0), rng.uniform(0.5, 2.0))
    img = img * edge[..., None] + bg * (1.0 - edge[..., None])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    grad = ((xx - w / 2) * np.cos(ang) + (yy - h / 2) * np.sin(ang)) / (0.5 * max(h, w))
    r2 = ((xx - w / 2) / (0.5 * w)) ** 2 + ((yy - h / 2) / (0.5 * h)) ** 2
    shade = (1.0 + rng.uniform(0.0, 0.35) * grad) * (1.0 - rng.uniform(0.0, 0.25) * np.clip(r2, 0, 2) / 2)
    shade *= rng.uniform(0.75, 1.1)
    img *= shade[..., None]
    img *= (1.0 + rng.normal(0, 0.05, 3)).astype(np.float32)[None, None, :]  # colour cast
    if rng.random() < 0.5:  # specular highlights on skin (hard negatives)
        spec = _dots(shape, rng, int(rng.integers(1, 8)), (scale * 0.01, scale * 0.05), 0.9) * skin
        spec = cv2.GaussianBlur(spec, (0, 0), scale * 0.01 + 0.5) * rng.uniform(0.3, 0.8)
        img += np.clip(spec, 0, 1)[..., None] * (np.array([255, 250, 245], np.float32) - img)
    hair, hair_rgb = _body_hair(shape, rng)
    img += hair[..., None] * (hair_rgb[None, None, :] - img)
    img += rng.normal(0, rng.uniform(1.0, 4.0), img.shape).astype(np.float32)
    if rng.random() < 0.25:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:  # JPEG at a random quality
        q = int(rng.integers(35, 96))
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            img = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    lesion = (label_w >= 0.5) & skin
    severity = "high" if strength >= 0.9 else "mid"
    return SyntheticSample(img, lesion, skin, meta={
        "fitzpatrick": fitz, "skin_type": skin_type_of(fitz), "severity": severity, "strength": strength,
        "extent_target": extent, "background": background, "source": "synthetic close-up",
        "roi_long_side": max(h, w)})


def labels_of(sample: SyntheticSample) -> np.ndarray:
    """uint8 label map: 0 not skin, 1 skin, 2 vitiligo."""
    lab = sample.skin_mask.astype(np.uint8)
    lab[sample.lesion_mask] = 2
    return lab


def generate_closeup(seed: int, index: int, size: int = 312, generator: str = "v1", **kwargs) -> SyntheticSample:
    """Sample ``index`` of a run seeded ``seed`` (reproducible, independent of the others).
    ``generator="v2"``: ``render_closeup_v2`` (the disease as photographed, issue 10)."""
    if generator == "v2":
        return render_closeup_v2(size, size, sample_rng(seed, index))
    return render_closeup(size, size, sample_rng(seed, index), **kwargs)
