"""Step 5b: compare this visit with the patient's earlier ones (facial vitiligo).

Reads what the service put into ``IN/priors/`` (never the network): the earlier SRs of
this analysis, their SEGs and the baseline's photographs. Per view it adds to the SR group

* a stable tracking UID (same patient and view -> same UID in every visit),
* the TID 1502 time point (Baseline / Visit n and its order; left out when the PACS could not be asked),
* F-Vitiligo at baseline and at the previous visit, the change in points and in % of
  baseline, and whether a 50 / 75 / 90 % reduction from baseline is reached,
* a change map: the baseline's masks warped onto today's photograph through the face
  mesh (models.facial_alignment), stored as a SEG with segments "Repigmented since
  baseline", "New depigmentation since baseline", "Unchanged vitiligo", and their areas.

A prior whose Patient ID or issuer differs from the photograph's is never used. When
there is nothing to compare with, the group says why (a Comment) and the result is
stored as without priors.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from monai.deploy.core import Fragment
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom import codes
from dicom.encode import write_dataset
from dicom.longitudinal import (
    Priors,
    VisitContext,
    dicom_date,
    patient_identity,
    read_prior_dataset,
    read_priors,
    tracking_uid,
)
from dicom.reader import read_photograph
from dicom.seg import AlgorithmIdentity, SegmentSpec, build_photo_segmentation
from dicom.sr import NumericMeasurement, read_measurement_report
from models.face import FaceSkinMasker

from .base import StepOperator
from .cases import PhotoCase

log = logging.getLogger("dermpacs")

REPIGMENTED_SEGMENT = SegmentSpec("Repigmented since baseline", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                                  codes.REPIGMENTATION, codes.SKIN_OF_FACE, (60, 220, 90))
NEW_DEPIGMENTATION_SEGMENT = SegmentSpec("New depigmentation since baseline", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                                         codes.NEW_DEPIGMENTATION, codes.SKIN_OF_FACE, (255, 150, 0))
UNCHANGED_SEGMENT = SegmentSpec("Unchanged vitiligo", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                                codes.VITILIGO, codes.SKIN_OF_FACE, (255, 60, 200))
RESPONDER_LEVELS = ((50, codes.F_VITILIGO_50), (75, codes.F_VITILIGO_75), (90, codes.F_VITILIGO_90))


@dataclass(frozen=True)
class PriorView:
    """One view of one earlier visit, as its SR reported it."""

    date: str
    study_instance_uid: str
    report: Dataset
    f_vitiligo: float
    seg_uid: str | None
    photo_uid: str | None


def comparison_measurements(today: float, baseline: PriorView, previous: PriorView) -> list[NumericMeasurement]:
    """The comparison NUMs; changes are computed from the values the SRs state, so they add up."""
    change = round(today - baseline.f_vitiligo, 4)
    out = [
        NumericMeasurement(codes.F_VITILIGO_BASELINE, baseline.f_vitiligo, codes.PERCENT),
        NumericMeasurement(codes.F_VITILIGO_CHANGE_BASELINE, change, codes.PERCENTAGE_POINTS),
    ]
    if previous is not baseline:
        out += [
            NumericMeasurement(codes.F_VITILIGO_PREVIOUS, previous.f_vitiligo, codes.PERCENT),
            NumericMeasurement(codes.F_VITILIGO_CHANGE_PREVIOUS, round(today - previous.f_vitiligo, 4),
                               codes.PERCENTAGE_POINTS),
        ]
    if baseline.f_vitiligo > 0:
        relative = 100.0 * change / baseline.f_vitiligo
        out.append(NumericMeasurement(codes.F_VITILIGO_RELATIVE_CHANGE, round(relative, 2), codes.PERCENT))
        for level, code in RESPONDER_LEVELS:
            out.append(NumericMeasurement(code, 1.0 if -relative >= level else 0.0, codes.YES_NO_UNIT))
    return out


class LongitudinalComparisonStep:
    step_name = "comparison with earlier visits"

    def __init__(self, input_folder: Path, output_folder: Path, algorithm: AlgorithmIdentity,
                 masker: FaceSkinMasker, view_kind: str = "face") -> None:
        self.input_folder, self.output_folder = Path(input_folder), Path(output_folder)
        self.algorithm, self.masker, self.view_kind = algorithm, masker, view_kind
        self._priors: Priors | None = None
        self._views: dict[str, list[PriorView]] | None = None
        self._visits = 0
        self._files: dict[str, Path] = {}
        self._series_uid = generate_uid()
        self._count = 0

    # -- reading the priors ---------------------------------------------------------------
    def _load(self, photo_ds: Dataset) -> None:
        """Index the earlier SRs by tracking UID (checked: same patient, same analysis)."""
        self._priors = read_priors(self.input_folder)
        self._views = {}
        patient = patient_identity(photo_ds)
        visits = set()
        for study in self._priors.studies if self._priors.compared else ():
            for path in study.files:
                ds = read_prior_dataset(path)
                if ds is None:
                    continue
                self._files[str(ds.SOPInstanceUID)] = path
                if patient_identity(ds) != patient:  # never another patient's result
                    log.warning("prior %s ignored: another patient", path.name)
                    continue
                if ds.Modality != "SR" or str(ds.get("ManufacturerModelName", "")) != self.algorithm.name:
                    continue
                if str(ds.StudyInstanceUID) == str(photo_ds.StudyInstanceUID):
                    continue
                for group in read_measurement_report(ds):
                    value = group["measurements"].get(codes.F_VITILIGO.meaning)
                    if value is None:
                        continue
                    visits.add(str(ds.StudyInstanceUID))
                    self._views.setdefault(group["tracking_uid"], []).append(PriorView(
                        str(ds.get("StudyDate", "")), str(ds.StudyInstanceUID), ds, value[0],
                        group["segmentation_sop_instance_uid"], group["referenced_sop_instance_uid"]))
        for views in self._views.values():
            views.sort(key=lambda v: v.date)
        self._visits = len(visits)

    # -- per photograph ---------------------------------------------------------------------
    def process(self, case: PhotoCase) -> None:
        if self._priors is None:
            self._load(case.photo.dataset)
        priors = self._priors
        if not case.groups:
            return
        today_date = dicom_date(case.photo.dataset.get("StudyDate"))
        view = case.summary.get("view", "unknown")
        uid = tracking_uid(priors.tracking_key, self.algorithm.name, self.view_kind, view) if priors.tracking_key else None
        history = self._views.get(uid, []) if uid else []
        # The visit's number is known only when the PACS was asked and answered.
        order = self._visits + 1 if priors.status in ("found", "none") else None
        if not history:
            why = priors.reason if not priors.compared else f"no earlier {view} view of this patient"
            visit = VisitContext(order=order, comment=f"No comparison with earlier visits: {why}"[:1024])
            case.summary["comparison"] = {"status": "none", "reason": why, "time_point_order": order}
            case.groups = [dataclasses.replace(g, tracking_uid=uid, visit=visit) for g in case.groups]
            return
        baseline, previous = history[0], history[-1]
        today = case.groups[0].measurements[0].value  # F-Vitiligo as the SR states it
        base_date, prev_date = dicom_date(baseline.date), dicom_date(previous.date)
        extra = comparison_measurements(today, baseline, previous)
        named = {m.name.meaning: m for m in extra}
        days = []
        if today_date and base_date:
            days.append(NumericMeasurement(codes.DAYS_SINCE_BASELINE, float((today_date - base_date).days), codes.DAYS))
        if previous is not baseline and today_date and prev_date:
            days.append(NumericMeasurement(codes.DAYS_SINCE_PREVIOUS, float((today_date - prev_date).days), codes.DAYS))
        change_note, areas = self._change_map(case, baseline)
        reports = [(codes.BASELINE_REPORT, baseline.report)]
        if previous is not baseline:
            reports.append((codes.PREVIOUS_REPORT, previous.report))
        reached = [f"F-Vitiligo{level} {'reached' if named[code.meaning].value else 'not reached'}"
                   for level, code in RESPONDER_LEVELS if code.meaning in named]
        visit = VisitContext(
            order=order,
            baseline_date=base_date, previous_date=prev_date if previous is not baseline else None,
            prior_reports=tuple(reports),
            comment=(f"Compared with {len(history)} earlier visit(s) of this view. "
                     + (", ".join(reached) + ". " if reached else "") + change_note)[:1024],
        )
        main = case.groups[0]
        since_baseline = [named[c.meaning] for c in (codes.F_VITILIGO_BASELINE, codes.F_VITILIGO_CHANGE_BASELINE,
                                                      codes.F_VITILIGO_RELATIVE_CHANGE) if c.meaning in named]
        since_baseline += [d for d in days if d.name == codes.DAYS_SINCE_BASELINE]
        since_baseline += [named[c.meaning] for level, c in RESPONDER_LEVELS if c.meaning in named]
        response = [*areas] + [named[c.meaning] for c in (codes.F_VITILIGO_PREVIOUS, codes.F_VITILIGO_CHANGE_PREVIOUS)
                               if c.meaning in named]
        response += [d for d in days if d.name == codes.DAYS_SINCE_PREVIOUS]
        groups = [dataclasses.replace(main, tracking_uid=uid, visit=visit)]
        for rank, (title, measurements) in enumerate((("since baseline", since_baseline),
                                                       ("change map and previous visit", response)), start=1):
            if measurements:
                groups.append(dataclasses.replace(
                    main, tracking_label=f"{main.tracking_label}: {title}"[:64],
                    tracking_uid=tracking_uid(priors.tracking_key, self.algorithm.name, self.view_kind, view, title),
                    outline_xy=_text_anchor(main.outline_xy, case.photo.rows, case.photo.columns, rank),
                    measurements=measurements, qualitative=[], visit=None))  # time point: on the view's main group
        case.groups = groups + case.groups[1:]
        case.summary["comparison"] = {
            "status": "compared", "time_point_order": order, "earlier_visits": len(history),
            "baseline_date": baseline.date, "previous_date": previous.date,
            **{m.name.meaning: m.value for m in [*extra, *days, *areas]}, "change_map": change_note,
        }

    # -- the trend picture ----------------------------------------------------------------------
    def finish(self, cases: list[PhotoCase]) -> None:
        """One Secondary Capture chart per series: F-Vitiligo per view over all visits."""
        from dicom.trend import TrendPoint, build_trend_image, render_trend

        compared = [c for c in cases if c.ok and c.groups and c.summary.get("comparison", {}).get("status") == "compared"]
        by_series: dict[str, list[PhotoCase]] = {}
        for case in compared:
            by_series.setdefault(case.photo.series_instance_uid, []).append(case)
        for number, series_cases in enumerate(by_series.values(), start=1):
            try:
                series: dict[str, list[TrendPoint]] = {}
                for case in series_cases:
                    group = case.groups[0]
                    points = [TrendPoint(dicom_date(v.date), v.f_vitiligo)
                              for v in self._views.get(group.tracking_uid, []) if dicom_date(v.date)]
                    today = dicom_date(case.photo.dataset.get("StudyDate"))
                    if today is not None:
                        points.append(TrendPoint(today, group.measurements[0].value))
                    series[case.summary.get("view", "unknown")] = points
                image = build_trend_image(series_cases[0].photo.dataset, render_trend(series), self.algorithm)
                self.output_folder.mkdir(parents=True, exist_ok=True)
                path = self.output_folder / f"TREND_{number:03d}.dcm"
                write_dataset(image, path)
            except Exception as exc:  # the chart is a convenience: never costs the measurements
                log.exception("trend picture not written")
                for case in series_cases:
                    case.summary["trend"] = f"not written: {type(exc).__name__}: {exc}"
                continue
            for case in series_cases:
                case.outputs.append(path)
                case.summary["trend"] = path.name

    # -- the change map -----------------------------------------------------------------------
    def _change_map(self, case: PhotoCase, baseline: PriorView) -> tuple[str, list[NumericMeasurement]]:
        from models.facial_alignment import face_landmarks, warp_masks

        seg_path = self._files.get(baseline.seg_uid or "")
        photo_path = self._files.get(baseline.photo_uid or "")
        if seg_path is None or photo_path is None:
            return "Change map not made: the baseline's SEG or photograph was not retrieved.", []
        base_photo = read_photograph(photo_path)
        if patient_identity(base_photo.dataset) != patient_identity(case.photo.dataset):
            return "Change map not made: the baseline photograph belongs to another patient.", []
        masks = _seg_masks(pydicom.dcmread(seg_path))
        base_vitiligo, base_skin = masks.get("Vitiligo"), masks.get("Skin of face")
        if base_vitiligo is None or base_skin is None or base_vitiligo.shape != base_photo.pixels.shape[:2]:
            return "Change map not made: the baseline SEG lacks the expected segments.", []
        src = face_landmarks(self.masker, base_photo.pixels)
        dst = face_landmarks(self.masker, case.photo.pixels)
        if src is None or dst is None:
            which = "baseline" if src is None else "today's"
            return f"Change map not made: the view cannot be aligned (no face mesh in the {which} photograph).", []
        shape = case.photo.pixels.shape[:2]
        (vit_then, skin_then), valid = warp_masks([base_vitiligo, base_skin], src, dst, shape)
        skin_now = case.findings["face"].skin_mask
        vit_now = next(s.mask for s in case.segments if s.spec.label == "Vitiligo")
        comparable = valid & skin_then & skin_now
        if not comparable.any():
            return "Change map not made: the views do not overlap after alignment.", []
        repigmented = comparable & vit_then & ~vit_now
        new = comparable & vit_now & ~vit_then
        unchanged = comparable & vit_now & vit_then
        seg = build_photo_segmentation(
            case.photo, [REPIGMENTED_SEGMENT, NEW_DEPIGMENTATION_SEGMENT, UNCHANGED_SEGMENT],
            np.stack([repigmented, new, unchanged], axis=-1), self.algorithm,
            series_instance_uid=self._series_uid, series_number=902,
            instance_number=int(getattr(case.photo.dataset, "InstanceNumber", None) or self._count + 1),
            series_description="dermpacs change since baseline",
        )
        self._count += 1
        self.output_folder.mkdir(parents=True, exist_ok=True)
        path = self.output_folder / f"SEG_CHANGE_{self._count:03d}.dcm"
        write_dataset(seg, path)
        case.outputs.append(path)
        spacing = case.photo.pixel_spacing_mm
        scale, unit = (float(spacing[0] * spacing[1]), codes.SQUARE_MILLIMETER) if spacing else (1.0, codes.PIXELS)
        areas = [
            NumericMeasurement(code, round(float(np.count_nonzero(mask)) * scale, 3), unit, segmentation=seg)
            for code, mask in ((codes.REPIGMENTED_AREA, repigmented), (codes.NEW_DEPIGMENTATION_AREA, new),
                               (codes.UNCHANGED_VITILIGO_AREA, unchanged))
        ]
        share = 100.0 * np.count_nonzero(comparable) / max(1, np.count_nonzero(skin_now))
        case.summary["change_map_pixels"] = {
            "repigmented": int(np.count_nonzero(repigmented)), "new": int(np.count_nonzero(new)),
            "unchanged": int(np.count_nonzero(unchanged)), "comparable_percent_of_face": round(share, 2),
        }
        return f"Change map on {share:.0f} % of today's face skin (the rest could not be aligned).", areas


def _text_anchor(face_outline: np.ndarray, rows: int, columns: int, rank: int) -> np.ndarray:
    """Outline of the rank-th extra group of a view: a thin box on the face outline's right edge.

    OHIF 3.13.2 shows at most five lines per group, to the right of the outline's bounding
    box from its mid-height down (operators/scalp_grading.py). The comparison lines are
    therefore split into groups whose small outlines sit at the face's right edge, each
    13 % of the photograph's height below the previous, so the text boxes stack under the
    face's own instead of covering it.
    """
    x0, y0 = face_outline.min(axis=0)
    x1, y1 = face_outline.max(axis=0)
    mid = min((y0 + y1) / 2 + 0.13 * rows * rank, rows * (1 - 0.02))
    half = 0.01 * rows
    left = max(0.0, x1 - 0.03 * columns)
    return np.array([[left, mid - half], [x1, mid - half], [x1, mid + half], [left, mid + half]], dtype=np.float64)


def _seg_masks(ds: Dataset) -> dict[str, np.ndarray]:
    """Segment label -> bool mask of a one-photograph BINARY SEG (one frame per segment)."""
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}
    frames = ds.pixel_array
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    out = {}
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        out[labels[number]] = frames[index].astype(bool)
    return out


class LongitudinalComparisonOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, input_folder: Path, output_folder: Path,
                 algorithm: AlgorithmIdentity, masker: FaceSkinMasker, **kwargs) -> None:
        super().__init__(fragment, *args, step=LongitudinalComparisonStep(input_folder, output_folder, algorithm, masker),
                         **kwargs)
