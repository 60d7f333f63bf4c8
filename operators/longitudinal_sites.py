"""Visits over time for close-ups and skin prick tests: time point, tracking UID per site, change.

Unlike the face there is no mesh to warp with: a close-up's or prick test's result is
followed by its site, the group's Tracking Identifier (close-up: the anatomic site;
prick test: "Prick site <n>"). The priors the service put into ``IN/priors/`` (earlier
SRs of this analysis, same patient and issuer, checked again here) are matched by the
tracking UID, which is the same for the same patient, analysis and site in every visit.
When a site matches, the group gets its headline number at the previous visit and the
change since then; otherwise it says why there is no comparison.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from monai.deploy.core import Fragment
from pydicom.dataset import Dataset

from dicom import codes
from dicom.longitudinal import VisitContext, dicom_date, patient_identity, read_prior_dataset, read_priors, tracking_uid
from dicom.seg import AlgorithmIdentity
from dicom.sr import NumericMeasurement, read_measurement_report

from .base import StepOperator
from .cases import PhotoCase

log = logging.getLogger("dermpacs")


def _derived_code(code, suffix: str, meaning: str):
    """'<headline> at previous visit' / '... change since previous visit' as private concepts (None if too long)."""
    try:
        return codes.private_code(f"{code.value[:12]}-{suffix}", f"{code.meaning} {meaning}")
    except ValueError:
        return None


class SiteComparisonStep:
    step_name = "comparison with earlier visits (by site)"

    def __init__(self, input_folder: Path, algorithm: AlgorithmIdentity) -> None:
        self.input_folder, self.algorithm = Path(input_folder), algorithm
        self._history: dict[str, list[tuple[str, Dataset, dict]]] | None = None
        self._visits = 0
        self._priors = None

    def _load(self, photo_ds: Dataset) -> None:
        self._priors = read_priors(self.input_folder)
        self._history, studies = {}, set()
        for study in self._priors.studies if self._priors.compared else ():
            for path in study.files:
                ds = read_prior_dataset(path)
                if ds is None or ds.Modality != "SR" or patient_identity(ds) != patient_identity(photo_ds):
                    continue
                if str(ds.get("ManufacturerModelName", "")) != self.algorithm.name:
                    continue
                studies.add(str(ds.StudyInstanceUID))
                for group in read_measurement_report(ds):
                    self._history.setdefault(group["tracking_uid"], []).append((str(ds.get("StudyDate", "")), ds, group))
        for entries in self._history.values():
            entries.sort(key=lambda e: e[0])
        self._visits = len(studies)

    def process(self, case: PhotoCase) -> None:
        if self._history is None:
            self._load(case.photo.dataset)
        priors = self._priors
        order = self._visits + 1 if priors.status in ("found", "none") else None
        groups = []
        for group in case.groups:
            uid = tracking_uid(priors.tracking_key, self.algorithm.name, group.tracking_label) if priors.tracking_key else None
            earlier = self._history.get(uid, []) if uid else []
            if not earlier or not group.measurements:
                why = priors.reason if not priors.compared else f"no earlier result for {group.tracking_label}"
                visit = VisitContext(order=order, comment=f"No comparison with earlier visits: {why}"[:1024])
                groups.append(dataclasses.replace(group, tracking_uid=uid, visit=visit))
                continue
            date, report, previous = earlier[-1]
            headline = group.measurements[0]
            before = previous["measurements"].get(headline.name.meaning)
            extra = []
            then_code = _derived_code(headline.name, "PRV", "at previous visit")
            change_code = _derived_code(headline.name, "CHG", "change since previous")
            if before is not None and then_code and change_code:
                extra = [NumericMeasurement(then_code, before[0], headline.unit),
                         NumericMeasurement(change_code, round(headline.value - before[0], 4), headline.unit)]
            visit = VisitContext(order=order, previous_date=dicom_date(date), prior_reports=((codes.PREVIOUS_REPORT, report),),
                                 comment=f"Compared with the previous visit ({date[:4]}-{date[4:6]}-{date[6:8]}) "
                                         f"at the same site: {group.tracking_label}."[:1024])
            groups.append(dataclasses.replace(group, tracking_uid=uid, visit=visit,
                                              measurements=[*group.measurements, *extra]))
            case.summary.setdefault("comparison", {})[group.tracking_label] = {
                "previous_date": date, **{m.name.meaning: m.value for m in extra}}
        case.groups = groups


class SiteComparisonOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, input_folder: Path, algorithm: AlgorithmIdentity, **kwargs) -> None:
        super().__init__(fragment, *args, step=SiteComparisonStep(input_folder, algorithm), **kwargs)
