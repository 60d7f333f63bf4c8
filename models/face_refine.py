"""Refine the geometric face-skin mask where hair or background covers its edge.

The FaceMesh oval (``models.face``) is geometric, so depigmented skin can never fall out of
the F-Vitiligo denominator, but hair over the forehead or temples and, on turned faces,
background inside the oval's edge were counted as skin (and dark hair next to skin even
looked like a lighter patch's border). The paper removed them with a matting network; the
MediaPipe 0.10.21 wheel ships no hair model, only selfie (person/background)
segmentation, so this step uses:

* **hair**: pixels on the upper face (forehead, temples) near the oval's outer edge that
  are clearly *darker* than this person's pigmented skin (``models.skin_reference``) and
  connected to the edge;
* **background**: pixels in the same band that the shipped selfie-segmentation model is
  confident are not part of the person.

Everything else stays geometric. Depigmented skin is lighter than the pigmented reference,
so the hair rule can never remove it; the background rule is limited to the edge band and
to confident pixels, and the whole refinement is abandoned if it would remove more than
``max_removed_fraction`` of the face (then something else is wrong).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from .skin_reference import rgb_to_lab, skin_reference

log = logging.getLogger(__name__)


@dataclass
class FaceRefineConfig:
    edge_band: float = 0.10  # band width as a fraction of sqrt(face-oval area)
    hair_reach: float = 2.5  # hair connected to the edge is followed this many bands inwards
    hair_margin_fraction: float = 0.33  # hair: darker than pigmented skin by this share of its L* ...
    hair_margin_min_l: float = 8.0  # ... and at least this many L* units (dark skin: dark hair is close)
    hair_spread_factor: float = 4.0  # ... and this many robust spreads of the skin's L*
    background_max_person_prob: float = 0.05  # background: selfie model's person prob below this
    max_removed_fraction: float = 0.15  # refinement abandoned above this share of the face
    work_max_side: int = 512  # computed on a copy this long, applied at full resolution


@dataclass(frozen=True)
class RefinedSkin:
    skin_mask: np.ndarray  # bool, same size as the input mask
    hair_pixels: int
    background_pixels: int
    applied: bool


class FaceSkinRefiner:
    """Build once per process (loads the selfie-segmentation model on first use)."""

    def __init__(self, config: FaceRefineConfig | None = None) -> None:
        self.config = config or FaceRefineConfig()
        self._selfie = None

    def _person_probability(self, rgb: np.ndarray) -> np.ndarray | None:
        if self._selfie is None:
            try:
                import mediapipe as mp

                self._selfie = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
            except Exception as exc:  # noqa: BLE001 - refinement is optional: keep the geometry
                log.warning("selfie segmentation unavailable (%s); background refinement skipped", exc)
                self._selfie = False
        if self._selfie is False:
            return None
        result = self._selfie.process(np.ascontiguousarray(rgb))
        mask = getattr(result, "segmentation_mask", None)
        return None if mask is None else np.asarray(mask, np.float32)

    def refine(self, roi_rgb: np.ndarray, roi_skin: np.ndarray) -> RefinedSkin:
        """The skin mask minus hair and background along the oval's edge (ROI pixels)."""
        cfg = self.config
        skin = np.asarray(roi_skin, bool)
        h, w = skin.shape
        if skin.sum() < 100:
            return RefinedSkin(skin, 0, 0, False)
        s = min(1.0, cfg.work_max_side / max(h, w))
        size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
        rgb = cv2.resize(np.asarray(roi_rgb), size, interpolation=cv2.INTER_AREA) if s < 1 else np.asarray(roi_rgb)
        small = cv2.resize(skin.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool) if s < 1 else skin
        oval = _filled(small)
        band_px = max(2.0, cfg.edge_band * float(np.sqrt(oval.sum())))
        inside = cv2.distanceTransform(np.pad(oval, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
        band = small & (inside <= band_px)
        hair = np.zeros_like(small)
        # Reference from the interior only: hair along the edge would otherwise become
        # the "pigmented" cluster itself.
        interior = small & ~band
        ref = skin_reference(rgb, interior if interior.sum() >= 200 else small)
        if ref is not None:
            light = rgb_to_lab(rgb)[..., 0]
            margin = max(cfg.hair_margin_min_l, cfg.hair_margin_fraction * ref.lab[0],
                         cfg.hair_spread_factor * ref.spread_l)
            dark = light < ref.lab[0] - margin
            # strands reach further in than the band: follow them from the edge; only on
            # the upper face (forehead, temples), where the jaw's shadow cannot pass for hair
            upper = np.zeros_like(small)
            upper[: int(np.nonzero(oval)[0].mean())] = True
            candidates = small & dark & upper & (inside <= cfg.hair_reach * band_px)
            edge = small & (inside <= 1.5)
            hair = _connected_to(candidates, edge)
        background = np.zeros_like(small)
        person = self._person_probability(rgb)
        if person is not None and person.shape == small.shape:
            background = band & (person < cfg.background_max_person_prob)
        removed = (hair | background) & small
        if removed.sum() > cfg.max_removed_fraction * small.sum():
            log.info("face-edge refinement would remove %.0f %% of the face; kept the geometric mask",
                     100 * removed.sum() / small.sum())
            return RefinedSkin(skin, 0, 0, False)
        if not removed.any():
            return RefinedSkin(skin, 0, 0, True)
        def upsample(m: np.ndarray) -> np.ndarray:
            if s >= 1:
                return m & skin
            return cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool) & skin

        full_hair = upsample(hair & small)
        if ref is not None and s < 1 and full_hair.any():  # resampling must not take lighter pixels with it
            ys, xs = np.nonzero(full_hair)
            light_full = rgb_to_lab(np.asarray(roi_rgb)[ys, xs][:, None, :])[:, 0, 0]
            keep = light_full >= ref.lab[0]
            full_hair[ys[keep], xs[keep]] = False
        full = full_hair | upsample(background & small & ~hair)
        refined = skin & ~full
        area = 1.0 / (s * s)
        return RefinedSkin(refined, int(round(hair.sum() * area)), int(round((background & ~hair).sum() * area)), True)


def _filled(mask: np.ndarray) -> np.ndarray:
    """The mask with its holes (eyes, brows, lips) filled: the face oval."""
    m = mask.astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros_like(m)
    cv2.drawContours(out, contours, -1, 1, -1)
    return out.astype(bool)


def _connected_to(candidates: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Connected components of ``candidates`` that touch ``seeds``."""
    n, labels = cv2.connectedComponents(candidates.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(candidates)
    touching = np.unique(labels[seeds & candidates])
    touching = touching[touching > 0]
    return np.isin(labels, touching)
