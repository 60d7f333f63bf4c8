"""When a facial F-Vitiligo or a close-up's vitiligo % should not be trusted, and why, in words.

The checks are the failure cases seen on real photographs (issue 10): several faces in one
photograph (before/after composites), a face small in the frame or an image too small to
resolve lesion borders, a low lesion/skin contrast (fair skin, faint lesions), and the
network disagreeing strongly with the plain colour rule on a face whose skin colours
clearly split in two (where that rule is reliable). Close-ups add little visible skin and
a background as light as the lesions (white walls and sheets were taken for vitiligo).
Thresholds live in ``models/configs/facial_vitiligo_quality.yaml`` (``QualityConfig``) and
``models/configs/vitiligo_lesion_quality.yaml`` (``CloseUpQualityConfig``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .config import CONFIG_DIR, load_yaml_config
from .metrics import f_vitiligo
from .skin_reference import colour_rule_mask, rgb_to_lab, skin_reference

DEFAULT_QUALITY_CONFIG = CONFIG_DIR / "facial_vitiligo_quality.yaml"


@dataclass
class QualityConfig:
    """Which face to analyse and when a result gets a quality flag."""

    face_rank: int = 0  # 0 = the largest face, 1 = the second largest, ...
    refine_face_edge: bool = True  # remove hair/background along the oval's edge (models.face_refine)
    min_face_area_fraction: float = 0.03  # face box / image area below this: "face small"
    min_image_side_px: int = 640  # longer image side below this: "image too small"
    min_face_height_px: int = 160  # face box height below this: "image too small"
    min_lesion_contrast_l: float = 6.0  # median L* lesion - skin below this: "low contrast"
    min_lesion_fraction_for_contrast: float = 0.005  # contrast judged only above this extent
    disagreement_points: float = 25.0  # |model - colour rule| F-Vitiligo above this ...
    clear_split_gap_l: float = 20.0  # ... when the skin's two L* clusters are this far apart
    analysis_max_side: int = 512  # checks run on a copy of the ROI at most this long


def load_quality_config(path: str | Path | None = None) -> QualityConfig:
    """The thresholds (default file in models/configs/)."""
    p = Path(path) if path is not None else DEFAULT_QUALITY_CONFIG
    return load_yaml_config(QualityConfig, p) if p.exists() else QualityConfig()


@dataclass(frozen=True)
class QualityFlag:
    """One reason not to trust the result: a stable key and a sentence for people."""

    key: str
    reason: str


@dataclass
class QualityReport:
    flags: list[QualityFlag] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    def as_dict(self) -> dict:
        return {"flagged": self.flagged, "reasons": [f.reason for f in self.flags],
                "flags": [f.key for f in self.flags], "values": self.values}


def _small(rgb: np.ndarray, masks: list[np.ndarray], max_side: int) -> tuple[np.ndarray, list[np.ndarray]]:
    h, w = rgb.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s >= 1.0:
        return rgb, masks
    size = (max(1, int(w * s)), max(1, int(h * s)))
    return (cv2.resize(rgb, size, interpolation=cv2.INTER_AREA),
            [cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool) for m in masks])


def assess_quality(image_hw: tuple[int, int], face_box_xyxy: tuple[int, int, int, int], faces_found: int,
                   roi_rgb: np.ndarray, roi_skin: np.ndarray, roi_lesion: np.ndarray,
                   cfg: QualityConfig | None = None) -> QualityReport:
    """Quality flags of one analysed face (ROI pixels, its skin and predicted lesion masks)."""
    cfg = cfg or QualityConfig()
    report = QualityReport()
    h, w = image_hw
    x0, y0, x1, y1 = face_box_xyxy
    face_h = max(0, y1 - y0)
    face_fraction = max(0, x1 - x0) * face_h / max(1, h * w)
    report.values.update({"faces_found": float(faces_found), "face_area_fraction": face_fraction,
                          "face_height_px": float(face_h)})
    if faces_found > 1:
        which = "largest" if cfg.face_rank == 0 else f"number {cfg.face_rank + 1} by size"
        report.flags.append(QualityFlag("several-faces", f"{faces_found} faces found; the {which} was analysed, "
                                                         "check that it is the patient's"))
    if face_fraction < cfg.min_face_area_fraction:
        report.flags.append(QualityFlag("face-small", f"the face fills only {100 * face_fraction:.1f} % of the "
                                                      "photograph; take it closer"))
    if max(h, w) < cfg.min_image_side_px or face_h < cfg.min_face_height_px:
        report.flags.append(QualityFlag("image-small", f"image {w}x{h} px with the face {face_h} px tall is too "
                                                       "small to resolve lesion borders"))
    _lesion_checks(report, roi_rgb, roi_skin, roi_lesion, cfg, "face")
    return report


def _lesion_checks(report: QualityReport, rgb: np.ndarray, skin: np.ndarray, lesion: np.ndarray,
                   cfg: "QualityConfig | CloseUpQualityConfig", where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Low lesion/skin contrast and model-vs-colour-rule disagreement (faces and close-ups alike).
    Returns the reduced (rgb, skin, lesion) the checks ran on."""
    rgb, (skin, lesion) = _small(np.asarray(rgb), [np.asarray(skin, bool), np.asarray(lesion, bool)],
                                 cfg.analysis_max_side)
    lesion = lesion & skin
    if not skin.any():
        return rgb, skin, lesion
    model_pct = f_vitiligo(lesion, skin)
    light = rgb_to_lab(rgb)[..., 0]
    normal = skin & ~lesion
    if lesion.sum() >= cfg.min_lesion_fraction_for_contrast * skin.sum() and normal.any():
        contrast = float(np.median(light[lesion]) - np.median(light[normal]))
        report.values["lesion_contrast_l"] = contrast
        if contrast < cfg.min_lesion_contrast_l:
            report.flags.append(QualityFlag("low-contrast", f"lesions are only {contrast:.1f} L* units lighter than "
                                                            "the surrounding skin; the outline is uncertain"))
    ref = skin_reference(rgb, skin)
    rule_pct = f_vitiligo(colour_rule_mask(rgb, skin, light=light), skin)
    report.values.update({"colour_rule_f_vitiligo": rule_pct, "model_f_vitiligo": model_pct})
    if ref is not None:
        report.values["skin_cluster_gap_l"] = ref.cluster_gap_l
        if ref.cluster_gap_l >= cfg.clear_split_gap_l and abs(rule_pct - model_pct) > cfg.disagreement_points:
            report.flags.append(QualityFlag("model-vs-colour-rule",
                                            f"the model measures {model_pct:.0f} % but the {where} skin's light/dark "
                                            f"split gives {rule_pct:.0f} %; review the overlay"))
    return rgb, skin, lesion


DEFAULT_CLOSEUP_QUALITY_CONFIG = CONFIG_DIR / "vitiligo_lesion_quality.yaml"


@dataclass
class CloseUpQualityConfig:
    """When a close-up's vitiligo % of visible skin gets a quality flag."""

    min_image_side_px: int = 320  # longer image side below this: "image too small"
    min_skin_fraction: float = 0.10  # visible skin below this share of the photograph: "little skin"
    light_background_fraction: float = 0.15  # light non-skin area above this share ...
    light_background_margin_l: float = 10.0  # ... "light" = L* within this of the lesions' median L* or above
    min_lesion_contrast_l: float = 6.0
    min_lesion_fraction_for_contrast: float = 0.005
    disagreement_points: float = 25.0
    clear_split_gap_l: float = 20.0
    analysis_max_side: int = 512


def load_closeup_quality_config(path: str | Path | None = None) -> CloseUpQualityConfig:
    p = Path(path) if path is not None else DEFAULT_CLOSEUP_QUALITY_CONFIG
    return load_yaml_config(CloseUpQualityConfig, p) if p.exists() else CloseUpQualityConfig()


def assess_closeup_quality(rgb: np.ndarray, skin: np.ndarray, lesion: np.ndarray,
                           cfg: CloseUpQualityConfig | None = None) -> QualityReport:
    """Quality flags of a close-up: too small, little skin, a light background next to the
    lesions (walls and sheets are the close-up model's known confusion), low contrast,
    disagreement with the colour rule."""
    cfg = cfg or CloseUpQualityConfig()
    report = QualityReport()
    h, w = np.asarray(rgb).shape[:2]
    if max(h, w) < cfg.min_image_side_px:
        report.flags.append(QualityFlag("image-small", f"image {w}x{h} px is too small to resolve lesion borders"))
    small_rgb, small_skin, small_lesion = _lesion_checks(report, rgb, skin, lesion, cfg, "visible")
    skin_fraction = float(small_skin.mean()) if small_skin.size else 0.0
    report.values["skin_fraction"] = skin_fraction
    if skin_fraction < cfg.min_skin_fraction:
        report.flags.append(QualityFlag("little-skin", f"visible skin covers only {100 * skin_fraction:.0f} % of the "
                                                       "photograph; the denominator is uncertain"))
    if small_lesion.any():
        light = rgb_to_lab(small_rgb)[..., 0]
        bright = ~small_skin & (light >= float(np.median(light[small_lesion])) - cfg.light_background_margin_l)
        share = float(bright.mean())
        report.values["light_background_fraction"] = share
        if share > cfg.light_background_fraction:
            report.flags.append(QualityFlag("light-background",
                                            f"a background as light as the lesions covers {100 * share:.0f} % of the "
                                            "photograph; check that none of it is counted as skin or vitiligo"))
    return report
