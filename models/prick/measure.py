"""Skin prick reactions from the two masks: grouping, diameters, areas, ratio; Bland-Altman.

Conventions (documented in the app README section and the model card):

- Erythema is the whole erythematous reaction, wheal included (its outer border, what the
  paper's experts outlined); the wheal lies inside it. Erythema area and diameters are
  measured on that region, so wheal/erythema area ratio = wheal area / erythema area <= 1.
- A reaction is a connected component (8-connectivity) of the erythema mask. Two halos
  that touch form one component; when it holds two or more separate wheals it is split
  between them by a watershed of the distance transform seeded with the wheals.
- Mean diameter = (longest diameter + the diameter perpendicular to it) / 2, the clinical
  convention. Longest diameter = the largest distance between two points of the region's
  outline (pixel corners, so a 40x30 pixel rectangle measures 50 along its diagonal);
  perpendicular diameter = the region's extent (caliper width) at right angles to it.
  With a Pixel Spacing the outline is scaled to mm first (non-square pixels handled).
- Reactions are numbered in reading order: rows top to bottom (a new row starts when a
  centre lies lower than half the median reaction diameter below the row's first one),
  left to right within a row.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Diameters:
    longest: float
    perpendicular: float

    @property
    def mean(self) -> float:
        return (self.longest + self.perpendicular) / 2


def _corner_points(mask: np.ndarray) -> np.ndarray:
    """(N, 2) x, y pixel-corner coordinates of the outer boundary pixels of ``mask``."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.zeros((0, 2), np.float64)
    centres = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    offsets = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    return (centres[:, None, :] + offsets[None]).reshape(-1, 2)


def diameters(mask: np.ndarray, spacing: tuple[float, float] | None = None) -> Diameters:
    """Longest diameter and perpendicular extent of a mask, in pixels or mm.

    ``spacing`` is (row, column) in mm per pixel (DICOM Pixel Spacing order).
    """
    linear = np.diag([spacing[1], spacing[0]]) if spacing is not None else None
    return diameters_linear(mask, linear)


def diameters_linear(mask: np.ndarray, linear: np.ndarray | None = None) -> Diameters:
    """As :func:`diameters`, the outline first mapped by a 2x2 matrix (pixel x, y -> mm):
    a fitted panel grid's inverse, which undoes rotation, scale and an oblique view's tilt."""
    pts = _corner_points(mask)
    if len(pts) == 0:
        return Diameters(0.0, 0.0)
    if linear is not None:
        pts = pts @ np.asarray(linear, np.float64).T
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    if len(hull) < 2:
        return Diameters(0.0, 0.0)
    d = hull[:, None, :] - hull[None, :, :]
    dist2 = (d**2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(dist2)), dist2.shape)
    longest = float(np.sqrt(dist2[i, j]))
    u = (hull[j] - hull[i]) / longest
    proj = hull @ np.array([-u[1], u[0]])
    return Diameters(longest, float(proj.max() - proj.min()))


@dataclass
class Reaction:
    """One prick-site reaction: masks cropped to ``bbox`` = (x0, y0, x1, y1) (exclusive)."""

    bbox: tuple[int, int, int, int]
    erythema: np.ndarray  # bool, whole reaction (wheal included)
    wheal: np.ndarray  # bool, inside erythema
    centroid_xy: tuple[float, float]

    @property
    def erythema_pixels(self) -> int:
        return int(np.count_nonzero(self.erythema))

    @property
    def wheal_pixels(self) -> int:
        return int(np.count_nonzero(self.wheal))

    @property
    def ratio(self) -> float:
        """Wheal area / erythema area (the erythema includes the wheal)."""
        return self.wheal_pixels / self.erythema_pixels if self.erythema_pixels else 0.0

    def contains(self, xy) -> bool:
        """Whether the point (x, y), in photograph pixels, lies on the reaction's erythema."""
        x0, y0, x1, y1 = self.bbox
        x, y = int(round(xy[0])), int(round(xy[1]))
        return x0 <= x < x1 and y0 <= y < y1 and bool(self.erythema[y - y0, x - x0])

    def outline_xy(self) -> np.ndarray:
        """(N, 2) x, y closed outline of the erythema (equal to the wheal's without a halo)."""
        contours, _ = cv2.findContours(self.erythema.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        contour = max(contours, key=cv2.contourArea)
        contour = cv2.approxPolyDP(contour, 0.5, True).reshape(-1, 2).astype(np.float64)
        if len(np.unique(contour, axis=0)) < 3:  # a one- or two-pixel-wide region: use its box
            ys, xs = np.nonzero(self.erythema)
            x0, x1, y0, y1 = xs.min() - 0.5, xs.max() + 0.5, ys.min() - 0.5, ys.max() + 0.5
            contour = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        return contour + np.array([self.bbox[0], self.bbox[1]], np.float64)

    def full_masks(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        x0, y0, x1, y1 = self.bbox
        ery, wh = np.zeros(shape, bool), np.zeros(shape, bool)
        ery[y0:y1, x0:x1] = self.erythema
        wh[y0:y1, x0:x1] = self.wheal
        return ery, wh


def _split_by_wheals(component: np.ndarray, wheal: np.ndarray, min_wheal_px: int,
                     max_side: int = 512) -> list[np.ndarray]:
    """Parts of one erythema component, one per separate wheal (watershed), or itself.

    A component over ``max_side`` pixels is split on a grid of f x f blocks (f the smallest
    integer that brings it under ``max_side``): the masks come from the net's input (768 px
    for the whole photograph), so the full-resolution watershed of a merged pair of flares in
    a 12 MP photograph (0.6 s) resolved nothing the net drew."""
    n, markers, stats, _ = cv2.connectedComponentsWithStats(wheal.astype(np.uint8), connectivity=8)
    keep = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= min_wheal_px]
    if len(keep) < 2:
        return [component]
    from skimage.segmentation import watershed

    h, w = component.shape
    f = max(1, int(np.ceil(max(h, w) / max_side)))
    hs, ws = -(-h // f), -(-w // f)
    padded = np.zeros((hs * f, ws * f), bool)
    padded[:h, :w] = component
    blocks = padded.reshape(hs, f, ws, f).any(axis=(1, 3))  # every block that holds the component
    seeds = np.zeros((hs, ws), np.int32)
    for new, k in enumerate(keep, start=1):
        ys, xs = np.nonzero(markers == k)
        seeds[ys // f, xs // f] = new
    distance = cv2.distanceTransform(blocks.astype(np.uint8), cv2.DIST_L2, 5)
    regions = watershed(-distance, seeds, mask=blocks)
    if f > 1:
        regions = np.repeat(np.repeat(regions, f, axis=0), f, axis=1)[:h, :w]
    return [(regions == k) & component for k in range(1, len(keep) + 1)]


def find_reactions(erythema: np.ndarray, wheal: np.ndarray, min_area_px: int = 1) -> list[Reaction]:
    """Reactions in reading order. ``erythema`` may or may not include the wheal already."""
    erythema = np.asarray(erythema, bool) | np.asarray(wheal, bool)
    wheal = np.asarray(wheal, bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(erythema.astype(np.uint8), connectivity=8)
    reactions: list[Reaction] = []
    min_wheal_px = max(1, min_area_px // 4)
    for k in range(1, n):
        if stats[k, cv2.CC_STAT_AREA] < min_area_px:
            continue
        x, y, w, h = (int(v) for v in stats[k, :4])
        comp = labels[y:y + h, x:x + w] == k
        wh = wheal[y:y + h, x:x + w] & comp
        for part in _split_by_wheals(comp, wh, min_wheal_px):
            if np.count_nonzero(part) < min_area_px:
                continue
            ys, xs = np.nonzero(part)
            py0, py1, px0, px1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            reactions.append(Reaction(
                bbox=(x + int(px0), y + int(py0), x + int(px1), y + int(py1)),
                erythema=part[py0:py1, px0:px1].copy(),
                wheal=(wh & part)[py0:py1, px0:px1].copy(),
                centroid_xy=(float(xs.mean() + x), float(ys.mean() + y)),
            ))
    return reading_order(reactions)


def _hull(mask: np.ndarray) -> np.ndarray | None:
    """The region's convex hull (points), None for an empty mask."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.convexHull(np.concatenate(contours)) if contours else None


def solidity(mask: np.ndarray) -> float:
    """Area / convex hull area: ~0.9 for a flare or wheal, low for pen strokes and hairs."""
    hull = _hull(mask)
    if hull is None:
        return 0.0
    return float(np.count_nonzero(mask)) / max(1.0, float(cv2.contourArea(hull)) + 0.5 * cv2.arcLength(hull, True) + 1)


def elongation(mask: np.ndarray) -> float:
    """Major / minor axis of the region's second moments: ~1 for a flare (~1.5 seen
    obliquely), large for strokes and for shading along the arm's edge."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 3:
        return 1.0
    eig = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(np.float64)))
    return float(np.sqrt(max(eig[1], 1e-9) / max(eig[0], 1e-9)))


def drop_strokes(reactions: list[Reaction], min_solidity: float = 0.78,
                 max_elongation: float = 3.0) -> list[Reaction]:
    """Drop flare-only regions shaped like pen strokes or hairs (not compact), or stretched
    along the arm's edge (elongated): the net mistakes the numbers written beside the sites,
    and the shading where the arm meets a skin-coloured background, for faint erythema.
    Regions with a wheal are kept whatever their shape (merged flares, pseudopods)."""
    return [r for r in reactions if r.wheal_pixels
            or (solidity(r.erythema) >= min_solidity and elongation(r.erythema) <= max_elongation)]


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(filled, contours, -1, 1, -1)
    return filled.astype(bool)


def _skin_colour(samples: np.ndarray, keep: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Median colour and robust SD (per channel) of the ring around a reaction, from the
    ``keep`` fraction of its pixels closest to the median: where the arm ends, the ring also
    crosses the sheet or the wall behind it, which is not this person's skin."""
    centre = np.median(samples, axis=0)
    distance = np.linalg.norm(samples - centre, axis=1)
    near = samples[distance <= np.quantile(distance, keep)]
    centre = np.median(near, axis=0)
    return centre, 1.4826 * np.median(np.abs(near - centre), axis=0) + 0.5


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A boolean mask at (width, height), by majority of the (bilinear) covering pixels."""
    if mask.shape[1::-1] == tuple(size):
        return np.asarray(mask, bool)
    return cv2.resize(mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_LINEAR) >= 128


def _shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` at (width, height): colour by area averaging, masks by majority."""
    if image.dtype == bool:
        return resize_mask(image, size)
    if image.shape[1::-1] == tuple(size):
        return image
    return cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)


def _convex_hull(mask: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape, np.uint8)
    hull = _hull(mask)
    if hull is not None:
        cv2.fillConvexPoly(out, hull, 1)
    return out.astype(bool)


def _grow_flare(rgb: np.ndarray, mine: np.ndarray, wheal: np.ndarray, others: np.ndarray, req: float,
                config) -> np.ndarray | None:
    """The flare grown from ``mine`` (see ``refine_flare_edges``), in the window's pixels, or
    None where the skin ring is too small or the flare too faint to tell from the skin."""
    reach = config.reach * req + 2
    ring_width = max(4.0, 0.3 * req)
    lab = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32), (0, 0), max(1.0, req / 25))
    distance = cv2.distanceTransform((~mine).astype(np.uint8), cv2.DIST_L2, 5)
    ring = (distance > reach + 1) & (distance < reach + 1 + ring_width) & ~others
    halo = mine & ~wheal
    if np.count_nonzero(ring) < 30 or not halo.any():
        return None
    skin, skin_sd = _skin_colour(lab[ring])
    flare = np.median(lab[halo], axis=0) - skin  # this flare's colour change
    if flare[1] < config.min_contrast_sd * skin_sd[1]:  # a* (redness) hardly above the skin's
        return None
    change = lab - skin
    along = change @ flare / float(flare @ flare)
    sideways = np.linalg.norm(change - along[..., None] * flare, axis=-1) / float(np.linalg.norm(flare))
    candidate = mine | ((along >= config.half_contrast) & (sideways <= config.max_off_axis)
                        & (distance <= reach) & ~others)
    if solidity(mine) < config.min_solidity:  # ragged: fill its gaps, never grow past its outline
        candidate &= _convex_hull(mine)
    _, parts = cv2.connectedComponents(candidate.astype(np.uint8), connectivity=8)
    touching = np.unique(parts[mine])
    return np.isin(parts, touching[touching > 0])


def refine_flare_edges(reactions: list[Reaction], rgb: np.ndarray, config) -> list[Reaction]:
    """Each reaction's flare taken out to where its redness falls to ``config.half_contrast``
    of its own contrast against this arm's skin (``models.prick.config.FlareEdgeConfig`` says
    why and how far). Wheals, reactions without a flare of their own (under ~30 pixels of
    halo) and flares too faint against the skin are kept as the net read them; a ragged
    region (a part-read, or a flare run together with a red sheet along the arm) only has its
    gaps filled; a flare never grows into another reaction."""
    h, w = rgb.shape[:2]
    owner = np.zeros((h, w), np.int32)
    for k, r in enumerate(reactions, start=1):
        x0, y0, x1, y1 = r.bbox
        owner[y0:y1, x0:x1][r.erythema] = k
    out = []
    for k, r in enumerate(reactions, start=1):
        req = np.sqrt(r.erythema_pixels / np.pi)  # equivalent radius, px
        if np.count_nonzero(r.erythema & ~r.wheal) < 30 or req < 4:
            out.append(r)
            continue
        f = max(1.0, req / config.read_radius_px)  # read on a coarser grid (config says why)
        x0, y0, x1, y1 = r.bbox
        pad = int(np.ceil((config.reach + 0.3) * req + 9 * f))  # reach, a gap and the skin ring beyond it
        X0, Y0, X1, Y1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
        mine, wheal = np.zeros((Y1 - Y0, X1 - X0), bool), np.zeros((Y1 - Y0, X1 - X0), bool)
        mine[y0 - Y0:y1 - Y0, x0 - X0:x1 - X0] = r.erythema
        wheal[y0 - Y0:y1 - Y0, x0 - X0:x1 - X0] = r.wheal
        others = (owner[Y0:Y1, X0:X1] > 0) & (owner[Y0:Y1, X0:X1] != k)
        size = (max(1, int(round((X1 - X0) / f))), max(1, int(round((Y1 - Y0) / f))))
        grown_small = _grow_flare(_shrink(rgb[Y0:Y1, X0:X1], size), _shrink(mine, size), _shrink(wheal, size),
                                  _shrink(others, size), req / f, config)
        if grown_small is None:
            out.append(r)
            continue
        grown = _fill_holes(mine | _shrink(grown_small, (X1 - X0, Y1 - Y0))) & ~others
        ys, xs = np.nonzero(grown)
        by0, by1, bx0, bx1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        out.append(Reaction(bbox=(X0 + int(bx0), Y0 + int(by0), X0 + int(bx1), Y0 + int(by1)),
                            erythema=grown[by0:by1, bx0:bx1].copy(),
                            wheal=(wheal & grown)[by0:by1, bx0:bx1].copy(), centroid_xy=r.centroid_xy))
    return out


def reactions_from_masks(erythema: np.ndarray, wheal: np.ndarray, model_scale: float,
                         min_reaction_model_px: int = 12, rgb: np.ndarray | None = None,
                         flare_edge=None) -> list[Reaction]:
    """The reactions the app measures from the net's masks: specks under
    ``min_reaction_model_px`` pixels of the model's input dropped, pen strokes dropped, flare
    edges refined from the photograph when ``flare_edge`` (``FlareEdgeConfig``) is enabled."""
    min_px = max(1, int(round(min_reaction_model_px / (model_scale * model_scale))))
    reactions = drop_strokes(find_reactions(erythema, wheal, min_area_px=min_px))
    if rgb is not None and flare_edge is not None and flare_edge.enabled:
        reactions = refine_flare_edges(reactions, np.asarray(rgb), flare_edge)
    return reactions


def merge_flare_fragments(reactions: list[Reaction], marks_xy, max_gap_px: float) -> list[Reaction]:
    """Join each region of redness without a wheal or a prick mark of its own to the
    reaction with a wheal whose flare it nearly touches (within ``max_gap_px``): a large
    faint flare comes out of the net in pieces, and prick sites are centimetres apart, so a
    wheal-less piece beside a reaction is part of its flare, not a reaction of its own."""
    def has_mark(r: Reaction) -> bool:
        return any(r.contains(m) for m in (marks_xy or []))

    anchors = [r for r in reactions if r.wheal.any()]
    gap = int(np.ceil(max_gap_px))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))
    joined: dict[int, list[Reaction]] = {}
    out = []
    for r in reactions:
        target = None
        if not r.wheal.any() and not has_mark(r):
            x0, y0, x1, y1 = r.bbox
            for j, a in enumerate(anchors):
                ax0, ay0, ax1, ay1 = a.bbox
                if ax0 > x1 + gap or ax1 < x0 - gap or ay0 > y1 + gap or ay1 < y0 - gap:
                    continue
                ux0, uy0 = min(x0, ax0) - gap, min(y0, ay0) - gap
                ux1, uy1 = max(x1, ax1) + gap, max(y1, ay1) + gap
                mine = np.zeros((uy1 - uy0, ux1 - ux0), np.uint8)
                mine[y0 - uy0:y1 - uy0, x0 - ux0:x1 - ux0] = r.erythema
                theirs = np.zeros_like(mine)
                theirs[ay0 - uy0:ay1 - uy0, ax0 - ux0:ax1 - ux0] = a.erythema
                if (cv2.dilate(mine, kernel) & theirs).any():
                    target = j
                    break
        if target is None:
            out.append(r)
        else:
            joined.setdefault(target, []).append(r)
    merged = []
    for r in out:
        j = next((j for j, a in enumerate(anchors) if a is r), None)
        parts = [r] + joined.get(j, []) if j is not None else [r]
        if len(parts) == 1:
            merged.append(r)
            continue
        x0, y0 = min(p.bbox[0] for p in parts), min(p.bbox[1] for p in parts)
        x1, y1 = max(p.bbox[2] for p in parts), max(p.bbox[3] for p in parts)
        ery, wh = np.zeros((y1 - y0, x1 - x0), bool), np.zeros((y1 - y0, x1 - x0), bool)
        for p in parts:
            px0, py0, px1, py1 = p.bbox
            ery[py0 - y0:py1 - y0, px0 - x0:px1 - x0] |= p.erythema
            wh[py0 - y0:py1 - y0, px0 - x0:px1 - x0] |= p.wheal
        ys, xs = np.nonzero(ery)
        merged.append(Reaction(bbox=(x0, y0, x1, y1), erythema=ery, wheal=wh,
                               centroid_xy=(float(xs.mean() + x0), float(ys.mean() + y0))))
    return merged


def reading_order(reactions: list[Reaction]) -> list[Reaction]:
    """Rows top to bottom, left to right in each row (see the module docstring)."""
    if not reactions:
        return []
    sizes = [2 * np.sqrt(r.erythema_pixels / np.pi) for r in reactions]
    tolerance = 0.5 * float(np.median(sizes))
    by_y = sorted(reactions, key=lambda r: r.centroid_xy[1])
    rows: list[list[Reaction]] = [[by_y[0]]]
    for r in by_y[1:]:
        if r.centroid_xy[1] - rows[-1][0].centroid_xy[1] > tolerance:
            rows.append([r])
        else:
            rows[-1].append(r)
    return [r for row in rows for r in sorted(row, key=lambda r: r.centroid_xy[0])]


def bland_altman(predicted, reference) -> dict[str, float]:
    """Mean difference (predicted - reference), its SD (n-1) and the 95 % limits of agreement."""
    p, r = np.asarray(predicted, np.float64), np.asarray(reference, np.float64)
    if p.shape != r.shape or p.ndim != 1 or len(p) < 2:
        raise ValueError("bland_altman needs two 1-D arrays of the same length >= 2")
    diff = p - r
    mean_diff, sd = float(diff.mean()), float(diff.std(ddof=1))
    return {"n": int(len(p)), "mean_difference": mean_diff, "sd_difference": sd,
            "loa_lower": mean_diff - 1.96 * sd, "loa_upper": mean_diff + 1.96 * sd}
