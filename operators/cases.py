"""The record that flows through an analysis pipeline: one per input file.

Operators fill it in step by step; a step that fails marks the case failed with a
user-readable reason and later steps skip it, so one bad photograph never stops the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class SegmentResult:
    """One segment to store in the SEG: what it is and its full-resolution mask."""

    spec: Any  # dicom.seg.SegmentSpec
    mask: np.ndarray  # bool (H, W)


@dataclass(frozen=True)
class MeasurementGroupResult:
    """One SR measurement group (TID 1410) for a photograph, before the SEG is known."""

    outline_xy: np.ndarray  # (N, 2) x,y closed polygon on the photograph
    tracking_label: str
    finding: Any  # Code
    finding_site: Any | None  # Code
    measurements: Sequence[Any]  # dicom.sr.NumericMeasurement
    qualitative: Sequence[Any] = ()  # dicom.sr.QualitativeFinding
    tracking_uid: str | None = None  # stable across visits (operators.longitudinal_comparison)
    visit: Any | None = None  # dicom.longitudinal.VisitContext


@dataclass
class PhotoCase:
    """Everything known about one input file as it moves through the pipeline."""

    source: Path
    photo: Any = None  # dicom.reader.Photograph once loaded
    error: str | None = None
    failed_step: str | None = None
    # Filled by the analysis steps; keys are step-specific (face boxes, masks, figures).
    findings: dict[str, Any] = field(default_factory=dict)
    segments: list[SegmentResult] = field(default_factory=list)
    groups: list[MeasurementGroupResult] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)  # numbers printed and written to results.json
    segmentation: Any = None  # highdicom Segmentation once built
    outputs: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def fail(self, step: str, reason: str) -> None:
        if self.error is None:
            self.error, self.failed_step = reason, step

    def label(self) -> str:
        """A log-safe name: the file name and SOP Instance UID, never patient data."""
        uid = getattr(self.photo, "sop_instance_uid", None)
        return f"{self.source.name}" + (f" [{uid}]" if uid else "")
