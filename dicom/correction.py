"""A clinician's corrected segmentation: a DICOM SEG over one photograph, made by someone else.

dermpacs learns from SEGs that a dermatologist edited (e.g. in OHIF) and stored back into
the PACS. This module reads such a SEG without trusting it: which photograph it
references, who made it, and one boolean mask per segment with the segment's coded
property type. Deciding whether the SEG is a usable correction (analysed photograph, same
patient, the right segments) is the caller's job; here only DICOM facts are extracted.
No pixel data of the photograph is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom import Dataset

from .seg import MANUFACTURER

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SEG_ACCEPTED_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian (OHIF's dcmjs writes this)
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian (dermpacs's own)
)


class CorrectionError(ValueError):
    """A SEG that cannot be read as a correction; the message is the reason (no patient data)."""


@dataclass(frozen=True)
class CorrectedSegment:
    """One segment of the SEG: number, label, property type code, and its mask."""

    number: int
    label: str
    scheme: str
    code: str
    meaning: str
    mask: np.ndarray = field(repr=False)

    @property
    def coded(self) -> str:
        return f"{self.scheme}:{self.code}"

    def describe(self) -> str:
        return f"segment {self.number} {self.label!r} ({self.scheme} {self.code} {self.meaning})"


@dataclass(frozen=True)
class SegmentationCorrection:
    """What a SEG says about itself and the photograph it segments."""

    sop_instance_uid: str
    study_instance_uid: str
    patient_id: str  # compared with the photograph's; never logged or written out
    manufacturer: str
    content_creator: str
    content_date: str
    referenced_sop_instance_uids: tuple[str, ...]
    rows: int
    columns: int
    segments: tuple[CorrectedSegment, ...]

    @property
    def made_by_dermpacs(self) -> bool:
        """dermpacs's own results are not corrections (routers must not send them back either)."""
        return self.manufacturer.strip().lower() == MANUFACTURER

    @property
    def creator(self) -> str:
        """Manufacturer / content creator, for the audit (device names, not patient data)."""
        return f"{self.manufacturer or '?'} / {self.content_creator or '?'}"

    @classmethod
    def read(cls, source: str | Path | Dataset) -> "SegmentationCorrection":
        ds = source if isinstance(source, Dataset) else pydicom.dcmread(source)
        if str(ds.get("SOPClassUID", "")) != SEGMENTATION_STORAGE:
            raise CorrectionError("not a Segmentation Storage instance")
        seg_type = str(ds.get("SegmentationType", "")).upper()
        if seg_type not in ("BINARY", "FRACTIONAL"):
            raise CorrectionError(f"segmentation type {seg_type or 'missing'} is not supported (BINARY or FRACTIONAL)")
        refs = _referenced_instances(ds)
        segments = _segments(ds, seg_type)
        return cls(
            sop_instance_uid=str(ds.SOPInstanceUID),
            study_instance_uid=str(ds.get("StudyInstanceUID", "")),
            patient_id=str(ds.get("PatientID", "") or ""),
            manufacturer=str(ds.get("Manufacturer", "") or ""),
            content_creator=str(ds.get("ContentCreatorName", "") or ""),
            content_date=str(ds.get("ContentDate", "") or ds.get("SeriesDate", "") or ""),
            referenced_sop_instance_uids=tuple(refs),
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            segments=tuple(segments),
        )


def _referenced_instances(ds: Dataset) -> list[str]:
    """Photographs the SEG references: Referenced Series + per-frame derivation sources, in order."""
    found: list[str] = []
    for series in ds.get("ReferencedSeriesSequence", []) or []:
        for item in series.get("ReferencedInstanceSequence", []) or []:
            found.append(str(item.ReferencedSOPInstanceUID))
    for frame in ds.get("PerFrameFunctionalGroupsSequence", []) or []:
        for derivation in frame.get("DerivationImageSequence", []) or []:
            for source in derivation.get("SourceImageSequence", []) or []:
                found.append(str(source.ReferencedSOPInstanceUID))
    for item in ds.get("SourceImageSequence", []) or []:
        found.append(str(item.ReferencedSOPInstanceUID))
    return list(dict.fromkeys(u for u in found if u))


def _segments(ds: Dataset, seg_type: str) -> list[CorrectedSegment]:
    descriptions = {}
    for item in ds.get("SegmentSequence", []) or []:
        code = (item.get("SegmentedPropertyTypeCodeSequence") or [None])[0]
        if code is None:
            raise CorrectionError(f"segment {item.get('SegmentNumber')} has no property type code")
        descriptions[int(item.SegmentNumber)] = (
            str(item.get("SegmentLabel", "") or ""), str(code.CodingSchemeDesignator), str(code.CodeValue),
            str(code.get("CodeMeaning", "") or ""),
        )
    if not descriptions:
        raise CorrectionError("the SEG has no segments")
    frames = ds.get("PerFrameFunctionalGroupsSequence", []) or []
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a reason to refuse
        raise CorrectionError(f"pixel data cannot be decoded: {type(exc).__name__}") from exc
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    if len(frames) != pixels.shape[0]:
        raise CorrectionError(f"{pixels.shape[0]} frames but {len(frames)} per-frame descriptions")
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    shared_ident = (shared.get("SegmentIdentificationSequence") or [None])[0]  # one-segment SEGs (highdicom)
    masks: dict[int, np.ndarray] = {}
    for index, frame in enumerate(frames):
        ident = (frame.get("SegmentIdentificationSequence") or [shared_ident])[0]
        if ident is None:
            raise CorrectionError(f"frame {index + 1} names no segment")
        number = int(ident.ReferencedSegmentNumber)
        if number not in descriptions:
            raise CorrectionError(f"frame {index + 1} names segment {number}, which is not described")
        threshold = 0.5 * float(ds.get("MaximumFractionalValue", 255)) if seg_type == "FRACTIONAL" else 0.5
        plane = pixels[index] > threshold
        masks[number] = masks[number] | plane if number in masks else plane
    rows, cols = int(ds.Rows), int(ds.Columns)
    return [CorrectedSegment(n, *descriptions[n], mask=masks.get(n, np.zeros((rows, cols), bool)))
            for n in sorted(descriptions)]
