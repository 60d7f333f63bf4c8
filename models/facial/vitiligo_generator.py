"""Generator v2: facial vitiligo as it is photographed (DESIGN.md, "Vitiligo as photographed").

The first painter (``models.facial.synthetic``) drew a few small patches a little lighter than
the surrounding skin, and the network learned exactly that: on real photographs it
called 40-75 % depigmented faces 4-12 % and missed faint lesions on fair skin. What this
module changes, each point from the dermatology rather than from our old painter:

* **Colour**: depigmented skin is milky ivory to pinkish-white, *much the same colour
  whatever the person's skin colour* (``sample_lesion_rgb``), so contrast is large on
  dark skin and small on fair skin. Under Wood's lamp it glows blue-white.
* **Extent**: drawn ~uniformly from 0 to 95 % of the skin (``sample_extent``), by
  thresholding a smooth random field at the quantile that gives that extent; near-total
  depigmentation leaves residual pigmented islands by construction.
* **Placement**: often bilateral and symmetric (the field is blended with its mirror
  image about the face's midline) and periorificial (bumps around eyes and mouth);
  confetti macules; perifollicular repigmentation dots inside lesions (still outlined as
  lesion, as a dermatologist outlines it).
* **People**: skin types I-VI weighted to V-VI (``SKIN_TYPE_WEIGHTS``), on synthetic faces
  and on two real public-domain portraits that installed packages ship (scikit-image's
  astronaut, matplotlib's Grace Hopper), their skin recoloured to the sampled type.
* **Photographs**: colour casts, exposure, specular highlights, hair over skin, ROI
  resolution from small (a 400-px photo) to large; JPEG, blur and noise come from
  ``models.facial.data.augment``.
"""
from __future__ import annotations

import os
from functools import lru_cache
from types import SimpleNamespace

import cv2
import numpy as np

from .synthetic import (FITZPATRICK_RGB, UV_SKIN_RGB, UV_VITILIGO_RGB, FaceLayout, SyntheticSample,
                        _hair_layer, _specular_map, face_roi, paint_depigmentation, render_face,
                        smooth_noise)

# Share of each Fitzpatrick type I..VI: V-VI weighted up (most visible, most photographed).
SKIN_TYPE_WEIGHTS = np.array([0.07, 0.10, 0.13, 0.18, 0.26, 0.26])
# Milky ivory .. pinkish-white in visible light (sRGB), independent of the person's skin.
LESION_RGB_IVORY = np.array([244, 234, 218], np.float32)
LESION_RGB_PINK = np.array([248, 224, 220], np.float32)
PORTRAITS = ("astronaut", "grace_hopper")
EXTENT_BINS = ((0.0, 5.0), (5.0, 25.0), (25.0, 50.0), (50.0, 95.0))


def sample_fitzpatrick(rng: np.random.Generator, weights: np.ndarray | None = None) -> float:
    """Continuous skin type in [1, 6], type k drawn with ``weights[k-1]`` (default SKIN_TYPE_WEIGHTS)."""
    w = SKIN_TYPE_WEIGHTS if weights is None else np.asarray(weights, float)
    k = int(rng.choice(6, p=w / w.sum())) + 1
    return fitzpatrick_of_type(k, rng)


def skin_type_of(fitz: float) -> int:
    """Fitzpatrick type (1..6) of a continuous value: type k covers [k - 0.5, k + 0.5)."""
    return int(np.clip(np.floor(fitz + 0.5), 1, 6))


def fitzpatrick_of_type(skin_type: int, rng: np.random.Generator) -> float:
    """A continuous value inside type ``skin_type`` (clipped to the scale's ends 1 and 6)."""
    return float(np.clip(skin_type + rng.uniform(-0.5, 0.5), 1.0, 6.0))


def skin_type_rgb(fitz: float) -> np.ndarray:
    """Interpolated unexposed-skin sRGB of a continuous Fitzpatrick value."""
    lo = int(np.clip(np.floor(fitz), 1, 6))
    hi = min(6, lo + 1)
    return FITZPATRICK_RGB[lo] + (fitz - lo) * (FITZPATRICK_RGB[hi] - FITZPATRICK_RGB[lo])


def sample_extent(rng: np.random.Generator, none: float | None = None, small: float | None = None) -> float:
    """Fraction of skin depigmented: ``none`` of the faces (default 8 %) without vitiligo,
    ``small`` (default 22 %) with 0.3-10 % (few macules), the rest ~uniform over 5-95 %."""
    none = 0.08 if none is None else none
    small = 0.22 if small is None else small
    u = rng.random()
    if u < none:
        return 0.0
    if u < none + small:
        return float(rng.uniform(0.003, 0.10))
    return float(rng.uniform(0.05, 0.95))


def sample_lesion_rgb(rng: np.random.Generator) -> np.ndarray:
    """Milky ivory/pinkish-white, the same distribution whatever the base skin."""
    t = rng.uniform(0, 1)
    rgb = LESION_RGB_IVORY + t * (LESION_RGB_PINK - LESION_RGB_IVORY)
    rgb = rgb * rng.uniform(0.93, 1.02) + rng.normal(0, 3, 3)
    return np.clip(rgb, 0, 255).astype(np.float32)


def _mirror_x(field: np.ndarray, axis_x: float) -> np.ndarray:
    """Field reflected about column ``axis_x`` (columns outside the image clamp)."""
    w = field.shape[1]
    src = np.clip(np.round(2 * axis_x - np.arange(w)).astype(int), 0, w - 1)
    return field[:, src]


def extent_weights(skin: np.ndarray, rng: np.random.Generator, extent: float,
                   midline_x: float | None = None,
                   hotspots: list[tuple[float, float, float]] | None = None,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(label_weight, colour_weight) in [0, 1] with ``label_weight >= 0.5`` covering about
    ``extent`` of ``skin``.

    A smooth random field (plus optional mirror symmetry about ``midline_x`` and bumps at
    ``hotspots`` = (x, y, radius) around eyes/mouth) is thresholded at its (1 - extent)
    quantile inside the skin; the border ramp width varies from sharp to soft. Confetti
    macules are added; perifollicular repigmentation lowers only the colour weight.
    """
    h, w = skin.shape
    label = np.zeros((h, w), np.float32)
    n_skin = int(skin.sum())
    if extent <= 0 or n_skin < 20:
        return label, label.copy()
    scale = float(np.sqrt(n_skin))
    field = smooth_noise((h, w), rng, scale * rng.uniform(0.10, 0.35)) \
        + rng.uniform(0.15, 0.5) * smooth_noise((h, w), rng, scale * rng.uniform(0.03, 0.07))
    if midline_x is not None and rng.random() < 0.65:
        a = rng.uniform(0.5, 0.8)
        field = a * field + (1 - a) * _mirror_x(field, midline_x)
        field /= max(float(field[skin].std()), 1e-6)
    if hotspots and extent < 0.6 and rng.random() < 0.5:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        amp = rng.uniform(0.8, 2.0)
        for (x, y, r) in hotspots:
            r = max(2.0, r * rng.uniform(0.8, 1.6))
            field += amp * np.exp(-(((xx - x) ** 2 + (yy - y) ** 2) / (2 * r * r)))
    t = float(np.quantile(field[skin], 1.0 - extent))
    spread = float(field[skin].std()) + 1e-6
    border = spread * rng.uniform(0.02, 0.25)
    label = np.clip(0.5 + (field - t) / border, 0.0, 1.0).astype(np.float32)
    if rng.random() < 0.25:  # confetti: many tiny macules
        dots = np.zeros((h, w), np.float32)
        ys, xs = np.nonzero(skin)
        r = max(1, int(scale * rng.uniform(0.004, 0.012)))
        for i in rng.integers(0, ys.size, int(rng.integers(8, 40))):
            cv2.circle(dots, (int(xs[i]), int(ys[i])), r, 1.0, -1)
        label = np.maximum(label, dots)
    label *= skin
    colour = label.copy()
    if rng.random() < 0.35:  # perifollicular repigmentation: pigmented dots in the lesion
        inside = np.argwhere(label > 0.9)
        if inside.size:
            dots = np.zeros((h, w), np.float32)
            dot_r = max(1, int(round(scale * rng.uniform(0.003, 0.008))))
            for idx in rng.integers(0, len(inside), int(rng.integers(10, 80))):
                y, x = inside[idx]
                cv2.circle(dots, (int(x), int(y)), dot_r, 1.0, -1)
            dots = cv2.GaussianBlur(dots, (0, 0), max(0.6, dot_r * 0.6))
            colour = np.clip(colour - rng.uniform(0.4, 0.8) * dots * (label > 0.9), 0, 1)
    return label, colour


def _face_hotspots(layout: FaceLayout) -> list[tuple[float, float, float]]:
    """Periorificial centres: both eyes and the mouth, radius ~ their size."""
    spots = [(float(c[0]), float(c[1]), float(max(a)) * 1.3) for (c, a, _d) in layout.eyes]
    c, a, _d = layout.mouth
    spots.append((float(c[0]), float(c[1]), float(max(a)) * 1.2))
    return spots


def colour_cast(image: np.ndarray, rng: np.random.Generator, strength: float = 0.07) -> np.ndarray:
    """Camera white balance / exposure: per-channel gains and a global gain."""
    gains = (1.0 + rng.normal(0, strength, 3)) * rng.uniform(0.8, 1.1)
    return np.clip(image.astype(np.float32) * gains[None, None, :], 0, 255).astype(np.uint8)


def synthetic_face_sample(rng: np.random.Generator, long_side: int, uv: bool,
                          fitz: float | None = None, extent: float | None = None) -> SyntheticSample:
    """A rendered face ROI with v2 lesions (extent, colour, symmetry, skin type)."""
    aspect = rng.uniform(1.0, 1.45)
    h, w = long_side, max(32, int(round(long_side / aspect)))
    fitz = sample_fitzpatrick(rng) if fitz is None else float(fitz)
    extent = sample_extent(rng) if extent is None else float(extent)
    lesion_rgb = sample_lesion_rgb(rng)

    def lesions(layout: FaceLayout, r: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return extent_weights(layout.skin_mask, r, extent, layout.center[0], _face_hotspots(layout))

    s = render_face(h, w, rng, uv=uv, fitzpatrick=fitz, lesion_prob=1.0 if extent > 0 else 0.0,
                    lesion_fn=lesions, amelanotic_rgb=lesion_rgb)
    if not uv and rng.random() < 0.6:
        s.image[:] = colour_cast(s.image, rng)
        s.image[~s.skin_mask] = 0
    s.meta.update({"source": "synthetic", "skin_type": skin_type_of(fitz),
                   "extent_target": extent})
    return s


@lru_cache(maxsize=2)
def portrait(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, face-skin mask) of a real public-domain portrait shipped by a package.

    The mask comes from ``models.face`` (the app's own FaceMesh geometry) so training sees
    the app's denominator; a portrait whose face is not found raises."""
    if name == "astronaut":
        from skimage import data

        img = np.ascontiguousarray(data.astronaut())
    elif name == "grace_hopper":
        import matplotlib

        path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(path)
        img = np.ascontiguousarray(bgr[..., ::-1])
    else:
        raise ValueError(f"unknown portrait {name!r}")
    from models.face import FaceSkinMasker

    masker = FaceSkinMasker()
    try:
        skin = np.asarray(masker.mask(img).skin_mask, dtype=bool)
    finally:
        masker.close()
    return img, skin


def recolour_skin(image: np.ndarray, skin: np.ndarray, fitz: float, rng: np.random.Generator) -> np.ndarray:
    """Move the face's skin (feathered beyond the mask, so neck and edges follow) to the
    colour of skin type ``fitz``, keeping shading and texture (per-channel gain)."""
    img = image.astype(np.float32)
    current = np.median(img[skin], axis=0)
    target = skin_type_rgb(fitz) * rng.uniform(0.9, 1.05) + rng.normal(0, 4, 3)
    gain = np.clip(target / np.maximum(current, 1.0), 0.15, 2.5)
    soft = cv2.dilate(skin.astype(np.uint8), np.ones((7, 7), np.uint8), iterations=2).astype(np.float32)
    sigma = max(1.5, np.sqrt(skin.sum()) * 0.04)
    soft = np.clip(cv2.GaussianBlur(soft, (0, 0), sigma) * 1.3, 0, 1)
    soft = np.maximum(soft, skin.astype(np.float32))
    out = img * (1.0 + soft[..., None] * (gain[None, None, :] - 1.0))
    return np.clip(out, 0, 255).astype(np.uint8)


def _mask_hotspots(skin: np.ndarray) -> list[tuple[float, float, float]]:
    """Eye and mouth positions of a face-skin mask: its holes (filled oval minus mask)."""
    m = skin.astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(m)
    cv2.drawContours(filled, contours, -1, 1, -1)
    holes = (filled > 0) & ~skin
    n, _lab, stats, cents = cv2.connectedComponentsWithStats(holes.astype(np.uint8))
    out = []
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] >= 6:
            r = float(max(stats[i, cv2.CC_STAT_WIDTH], stats[i, cv2.CC_STAT_HEIGHT]))
            out.append((float(cents[i][0]), float(cents[i][1]), r))
    return out


def portrait_sample(rng: np.random.Generator, long_side: int, uv: bool,
                    name: str | None = None, fitz: float | None = None,
                    extent: float | None = None) -> SyntheticSample:
    """Face ROI of a real portrait, skin recoloured to a sampled type, v2 lesions painted."""
    name = name or PORTRAITS[int(rng.integers(len(PORTRAITS)))]
    img, skin = portrait(name)
    y0, y1, x0, x1 = face_roi(skin, rng.uniform(1.1, 1.4))
    roi, roi_skin = img[y0:y1, x0:x1], skin[y0:y1, x0:x1]
    s = long_side / max(roi.shape[:2])
    size = (max(8, int(round(roi.shape[1] * s))), max(8, int(round(roi.shape[0] * s))))
    roi = cv2.resize(roi, size, interpolation=cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA)
    roi_skin = cv2.resize(roi_skin.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    fitz = sample_fitzpatrick(rng) if fitz is None else float(fitz)
    extent = sample_extent(rng) if extent is None else float(extent)
    roi = recolour_skin(roi, roi_skin, fitz, rng)
    if uv:  # Wood's-lamp look: luminance with a violet-blue tint; darker skin absorbs more
        lum = roi.astype(np.float32).mean(axis=2, keepdims=True) / 255.0
        roi = np.clip(lum * UV_SKIN_RGB[None, None, :] * rng.uniform(1.2, 1.8), 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(roi_skin)
    midline = float((xs.min() + xs.max()) / 2) if xs.size else None
    label_w, colour_w = extent_weights(roi_skin, rng, extent, midline, _mask_hotspots(roi_skin))
    if label_w.max() > 0:
        target = UV_VITILIGO_RGB * rng.uniform(0.85, 1.05) if uv else sample_lesion_rgb(rng)
        out, lesion = paint_depigmentation(roi, roi_skin, rng, weight=colour_w, uv=uv,
                                           strength=float(rng.uniform(0.85, 1.0)), target_rgb=target,
                                           exposure=1.0, label_weight=label_w)
    else:
        out, lesion = roi.copy(), np.zeros(roi_skin.shape, bool)
    out = _photo_effects(out, roi_skin, rng, uv)
    out[~roi_skin] = 0
    return SyntheticSample(out, lesion & roi_skin, roi_skin, uv=uv,
                           meta={"source": name, "skin_type": skin_type_of(fitz),
                                 "fitzpatrick": fitz, "extent_target": extent})


def _photo_effects(image: np.ndarray, skin: np.ndarray, rng: np.random.Generator, uv: bool) -> np.ndarray:
    """Specular highlights, stray hair and a colour cast on a real-portrait ROI."""
    h, w = skin.shape
    ys, xs = np.nonzero(skin)
    if ys.size == 0:
        return image
    cx, cy = float(xs.mean()), float(ys.mean())
    ax, ay = float(xs.max() - xs.min()) / 2 + 1, float(ys.max() - ys.min()) / 2 + 1
    layout = SimpleNamespace(center=(cx, cy), axes=(ax, ay), brows=[])
    img = image.astype(np.float32)
    if rng.random() < 0.6:
        spec = _specular_map((h, w), layout, rng)  # type: ignore[arg-type]
        tint = np.array([255, 250, 245], np.float32) if not uv else np.array([225, 215, 255], np.float32)
        img = img + spec[..., None] * (tint[None, None, :] - img)
    if rng.random() < 0.4:
        hair, hair_rgb = _hair_layer((h, w), layout, rng)  # type: ignore[arg-type]
        if uv:
            hair_rgb = hair_rgb * 0.35 + np.array([10, 8, 25], np.float32)
        img = img + hair[..., None] * (hair_rgb[None, None, :] - img)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if not uv and rng.random() < 0.6:
        out = colour_cast(out, rng)
    return out


def generate_face_sample(rng: np.random.Generator, long_side: int = 384, uv_fraction: float = 0.3,
                         portrait_fraction: float = 0.35, uv: bool | None = None,
                         source: str | None = None, fitz: float | None = None,
                         extent: float | None = None) -> SyntheticSample:
    """One v2 training/evaluation face ROI; ``meta`` carries source, skin_type, uv.
    ``source``: "synthetic", "portrait" (either real portrait) or a name in PORTRAITS."""
    if uv is None:
        uv = bool(rng.random() < uv_fraction)
    if source is None:
        source = "portrait" if rng.random() < portrait_fraction else "synthetic"
    if source == "synthetic":
        s = synthetic_face_sample(rng, long_side, uv, fitz=fitz, extent=extent)
    else:
        s = portrait_sample(rng, long_side, uv, name=None if source == "portrait" else source,
                            fitz=fitz, extent=extent)
    s.meta["roi_long_side"] = int(long_side)
    return s


def extent_bin(percent: float) -> str:
    """Label of the extent bin (0-5, 5-25, 25-50, 50-95 %) that ``percent`` falls in."""
    for lo, hi in EXTENT_BINS:
        if percent < hi or hi == EXTENT_BINS[-1][1]:
            return f"{lo:g}-{hi:g}%"
    return f"{EXTENT_BINS[-1][0]:g}-{EXTENT_BINS[-1][1]:g}%"
