"""TID 1500 measurement report for photographs, in the form OHIF 3.13.2 displays.

Structure (DESIGN.md, "SR"): root 126000 "Imaging Measurement Report"; one TID 1410
group per analysed region with Tracking Identifier + Tracking UID and an image-region
SCOORD POLYLINE on the photograph (OHIF crashes on groups without one); each numeric
result is a TID 300 NUM carrying the algorithm (TID 4019: name, version and the
weights' SHA-256 as a parameter) and, when a SEG holds the masks it was computed from,
a "Source of Measurement" (DCM 121112) IMAGE reference to that SEG. Values are written
as DS and as FD (FloatingPointValue), so floats read back bit-exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    SegmentationStorage,
    generate_uid,
)

from . import __version__, codes
from .longitudinal import VisitContext
from .reader import Photograph
from .seg import MANUFACTURER, AlgorithmIdentity, copy_issuer_of_patient_id

__all__ = [
    "NumericMeasurement",
    "QualitativeFinding",
    "PhotoMeasurementGroup",
    "build_measurement_report",
    "read_measurement_report",
]

_CodeLike = (Code, hd.sr.CodedConcept)


def _check_code(value: object, what: str) -> None:
    if not isinstance(value, _CodeLike):
        raise TypeError(f"{what} must be a pydicom Code or highdicom CodedConcept, got {type(value).__name__}")


@dataclass(frozen=True)
class NumericMeasurement:
    """One number of a group (TID 300), e.g. F-Vitiligo 12.5 %, or a grade with ``{grade}``."""

    name: Code
    value: float
    unit: Code
    finding_site: Code | None = None
    tracking_label: str = ""
    segmentation: hd.seg.Segmentation | None = None
    """The SEG this number was measured on, when not the group's (e.g. a change map)."""

    def __post_init__(self) -> None:
        _check_code(self.name, "measurement name")
        _check_code(self.unit, "measurement unit")
        if self.finding_site is not None:
            _check_code(self.finding_site, "measurement finding site")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float, np.integer, np.floating)):
            raise TypeError(f"measurement {self.name.meaning!r}: value must be a number, got {self.value!r}")
        value = float(self.value)
        if not math.isfinite(value):
            raise ValueError(f"measurement {self.name.meaning!r}: value must be finite, got {value}")
        object.__setattr__(self, "value", value)  # float -> also stored as FD, exact round trip
        if len(self.tracking_label) > 64:
            raise ValueError("measurement tracking_label must be at most 64 characters")


@dataclass(frozen=True)
class QualitativeFinding:
    """A coded answer (e.g. Image View = frontal); OHIF does not show these, so grades
    should also be sent as :class:`NumericMeasurement` with unit ``{grade}``."""

    name: Code
    value: Code

    def __post_init__(self) -> None:
        _check_code(self.name, "qualitative finding name")
        _check_code(self.value, "qualitative finding value")


@dataclass(frozen=True, eq=False)
class PhotoMeasurementGroup:
    """Results for one region of one photograph (one TID 1410 group)."""

    photo: Photograph
    outline_xy: np.ndarray
    """(N, 2) column, row image coordinates of the region outline (closed polyline)."""
    tracking_label: str
    finding: Code
    finding_site: Code | None
    measurements: Sequence[NumericMeasurement]
    qualitative: Sequence[QualitativeFinding] = ()
    segmentation: hd.seg.Segmentation | None = None
    """The SEG the measurements come from: referenced as Source of Measurement."""
    tracking_uid: str | None = None
    """Same in every visit of this finding (dicom.longitudinal.tracking_uid); None: a new UID."""
    visit: VisitContext | None = None
    """TID 1502 time point and the earlier reports compared with."""

    def __post_init__(self) -> None:
        if self.tracking_uid is not None and not _is_uid(self.tracking_uid):
            raise ValueError(f"tracking_uid {self.tracking_uid!r} is not a DICOM UID")
        if self.visit is not None and not isinstance(self.visit, VisitContext):
            raise TypeError(f"visit must be a VisitContext, got {type(self.visit).__name__}")
        if not isinstance(self.photo, Photograph):
            raise TypeError(f"photo must be a dicom.reader.Photograph, got {type(self.photo).__name__}")
        if not self.tracking_label or len(self.tracking_label) > 64:
            raise ValueError(f"tracking_label must be 1-64 characters, got {self.tracking_label!r}")
        _check_code(self.finding, "finding")
        if self.finding_site is not None:
            _check_code(self.finding_site, "finding site")
        for m in self.measurements:
            if not isinstance(m, NumericMeasurement):
                raise TypeError(f"measurements must be NumericMeasurement, got {type(m).__name__}")
        for q in self.qualitative:
            if not isinstance(q, QualitativeFinding):
                raise TypeError(f"qualitative must be QualitativeFinding, got {type(q).__name__}")
        if not self.measurements and not self.qualitative:
            raise ValueError(f"group {self.tracking_label!r} has no measurements and no findings")
        names = [m.name.meaning for m in self.measurements]
        if len(set(names)) != len(names):
            raise ValueError(f"group {self.tracking_label!r}: measurement names must be distinct, got {names}")
        if self.segmentation is not None:
            seg = self.segmentation
            if str(getattr(seg, "SOPClassUID", "")) != SegmentationStorage:
                raise ValueError("segmentation must be a DICOM Segmentation (SEG) instance")
            if seg.StudyInstanceUID != self.photo.study_instance_uid:
                raise ValueError("the segmentation belongs to another study than the photograph")
        object.__setattr__(self, "outline_xy", self._closed_outline())

    def _closed_outline(self) -> np.ndarray:
        """Validate the outline, clip it to the image and close it (first = last point)."""
        xy = np.asarray(self.outline_xy, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"outline_xy must have shape (N, 2), got {xy.shape}")
        if not np.isfinite(xy).all():
            raise ValueError("outline_xy contains NaN or infinite coordinates")
        xy = np.column_stack(
            [np.clip(xy[:, 0], 0, self.photo.columns), np.clip(xy[:, 1], 0, self.photo.rows)]
        )
        if len(np.unique(xy, axis=0)) < 3:
            raise ValueError("outline_xy needs at least 3 distinct points")
        if not np.array_equal(xy[0], xy[-1]):
            xy = np.vstack([xy, xy[:1]])
        return xy.astype(np.float32)


def _algorithm_id(algorithm: AlgorithmIdentity) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=[f"{k}={v}" for k, v in algorithm.parameters().items()],
    )


def _group_content(
    group: PhotoMeasurementGroup, algorithm_id: hd.sr.AlgorithmIdentification
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    photo = group.photo
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=group.outline_xy,
        source_image=hd.sr.SourceImageForRegion(photo.sop_class_uid, photo.sop_instance_uid),
    )
    def sources_of(seg: hd.seg.Segmentation | None) -> list[hd.sr.SourceImageForMeasurement] | None:
        if seg is None:
            return None
        return [hd.sr.SourceImageForMeasurement(str(seg.SOPClassUID), str(seg.SOPInstanceUID))]

    sources = sources_of(group.segmentation)
    measurements = [
        hd.sr.Measurement(
            name=m.name,
            value=m.value,
            unit=m.unit,
            tracking_identifier=(
                hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=m.tracking_label)
                if m.tracking_label else None
            ),
            algorithm_id=algorithm_id,
            finding_sites=[hd.sr.FindingSite(m.finding_site)] if m.finding_site else None,
            referenced_images=sources_of(m.segmentation) if m.segmentation is not None else sources,
        )
        for m in group.measurements
    ]
    content = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(group.tracking_uid) if group.tracking_uid else hd.UID(), identifier=group.tracking_label
        ),
        time_point_context=_time_point(group.visit),
        referenced_region=region,
        finding_type=group.finding,
        algorithm_id=algorithm_id,
        finding_sites=[hd.sr.FindingSite(group.finding_site)] if group.finding_site else None,
        measurements=measurements or None,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(q.name, q.value) for q in group.qualitative
        ] or None,
    )
    if group.visit is not None:
        _add_visit_items(content, group.visit)
    return content


def _reference_only(ds: Dataset) -> Dataset:
    ref = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(ref, keyword, ds[keyword].value)
    return ref


def _is_uid(value: str) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and all(
        part.isdigit() and (part == "0" or not part.startswith("0")) for part in value.split(".")
    )


def _time_point(visit: VisitContext | None) -> hd.sr.TimePointContext | None:
    """TID 1502: 'Baseline' or 'Visit n' and its order.

    No Longitudinal Temporal Offset: it is a NUM, and OHIF 3.13.2 shows only a group's first
    five NUMs; days since baseline are a NUM of the comparison group instead.
    """
    if visit is None or visit.order is None:
        return None
    return hd.sr.TimePointContext(
        time_point=visit.time_point,
        time_point_type=codes.BASELINE if visit.order == 1 else codes.POSTTREATMENT,
        time_point_order=visit.order,
    )


def _add_visit_items(content: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations, visit: VisitContext) -> None:
    """Dates of the visits compared with, the earlier SRs (COMPOSITE) and why/what was compared."""
    items = content[0].ContentSequence
    for name, date in ((codes.BASELINE_VISIT_DATE, visit.baseline_date), (codes.PREVIOUS_VISIT_DATE, visit.previous_date)):
        if date is not None:
            items.append(hd.sr.DateContentItem(name, date, hd.sr.RelationshipTypeValues.CONTAINS))
    for name, report in visit.prior_reports:
        items.append(hd.sr.CompositeContentItem(name, str(report.SOPClassUID), str(report.SOPInstanceUID),
                                                hd.sr.RelationshipTypeValues.CONTAINS))
    if visit.comment:
        items.append(hd.sr.TextContentItem(codes.COMMENT, visit.comment, hd.sr.RelationshipTypeValues.CONTAINS))


def _uses_private_codes(groups: Sequence[PhotoMeasurementGroup], procedure: Code) -> bool:
    concepts: list[Any] = [procedure]
    for g in groups:
        if g.visit is not None and (g.visit.prior_reports or g.visit.baseline_date or g.visit.previous_date):
            return True
        concepts += [g.finding, g.finding_site]
        concepts += [c for m in g.measurements for c in (m.name, m.unit, m.finding_site)]
        concepts += [c for q in g.qualitative for c in (q.name, q.value)]
    return any(c is not None and c.scheme_designator == codes.DERMPACS_SCHEME for c in concepts)


def build_measurement_report(
    groups: Sequence[PhotoMeasurementGroup],
    algorithm: AlgorithmIdentity,
    *,
    series_instance_uid: str | None = None,
    series_number: int = 901,
    instance_number: int = 1,
    series_description: str = "dermpacs measurements",
    procedure: Code = codes.PHOTOGRAPHY_OF_PATIENT,
) -> hd.sr.Comprehensive3DSR:
    """Return a TID 1500 Comprehensive 3D SR with one TID 1410 group per ``groups`` item.

    All groups must reference photographs of one study; the SR joins that study in a
    new series. The photographs and SEGs are listed as evidence.
    """
    if not groups:
        raise ValueError("a measurement report needs at least one group")
    if not isinstance(algorithm, AlgorithmIdentity):
        raise TypeError(f"algorithm must be an AlgorithmIdentity, got {type(algorithm).__name__}")
    _check_code(procedure, "procedure")
    for g in groups:
        if not isinstance(g, PhotoMeasurementGroup):
            raise TypeError(f"groups must be PhotoMeasurementGroup, got {type(g).__name__}")
    studies = {g.photo.study_instance_uid for g in groups}
    if len(studies) != 1:
        raise ValueError(f"all groups must reference photographs of one study, got {len(studies)} studies")

    algorithm_id = _algorithm_id(algorithm)
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        # the same algorithm (name, version, weights) is the same observer device
        uid=generate_uid(entropy_srcs=[algorithm.name, algorithm.version, algorithm.weights_sha256]),
        name=algorithm.name,
        manufacturer_name=MANUFACTURER,
        model_name=algorithm.version,
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DEVICE, observer_identifying_attributes=device
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=procedure,
        imaging_measurements=[_group_content(g, algorithm_id) for g in groups],
    )

    evidence: dict[str, Dataset] = {}
    for g in groups:
        evidence.setdefault(g.photo.sop_instance_uid, g.photo.dataset)
        segs = [g.segmentation, *(m.segmentation for m in g.measurements)]
        for seg in segs:
            if seg is not None:
                evidence.setdefault(str(seg.SOPInstanceUID), seg)
        for _, prior in (g.visit.prior_reports if g.visit else ()):
            # Another study: Pertinent Other Evidence (identifiers only).
            evidence.setdefault(str(prior.SOPInstanceUID), _reference_only(prior))
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence.values()),
        content=report,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name,
        software_versions=f"dermpacs {__version__}",
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=series_description,
        coding_schemes=(
            [codes.coding_scheme_identification()] if _uses_private_codes(groups, procedure) else None
        ),
    )
    copy_issuer_of_patient_id(sr, groups[0].photo.dataset)
    return sr


def _text(item: Any) -> str:
    return str(getattr(item, "TextValue", ""))


def read_measurement_report(path_or_dataset: str | Path | Dataset) -> list[dict[str, Any]]:
    """Read back the groups of a dermpacs (or any TID 1500 planar-ROI) report.

    Each group is a dict: ``tracking_label``, ``tracking_uid``,
    ``referenced_sop_instance_uid`` (the photograph the SCOORD lies on),
    ``outline_xy``, ``finding``, ``finding_site``, ``measurements`` ({meaning: (value,
    UCUM code)}), ``qualitative`` ({meaning: value meaning}), ``algorithm`` (name,
    version, parameters) and ``segmentation_sop_instance_uid`` (None if absent).
    """
    if isinstance(path_or_dataset, Dataset):
        dataset = path_or_dataset
    else:
        dataset = pydicom.dcmread(path_or_dataset)
    readers = {
        Comprehensive3DSRStorage: hd.sr.Comprehensive3DSR,
        ComprehensiveSRStorage: hd.sr.ComprehensiveSR,
    }
    sop_class = str(dataset.get("SOPClassUID", ""))
    if sop_class not in readers:
        raise ValueError(f"not a Comprehensive (3D) SR: SOP class {sop_class or '(missing)'}")
    sr = readers[sop_class].from_dataset(dataset, copy=False)
    report = sr.content
    if not isinstance(report, hd.sr.MeasurementReport):
        raise ValueError("the SR is not a TID 1500 measurement report")
    out: list[dict[str, Any]] = []
    for group in report.get_planar_roi_measurement_groups():
        region = group.roi
        referenced_uid = None
        outline = None
        if region is not None:
            outline = np.asarray(region.value, dtype=np.float64)
            referenced_uid = str(region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        measurements: dict[str, tuple[float, str]] = {}
        seg_uid = None
        for m in group.get_measurements():
            measurements[m.name.meaning] = (float(m.value), str(m.unit.value))
            for ref in m.referenced_images or []:
                seg_uid = str(ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        qualitative = {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()}
        algorithm = _group_algorithm(group)
        out.append(
            {
                "tracking_label": group.tracking_identifier,
                "tracking_uid": str(group.tracking_uid),
                "referenced_sop_instance_uid": referenced_uid,
                "outline_xy": outline,
                "finding": group.finding_type.meaning if group.finding_type else None,
                "finding_site": (
                    group.finding_sites[0].value.meaning if group.finding_sites else None
                ),
                "measurements": measurements,
                "qualitative": qualitative,
                "algorithm": algorithm,
                "segmentation_sop_instance_uid": seg_uid,
                **_visit_items(group),
            }
        )
    return out


def _visit_items(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations) -> dict[str, Any]:
    """Time point order (TID 1502), the Comment and the earlier reports referenced (COMPOSITE)."""
    found: dict[str, Any] = {"time_point_order": None, "comment": None, "prior_reports": {}}
    for item in group[0].ContentSequence:
        name = item.ConceptNameCodeSequence[0]
        if item.ValueType == "NUM" and name.CodeValue == "126073":
            found["time_point_order"] = int(float(item.MeasuredValueSequence[0].NumericValue))
        elif item.ValueType == "TEXT" and name.CodeValue == codes.COMMENT.value:
            found["comment"] = _text(item)
        elif item.ValueType == "COMPOSITE":
            found["prior_reports"][str(name.CodeMeaning)] = str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    return found


def _group_algorithm(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations) -> dict[str, Any]:
    """Algorithm Name / Version / Parameters (TID 4019) of a group, as plain values."""
    keys = {"111001": "name", "111003": "version", "111002": "parameters"}
    found: dict[str, Any] = {"name": None, "version": None, "parameters": []}
    for item in group[0].ContentSequence:
        key = keys.get(str(item.ConceptNameCodeSequence[0].CodeValue))
        if key == "parameters":
            found["parameters"].append(_text(item))
        elif key is not None:
            found[key] = _text(item)
    return found
