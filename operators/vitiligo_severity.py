"""Close-up vitiligo: lesion area % of visible skin, lesion count and colour severity.

Severity (SEEDS.md B) = colour difference between the lesions and the surrounding normal
skin: the paper's RGB distance of the means and CIEDE2000 of the mean CIELAB colours
(``models.lesion.severity``). One SR group (TID 1410) per photograph whose SCOORD is the
convex hull of the lesions (with no lesion: the visible-skin outline drawn 10 % inside
its centroid, so a viewer's label stays on screen when the skin fills the photograph);
five NUMs, the most a viewer such as OHIF 3.13 lists per group: area % of visible skin,
lesion area, lesion count, RGB difference, CIEDE2000. The visible-skin area itself is in
the SEG ("Skin" segment) and results.json. SEG segments "Skin" and "Vitiligo".
"""

from __future__ import annotations

import numpy as np
from monai.deploy.core import Fragment

from dicom import codes
from dicom.seg import SegmentSpec
from dicom.sr import NumericMeasurement
from models.lesion.severity import measure

from .base import StepOperator
from .cases import MeasurementGroupResult, PhotoCase, SegmentResult

SKIN_SEGMENT = SegmentSpec(
    label="Skin",
    category=codes.TISSUE,
    property_type=codes.SKIN,
    color_rgb=(80, 160, 255),
)
VITILIGO_SEGMENT = SegmentSpec(
    label="Vitiligo",
    category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
    property_type=codes.VITILIGO,
    anatomic_region=codes.SKIN,
    color_rgb=(255, 60, 200),
)


def _site_label(dataset) -> str:
    """'Close-up skin' plus the body part the modality recorded, if any."""
    part = str(getattr(dataset, "BodyPartExamined", "") or "").strip()
    return f"Close-up skin, {part.lower()}"[:64] if part and part.upper() != "SKIN" else "Close-up skin"


class VitiligoSeverityStep:
    step_name = "vitiligo severity"

    def __init__(self, min_lesion_fraction: float = 0.001) -> None:
        self.min_lesion_fraction = min_lesion_fraction

    def process(self, case: PhotoCase) -> None:
        photo = case.photo
        skin: np.ndarray = case.findings["skin_mask"]
        result = measure(photo.pixels, skin, case.findings["lesion_mask"], self.min_lesion_fraction)
        colour = not photo.is_monochrome and result.rgb_difference is not None
        spacing = photo.pixel_spacing_mm
        px_mm2 = float(spacing[0] * spacing[1]) if spacing else None
        h, w = skin.shape
        outline = result.lesion_hull_xy
        if outline is None:
            skin_outline = result.skin_outline_xy
            if skin_outline is None:
                skin_outline = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
            centre = skin_outline.mean(0)
            outline = centre + 0.9 * (skin_outline - centre)

        if px_mm2 is None:
            area = NumericMeasurement(codes.VITILIGO_AREA, float(result.lesion_pixels), codes.PIXELS)
        else:
            area = NumericMeasurement(codes.VITILIGO_AREA, round(result.lesion_pixels * px_mm2, 3), codes.SQUARE_MILLIMETER)
        measurements = [
            NumericMeasurement(codes.VITILIGO_SKIN_PERCENT, round(result.lesion_percent, 4), codes.PERCENT),
            area,
            NumericMeasurement(codes.VITILIGO_LESION_COUNT, float(result.lesion_count), codes.LESION_COUNT_UNIT),
        ]
        if colour:
            measurements += [
                NumericMeasurement(codes.VITILIGO_RGB_DIFFERENCE, round(result.rgb_difference, 4), codes.NO_UNITS),
                NumericMeasurement(codes.VITILIGO_DELTA_E2000, round(result.delta_e2000, 4), codes.NO_UNITS),
            ]
        case.groups.append(
            MeasurementGroupResult(
                outline_xy=outline,
                tracking_label=_site_label(photo.dataset),
                finding=codes.VITILIGO,
                finding_site=codes.SKIN,
                measurements=measurements,
            )
        )
        case.segments = [SegmentResult(SKIN_SEGMENT, skin), SegmentResult(VITILIGO_SEGMENT, result.lesion_mask)]
        case.summary.update(
            {
                "lesion_percent_of_skin": result.lesion_percent,
                "lesion_count": result.lesion_count,
                "rgb_difference": result.rgb_difference if colour else None,
                "delta_e2000": result.delta_e2000 if colour else None,
                "severity_reference": result.reference if colour else "none (monochrome or no lesion)",
                "lesion_mean_rgb": [round(v, 2) for v in result.lesion_mean_rgb] if colour else None,
                "skin_mean_rgb": [round(v, 2) for v in result.skin_mean_rgb] if colour else None,
                "vitiligo_pixels": result.lesion_pixels,
                "visible_skin_pixels": result.skin_pixels,
                "vitiligo_mm2": None if px_mm2 is None else result.lesion_pixels * px_mm2,
                "visible_skin_mm2": None if px_mm2 is None else result.skin_pixels * px_mm2,
            }
        )


class VitiligoSeverityOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, min_lesion_fraction: float = 0.001, **kwargs) -> None:
        super().__init__(fragment, *args, step=VitiligoSeverityStep(min_lesion_fraction), **kwargs)
