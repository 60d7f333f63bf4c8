"""Step 7: one TID 1500 measurement report per source series, a TID 1410 group per photograph."""

from __future__ import annotations

import logging
from pathlib import Path

from monai.deploy.core import Fragment

from dicom.encode import write_dataset
from dicom.seg import AlgorithmIdentity
from dicom.sr import PhotoMeasurementGroup, build_measurement_report

from .base import StepOperator
from .cases import PhotoCase

log = logging.getLogger("dermpacs")


class SrWriterStep:
    """Collects the groups of all analysed cases, then writes ``SR_<n>.dcm`` per series."""

    step_name = "SR writer"

    def __init__(self, output_folder: Path, algorithm: AlgorithmIdentity) -> None:
        self.output_folder = Path(output_folder)
        self.algorithm = algorithm

    def process(self, case: PhotoCase) -> None:  # groups are written together in finish()
        return None

    def finish(self, cases: list[PhotoCase]) -> None:
        by_series: dict[tuple[str, str], list[PhotoCase]] = {}
        for case in cases:
            if case.ok and case.groups:
                key = (case.photo.study_instance_uid, case.photo.series_instance_uid)
                by_series.setdefault(key, []).append(case)
        self.output_folder.mkdir(parents=True, exist_ok=True)
        for number, series_cases in enumerate(by_series.values(), start=1):
            groups = [
                PhotoMeasurementGroup(
                    photo=case.photo,
                    outline_xy=g.outline_xy,
                    tracking_label=g.tracking_label,
                    finding=g.finding,
                    finding_site=g.finding_site,
                    measurements=g.measurements,
                    qualitative=g.qualitative,
                    segmentation=case.segmentation,
                    tracking_uid=g.tracking_uid,
                    visit=g.visit,
                )
                for case in series_cases
                for g in case.groups
            ]
            try:
                report = build_measurement_report(groups, self.algorithm)
                path = self.output_folder / f"SR_{number:03d}.dcm"
                write_dataset(report, path)
            except Exception as exc:  # the SEGs already written stay valid; say what is missing
                log.exception("measurement report for series %d could not be written", number)
                for case in series_cases:
                    case.fail(self.step_name, f"SR not written: {type(exc).__name__}: {exc}")
                continue
            for case in series_cases:
                case.outputs.append(path)


class SrWriterOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, output_folder: Path, algorithm: AlgorithmIdentity, **kwargs) -> None:
        super().__init__(fragment, *args, step=SrWriterStep(output_folder, algorithm), **kwargs)
