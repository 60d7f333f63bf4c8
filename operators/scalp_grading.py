"""Scalp grading: six indicators x four grades per photograph (SEEDS.md, D).

Nothing is segmented, so there is no SEG: each photograph gets one TID 1410 group whose
SCOORD is the image border rectangle, finding site Skin of scalp, carrying per indicator
its grade as NUM (unit ``{grade}``: OHIF shows no coded answers), the same grade as a
coded severity (None / Mild / Moderate / Severe) and the four grade probabilities (NUM, %).
"""

from __future__ import annotations

import numpy as np
from monai.deploy.core import Fragment

from dicom import codes
from dicom.sr import NumericMeasurement, QualitativeFinding
from models.scalp import INDICATOR_LABELS, INDICATORS, NUM_GRADES

from .base import StepOperator
from .cases import MeasurementGroupResult, PhotoCase

INDICATOR_CODES = {
    "micro_keratin": codes.SCALP_MICRO_KERATIN,
    "excess_sebum": codes.SCALP_EXCESS_SEBUM,
    "interfollicular_erythema": codes.SCALP_INTERFOLLICULAR_ERYTHEMA,
    "follicular_erythema_pustules": codes.SCALP_FOLLICULAR_ERYTHEMA_PUSTULES,
    "dandruff": codes.SCALP_DANDRUFF,
    "hair_loss": codes.SCALP_HAIR_LOSS,
}
SEVERITY_CODES = (codes.NONE, codes.MILD, codes.MODERATE, codes.SEVERE)
PROBABILITY_CODES = {
    name: [codes.scalp_probability_code(INDICATOR_CODES[name].value, k, INDICATOR_LABELS[name]) for k in range(NUM_GRADES)]
    for name in INDICATORS
}
PROBABILITY_DECIMALS = 2  # percent, as written to the SR and results.json (round trip exact)


def border_rectangle(rows: int, columns: int) -> np.ndarray:
    """The whole image as a closed POLYLINE (x, y): what the grades refer to."""
    return np.array([[0, 0], [columns, 0], [columns, rows], [0, rows], [0, 0]], dtype=np.float64)


def grading_group(case: PhotoCase, grades: np.ndarray, probabilities: np.ndarray) -> MeasurementGroupResult:
    measurements: list[NumericMeasurement] = []
    qualitative: list[QualitativeFinding] = []
    for l, name in enumerate(INDICATORS):
        grade = int(grades[l])
        measurements.append(NumericMeasurement(INDICATOR_CODES[name], float(grade), codes.GRADE))
        qualitative.append(QualitativeFinding(INDICATOR_CODES[name], SEVERITY_CODES[grade]))
    for l, name in enumerate(INDICATORS):
        for k in range(NUM_GRADES):
            percent = round(100.0 * float(probabilities[l, k]), PROBABILITY_DECIMALS)
            measurements.append(NumericMeasurement(PROBABILITY_CODES[name][k], percent, codes.PERCENT))
    photo = case.photo
    number = getattr(photo.dataset, "InstanceNumber", None)
    return MeasurementGroupResult(
        outline_xy=border_rectangle(photo.rows, photo.columns),
        tracking_label=f"Scalp photograph {number}" if number not in (None, "") else "Scalp photograph",
        finding=codes.SCALP_FINDING,
        finding_site=codes.SKIN_OF_SCALP,
        measurements=measurements,
        qualitative=qualitative,
    )


class ScalpGradingStep:
    """Grades one photograph with a ``models.scalp.inference.ScalpGrader``."""

    step_name = "scalp grading"

    def __init__(self, grader) -> None:
        self.grader = grader

    def process(self, case: PhotoCase) -> None:
        result = self.grader.predict(case.photo.pixels)
        case.groups.append(grading_group(case, result.grades, result.probabilities))
        grades = {name: int(g) for name, g in zip(INDICATORS, result.grades)}
        case.summary.update(
            {
                "grades": grades,
                "grade_summary": ", ".join(f"{INDICATOR_LABELS[n]} {g}" for n, g in grades.items()),
                "probabilities_percent": {
                    name: [round(100.0 * float(p), PROBABILITY_DECIMALS) for p in result.probabilities[l]]
                    for l, name in enumerate(INDICATORS)
                },
            }
        )


class ScalpGradingOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, grader, **kwargs) -> None:
        super().__init__(fragment, *args, step=ScalpGradingStep(grader), **kwargs)
