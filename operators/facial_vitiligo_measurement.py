"""Step 5: F-Vitiligo per view, areas, and what the SEG and SR will carry.

F-Vitiligo = vitiligo pixels inside the face-skin mask / face-skin pixels, in percent
(SEEDS.md, A). Areas are in pixels, and in mm2 when the photograph carries Pixel Spacing.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np
from monai.deploy.core import Fragment

from dicom import codes
from dicom.seg import SegmentSpec
from dicom.sr import NumericMeasurement, QualitativeFinding
from models.face import FaceMaskMethod, FaceSkinResult, View
from models.metrics import f_vitiligo

from .base import StepOperator
from .cases import MeasurementGroupResult, PhotoCase, SegmentResult
from .lesion_segmentation import full_resolution

FACE_SKIN_SEGMENT = SegmentSpec(
    label="Skin of face",
    category=codes.TISSUE,
    property_type=codes.SKIN_OF_FACE,
    color_rgb=(80, 160, 255),
)
VITILIGO_SEGMENT = SegmentSpec(
    label="Vitiligo",
    category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
    property_type=codes.VITILIGO,
    anatomic_region=codes.SKIN_OF_FACE,
    color_rgb=(255, 60, 200),
)
_VIEW_CODES = {View.LEFT: codes.VIEW_LEFT, View.FRONTAL: codes.VIEW_FRONTAL, View.RIGHT: codes.VIEW_RIGHT}
_METHOD_CODES = {FaceMaskMethod.FACEMESH: codes.MASK_FACEMESH, FaceMaskMethod.BOX_ELLIPSE: codes.MASK_RETINAFACE_ELLIPSE}


def declared_view(dataset) -> View | None:
    """The view the modality recorded (View Code Sequence, Image Laterality, descriptions)."""
    texts: list[str] = []
    for item in getattr(dataset, "ViewCodeSequence", []) or []:
        texts.append(str(getattr(item, "CodeMeaning", "")))
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(getattr(dataset, keyword, "") or "").upper()
        if value == "L":
            return View.LEFT
        if value == "R":
            return View.RIGHT
    texts += [str(getattr(dataset, k, "") or "") for k in ("ImageComments", "SeriesDescription")]
    for text in texts:
        t = text.lower()
        if "left" in t:
            return View.LEFT
        if "right" in t:
            return View.RIGHT
        if "frontal" in t or "front" in t or "anterior" in t:
            return View.FRONTAL
    return None


class FacialVitiligoMeasurementStep:
    step_name = "F-Vitiligo measurement"

    def process(self, case: PhotoCase) -> None:
        face: FaceSkinResult = case.findings["face"]
        lesion_roi: np.ndarray = case.findings["lesion_roi"]
        x0, y0, x1, y1 = face.roi
        skin_roi = face.skin_mask[y0:y1, x0:x1]
        face_px = int(np.count_nonzero(skin_roi))
        vitiligo_px = int(np.count_nonzero(lesion_roi & skin_roi))
        percent = f_vitiligo(lesion_roi, skin_roi)
        view = declared_view(case.photo.dataset)
        view_source = "dicom"
        if view is None:
            view, view_source = face.estimated_view, "estimated"
        spacing = case.photo.pixel_spacing_mm
        px_area_mm2 = float(spacing[0] * spacing[1]) if spacing else None

        measurements = [
            NumericMeasurement(name=codes.F_VITILIGO, value=round(percent, 4), unit=codes.PERCENT),
        ]
        if px_area_mm2 is None:
            measurements += [
                NumericMeasurement(codes.VITILIGO_AREA, float(vitiligo_px), codes.PIXELS),
                NumericMeasurement(codes.FACE_SKIN_AREA, float(face_px), codes.PIXELS),
            ]
        else:
            measurements += [
                NumericMeasurement(codes.VITILIGO_AREA, round(vitiligo_px * px_area_mm2, 3), codes.SQUARE_MILLIMETER),
                NumericMeasurement(codes.FACE_SKIN_AREA, round(face_px * px_area_mm2, 3), codes.SQUARE_MILLIMETER),
            ]
        case.groups.append(
            MeasurementGroupResult(
                outline_xy=face.outline_xy,
                tracking_label=f"Face, {view.value} view",
                finding=codes.VITILIGO,
                finding_site=codes.SKIN_OF_FACE,
                measurements=measurements,
                qualitative=[
                    QualitativeFinding(codes.PHOTOGRAPH_VIEW, _VIEW_CODES[view]),
                    QualitativeFinding(codes.FACE_SKIN_MASK_METHOD, _METHOD_CODES[face.method]),
                ],
            )
        )
        shape = face.skin_mask.shape
        case.segments = [
            SegmentResult(FACE_SKIN_SEGMENT, face.skin_mask),
            SegmentResult(VITILIGO_SEGMENT, full_resolution(lesion_roi, face.roi, shape)),
        ]
        case.summary.update(
            {
                "view": view.value,
                "view_source": view_source,
                "f_vitiligo_percent": percent,
                "vitiligo_pixels": vitiligo_px,
                "face_skin_pixels": face_px,
                "vitiligo_mm2": None if px_area_mm2 is None else vitiligo_px * px_area_mm2,
                "face_skin_mm2": None if px_area_mm2 is None else face_px * px_area_mm2,
                "face_mask_method": face.method.value,
                "faces_found": face.faces_found,
            }
        )


    def finish(self, cases: list[PhotoCase]) -> None:
        """The visit's F-Vitiligo: the views of one series pooled (sum of pixels, not mean of %)."""
        by_series: dict[str, list[PhotoCase]] = defaultdict(list)
        for case in cases:
            if case.ok and "face_skin_pixels" in case.summary:
                by_series[case.photo.series_instance_uid].append(case)
        for series_cases in by_series.values():
            if len(series_cases) < 2:
                continue
            face = sum(c.summary["face_skin_pixels"] for c in series_cases)
            vitiligo = sum(c.summary["vitiligo_pixels"] for c in series_cases)
            visit = 100.0 * vitiligo / face if face else 0.0
            pooled = NumericMeasurement(name=codes.F_VITILIGO_VISIT, value=round(visit, 4), unit=codes.PERCENT)
            for case in series_cases:
                case.summary["visit_f_vitiligo_percent"] = visit
                case.summary["visit_views"] = len(series_cases)
                case.groups = [
                    dataclasses.replace(g, measurements=[*g.measurements, pooled]) for g in case.groups
                ]


class FacialVitiligoMeasurementOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, **kwargs) -> None:
        super().__init__(fragment, *args, step=FacialVitiligoMeasurementStep(), **kwargs)
