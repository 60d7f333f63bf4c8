"""Say when a vitiligo measurement should not be trusted (models.quality), in words.

Runs after the measurement step: adds ``quality`` (flagged, reasons, the values behind
them) to the case summary, hence to ``results.json``, and one coded Result quality flag
per reason to the photograph's SR measurement group. Faces (``findings["face"]``) and
close-ups (``findings["skin_mask"]``) each have their own checks.
"""

from __future__ import annotations

import dataclasses

from monai.deploy.core import Fragment

from dicom import codes
from dicom.sr import QualitativeFinding
from models.quality import (CloseUpQualityConfig, QualityConfig, QualityReport, assess_closeup_quality,
                            assess_quality)

from .base import StepOperator
from .cases import PhotoCase


def record_quality(case: PhotoCase, report: QualityReport) -> None:
    """The report into results.json and, one coded flag per reason, into the SR groups."""
    case.summary["quality"] = report.as_dict()
    if report.flagged:
        found = [QualitativeFinding(codes.RESULT_QUALITY_FLAG, codes.QUALITY_FLAG_CODES[f.key]) for f in report.flags]
        case.groups = [dataclasses.replace(g, qualitative=[*g.qualitative, *found]) for g in case.groups]


class QualityCheckStep:
    step_name = "quality check"

    def __init__(self, config: QualityConfig | None = None) -> None:
        self.config = config or QualityConfig()

    def process(self, case: PhotoCase) -> None:
        face = case.findings["face"]
        x0, y0, x1, y1 = face.roi
        box = face.box
        record_quality(case, assess_quality(
            case.photo.pixels.shape[:2], (box.x0, box.y0, box.x1, box.y1), face.faces_found,
            case.photo.pixels[y0:y1, x0:x1], face.skin_mask[y0:y1, x0:x1], case.findings["lesion_roi"],
            self.config,
        ))


class CloseUpQualityCheckStep:
    step_name = "quality check"

    def __init__(self, config: CloseUpQualityConfig | None = None) -> None:
        self.config = config or CloseUpQualityConfig()

    def process(self, case: PhotoCase) -> None:
        record_quality(case, assess_closeup_quality(case.photo.pixels, case.findings["skin_mask"],
                                                    case.findings["lesion_mask"], self.config))


class QualityCheckOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, config: QualityConfig | None = None, **kwargs) -> None:
        super().__init__(fragment, *args, step=QualityCheckStep(config), **kwargs)


class CloseUpQualityCheckOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, config: CloseUpQualityConfig | None = None, **kwargs) -> None:
        super().__init__(fragment, *args, step=CloseUpQualityCheckStep(config), **kwargs)
