"""Scalp grading: six indicators x four grades per photograph (SEEDS.md, D).

Nothing is segmented, so there is no SEG. The grades refer to the whole photograph; the
SR gives each photograph a few TID 1410 groups (``SCALP_SR_GROUPS``: hair, then scalp
skin), finding "Scalp condition assessment", finding site Skin of scalp. Per indicator a
group carries the probability of the assigned grade as NUM ``<indicator> P(grade k)`` (%),
the grade as NUM ``{grade}`` and the grade as coded severity (None / Mild / Moderate /
Severe); results.json keeps all four probabilities.

Why this shape (OHIF 3.13.2, read in its DICOMSRDisplayTool): a viewer shows a group as its
outline plus one text box of at most five lines (its first NUMs, then the finding site),
draws a value of exactly 0 as blank and codes not at all, and puts the box to the right of
the outline's bounding box, at mid-height, without keeping it on screen. So each group
lists at most five indicators and starts with their probability lines, which name the
grade and are never blank ("Hair loss P(grade 0): 91.20 %"); the grades follow for
machines. Each group's outline is a rectangle inside the photograph (``box``), not its
border, so the box lies on the image; the groups' rectangles share their sides but end at
different heights, so the text boxes stack instead of covering each other.
"""

from __future__ import annotations

from dataclasses import dataclass

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
VIEWER_MAX_LINES = 5  # text lines OHIF 3.13.2 draws per SR group


@dataclass(frozen=True)
class ScalpSrGroup:
    """One SR group of a scalp photograph: which indicators it lists and its outline.

    ``box`` is (left, top, right, bottom) as fractions of the photograph's width and
    height. Keep ``right`` near 0.55 so that the longest line (~380 px after OHIF's 25 px
    offset) fits on the photograph beside it whenever the photograph is shown at 1.4x or
    more (a 640x480 image in a single viewport); give each group a different
    ``top + bottom`` so their text boxes (drawn from the outline's mid-height down) do not
    overlap.
    """

    label: str
    indicators: tuple[str, ...]
    box: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        unknown = [name for name in self.indicators if name not in INDICATORS]
        if unknown or not self.indicators:
            raise ValueError(f"scalp SR group {self.label!r}: unknown or no indicators {unknown}")
        if len(self.indicators) > VIEWER_MAX_LINES:
            raise ValueError(f"scalp SR group {self.label!r}: a viewer shows at most {VIEWER_MAX_LINES} lines")
        left, top, right, bottom = self.box
        if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
            raise ValueError(f"scalp SR group {self.label!r}: box must be fractions left < right, top < bottom")

    def outline_xy(self, rows: int, columns: int) -> np.ndarray:
        """The box as a closed POLYLINE (x, y) on a ``rows`` x ``columns`` photograph."""
        left, top, right, bottom = self.box
        x0, x1, y0, y1 = left * columns, right * columns, top * rows, bottom * rows
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float64)


# Hair first (its three lines above), then the five scalp-skin indicators (five lines below).
SCALP_SR_GROUPS: tuple[ScalpSrGroup, ...] = (
    ScalpSrGroup("hair", ("hair_loss",), (0.05, 0.05, 0.55, 0.70)),
    ScalpSrGroup(
        "scalp skin",
        ("micro_keratin", "excess_sebum", "interfollicular_erythema", "follicular_erythema_pustules", "dandruff"),
        (0.05, 0.05, 0.55, 0.95),
    ),
)


def _percent(probability: float) -> float:
    return round(100.0 * float(probability), PROBABILITY_DECIMALS)


def grading_groups(
    case: PhotoCase,
    grades: np.ndarray,
    probabilities: np.ndarray,
    layout: tuple[ScalpSrGroup, ...] = SCALP_SR_GROUPS,
) -> list[MeasurementGroupResult]:
    """The SR groups of one graded photograph (see the module docstring)."""
    photo = case.photo
    number = getattr(photo.dataset, "InstanceNumber", None)
    prefix = f"Scalp photograph {number}" if number not in (None, "") else "Scalp photograph"
    index = {name: i for i, name in enumerate(INDICATORS)}
    groups = []
    for group in layout:
        graded = [(name, int(grades[index[name]])) for name in group.indicators]
        confidence = [
            NumericMeasurement(PROBABILITY_CODES[name][grade], _percent(probabilities[index[name], grade]), codes.PERCENT)
            for name, grade in graded
        ]
        grade_values = [NumericMeasurement(INDICATOR_CODES[name], float(grade), codes.GRADE) for name, grade in graded]
        groups.append(MeasurementGroupResult(
            outline_xy=group.outline_xy(photo.rows, photo.columns),
            tracking_label=f"{prefix}: {group.label}",
            finding=codes.SCALP_FINDING,
            finding_site=codes.SKIN_OF_SCALP,
            measurements=confidence + grade_values,
            qualitative=[QualitativeFinding(INDICATOR_CODES[name], SEVERITY_CODES[grade]) for name, grade in graded],
        ))
    return groups


class ScalpGradingStep:
    """Grades one photograph with a ``models.scalp.inference.ScalpGrader``."""

    step_name = "scalp grading"

    def __init__(self, grader, layout: tuple[ScalpSrGroup, ...] = SCALP_SR_GROUPS) -> None:
        covered = sorted(name for group in layout for name in group.indicators)
        if covered != sorted(INDICATORS):
            raise ValueError(f"the scalp SR groups must list every indicator once, got {covered}")
        self.grader = grader
        self.layout = layout

    def process(self, case: PhotoCase) -> None:
        result = self.grader.predict(case.photo.pixels)
        case.groups.extend(grading_groups(case, result.grades, result.probabilities, self.layout))
        grades = {name: int(g) for name, g in zip(INDICATORS, result.grades)}
        case.summary.update(
            {
                "grades": grades,
                "grade_summary": ", ".join(f"{INDICATOR_LABELS[n]} {g}" for n, g in grades.items()),
                "probabilities_percent": {
                    name: [_percent(p) for p in result.probabilities[l]] for l, name in enumerate(INDICATORS)
                },
            }
        )


class ScalpGradingOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, grader, **kwargs) -> None:
        super().__init__(fragment, *args, step=ScalpGradingStep(grader), **kwargs)
