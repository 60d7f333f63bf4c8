"""Skin prick step: one SR group per reaction (wheal/erythema areas, mean diameters, ratio).

Reactions, diameters and ordering follow ``models.prick.measure`` (erythema = the whole
reaction, wheal included). Units: mm and mm2 when the photograph carries Pixel Spacing,
``{pixel}`` and ``{pixels}`` otherwise. A photograph without any reaction is analysed
successfully with 0 reactions: no SEG or SR is written for it (an SR needs at least one
group with an outline for OHIF), and results.json says "no reaction found".
"""

from __future__ import annotations

import numpy as np
from monai.deploy.core import Fragment

from dicom import codes
from dicom.seg import SegmentSpec
from dicom.sr import NumericMeasurement

from .base import StepOperator
from .cases import MeasurementGroupResult, PhotoCase, SegmentResult

ERYTHEMA_SEGMENT = SegmentSpec(
    label="Erythema",
    category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
    property_type=codes.ERYTHEMA,
    anatomic_region=codes.SKIN,
    color_rgb=(255, 70, 70),
)
WHEAL_SEGMENT = SegmentSpec(
    label="Wheal",
    category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
    property_type=codes.WHEAL,
    anatomic_region=codes.SKIN,
    color_rgb=(255, 255, 120),
)
NO_REACTION = "analysed, no reaction found"
# Smallest reaction kept, in pixels of the model's input (removes speckle); scaled to the photo.
MIN_REACTION_MODEL_PX = 12


class SkinPrickMeasurementStep:
    step_name = "skin prick measurement"

    def __init__(self, min_reaction_model_px: int = MIN_REACTION_MODEL_PX, flare_edge=None) -> None:
        """``flare_edge``: the segmenter's ``FlareEdgeConfig`` (flare edges refined from the
        photograph's colours when enabled); None reads the net's masks as they are."""
        self.min_reaction_model_px = min_reaction_model_px
        self.flare_edge = flare_edge

    def process(self, case: PhotoCase) -> None:
        from models.prick.measure import reactions_from_masks

        reactions = reactions_from_masks(case.findings["prick_erythema"], case.findings["prick_wheal"],
                                         case.findings.get("prick_model_scale", 1.0), self.min_reaction_model_px,
                                         rgb=case.photo.pixels, flare_edge=self.flare_edge)
        self.report(case, reactions)

    @staticmethod
    def report(case: PhotoCase, reactions: list) -> None:
        """One SR group and one results record per reaction; the SEG holds exactly them.
        The panel step calls it again when the site verifier changed the list."""
        from models.prick.measure import diameters

        case.findings["prick_reactions"] = reactions  # the panel step matches them to sites
        case.groups = []
        spacing = case.photo.pixel_spacing_mm
        px_area = float(spacing[0] * spacing[1]) if spacing else 1.0
        area_unit = codes.SQUARE_MILLIMETER if spacing else codes.PIXELS
        length_unit = codes.MILLIMETER if spacing else codes.PIXEL_LENGTH
        records = []
        shape = case.photo.pixels.shape[:2]
        kept_erythema, kept_wheal = np.zeros(shape, bool), np.zeros(shape, bool)
        for number, r in enumerate(reactions, start=1):
            d_wheal = diameters(r.wheal, spacing)
            d_ery = diameters(r.erythema, spacing)
            record = {
                "site": f"Prick site {number}",
                "centroid_xy": [round(r.centroid_xy[0], 1), round(r.centroid_xy[1], 1)],
                "wheal_area": round(r.wheal_pixels * px_area, 3),
                "erythema_area": round(r.erythema_pixels * px_area, 3),
                "wheal_mean_diameter": round(d_wheal.mean, 3),
                "wheal_longest_diameter": round(d_wheal.longest, 3),
                "wheal_perpendicular_diameter": round(d_wheal.perpendicular, 3),
                "erythema_mean_diameter": round(d_ery.mean, 3),
                "erythema_longest_diameter": round(d_ery.longest, 3),
                "erythema_perpendicular_diameter": round(d_ery.perpendicular, 3),
                "wheal_erythema_ratio": round(r.ratio, 4),
            }
            records.append(record)
            case.groups.append(MeasurementGroupResult(
                outline_xy=r.outline_xy(),
                tracking_label=record["site"],
                finding=codes.ERYTHEMA_FINDING if r.erythema_pixels > r.wheal_pixels else codes.WHEAL,
                finding_site=codes.SKIN,
                measurements=[
                    NumericMeasurement(codes.WHEAL_AREA, record["wheal_area"], area_unit),
                    NumericMeasurement(codes.ERYTHEMA_AREA, record["erythema_area"], area_unit),
                    NumericMeasurement(codes.WHEAL_MEAN_DIAMETER, record["wheal_mean_diameter"], length_unit),
                    NumericMeasurement(codes.ERYTHEMA_MEAN_DIAMETER, record["erythema_mean_diameter"], length_unit),
                    NumericMeasurement(codes.WHEAL_ERYTHEMA_RATIO, record["wheal_erythema_ratio"], codes.NO_UNITS),
                ],
            ))
            x0, y0, x1, y1 = r.bbox
            kept_erythema[y0:y1, x0:x1] |= r.erythema
            kept_wheal[y0:y1, x0:x1] |= r.wheal
        # The SEG holds exactly what the SR measured (speckle removed).
        case.segments = [SegmentResult(ERYTHEMA_SEGMENT, kept_erythema), SegmentResult(WHEAL_SEGMENT, kept_wheal)] \
            if reactions else []
        case.summary.update({
            "reactions": len(reactions),
            "result": f"{len(reactions)} reaction(s) found" if reactions else NO_REACTION,
            "largest_wheal_mean_diameter": max((r["wheal_mean_diameter"] for r in records), default=0.0),
            "largest_erythema_mean_diameter": max((r["erythema_mean_diameter"] for r in records), default=0.0),
            "area_unit": area_unit.value,
            "length_unit": length_unit.value,
            "sites": records,  # last: the overlay preview prints the first six keys
        })


class SkinPrickMeasurementOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, flare_edge=None, **kwargs) -> None:
        super().__init__(fragment, *args, step=SkinPrickMeasurementStep(flare_edge=flare_edge), **kwargs)
