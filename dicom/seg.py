"""DICOM SEG for a photograph, in the form OHIF 3.13.2 draws and dciodvfy accepts.

highdicom builds the BINARY Segmentation; this module then adds what a photograph
lacks (DESIGN.md, "SEG for a photograph"): PatientOrientation copied from the photo,
an own FrameOfReferenceUID, shared Plane Orientation (1\\0\\0\\0\\1\\0) next to the
Pixel Measures (real spacing or 1\\1, thickness 1) and a per-frame Plane Position.
Without them OHIF crashes on the SEG; with them dciodvfy is still clean.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from highdicom.seg.enum import SegmentsOverlapValues, SegmentationTypeValues
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from . import __version__, codes
from .reader import Photograph

__all__ = [
    "AlgorithmIdentity",
    "SegmentSpec",
    "build_photo_segmentation",
    "SEG_TRANSFER_SYNTAXES",
    "warm_up",
]

MANUFACTURER = "dermpacs"
MODEL_NAME = "dermpacs photograph analysis"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_code(value: object, what: str) -> None:
    if not isinstance(value, (Code, hd.sr.CodedConcept)):
        raise TypeError(f"{what} must be a pydicom Code or highdicom CodedConcept, got {type(value).__name__}")


@dataclass(frozen=True)
class AlgorithmIdentity:
    """The model that produced a result; written to the SEG and the SR.

    ``weights_sha256`` (lowercase hex) ties every stored result to the exact weights
    file, so results can be audited after a model update.
    """

    name: str
    version: str
    family: Code
    weights_sha256: str
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 64:
            raise ValueError(f"algorithm name must be 1-64 characters (LO), got {self.name!r}")
        if not self.version or len(self.version) > 64:
            raise ValueError(f"algorithm version must be 1-64 characters (LO), got {self.version!r}")
        if "\\" in self.name or "\\" in self.version:
            raise ValueError("algorithm name and version must not contain a backslash")
        _check_code(self.family, "algorithm family")
        if not _SHA256.fullmatch(self.weights_sha256):
            raise ValueError(
                "weights_sha256 must be 64 lowercase hexadecimal characters, got "
                f"{self.weights_sha256!r}"
            )
        if len(self.description) > 10240:
            raise ValueError("algorithm description must be at most 10240 characters (LT)")

    def parameters(self) -> dict[str, str]:
        """Algorithm parameters recorded with the identification (hash, description)."""
        params = {"weights_sha256": self.weights_sha256}
        if self.description:
            params["description"] = self.description
        return params

    def seg_identification(self) -> hd.AlgorithmIdentificationSequence:
        return hd.AlgorithmIdentificationSequence(
            name=self.name, family=self.family, version=self.version,
            source=MANUFACTURER, parameters=self.parameters(),
        )


@dataclass(frozen=True)
class SegmentSpec:
    """What one segment is: label, category/type codes, optional region and colour."""

    label: str
    category: Code
    property_type: Code
    anatomic_region: Code | None = None
    color_rgb: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if not self.label or len(self.label) > 64:
            raise ValueError(f"segment label must be 1-64 characters (LO), got {self.label!r}")
        _check_code(self.category, "segment category")
        _check_code(self.property_type, "segment property type")
        if self.anatomic_region is not None:
            _check_code(self.anatomic_region, "segment anatomic region")
        if self.color_rgb is not None and (
            len(self.color_rgb) != 3 or not all(0 <= int(c) <= 255 for c in self.color_rgb)
        ):
            raise ValueError(f"color_rgb must be three values 0-255, got {self.color_rgb!r}")


class _PhotoSegmentation(hd.seg.Segmentation):
    """highdicom Segmentation with a faster overlap check for boolean segment stacks.

    highdicom decides SegmentsOverlap by summing the (1, H, W, S) stack into int64
    (0.2 s for a 12 MP photograph). For a boolean stack the same answer comes from
    running AND/OR over the segments (~10 ms). Every other input goes to highdicom.
    """

    @classmethod
    def _check_and_cast_pixel_array(cls, pixel_array, segment_numbers, segmentation_type, dtype):
        if (
            isinstance(pixel_array, np.ndarray)
            and pixel_array.dtype == np.bool_
            and pixel_array.ndim == 4
            and SegmentationTypeValues(segmentation_type) == SegmentationTypeValues.BINARY
        ):
            if pixel_array.shape[-1] != len(segment_numbers):
                raise ValueError(
                    f"the mask stack has {pixel_array.shape[-1]} segments but "
                    f"{len(segment_numbers)} segments are described"
                )
            overlap = SegmentsOverlapValues.NO
            seen = pixel_array[..., 0].copy()
            for index in range(1, pixel_array.shape[-1]):
                segment = pixel_array[..., index]
                if overlap is SegmentsOverlapValues.NO and np.logical_and(seen, segment).any():
                    overlap = SegmentsOverlapValues.YES
                    break
                np.logical_or(seen, segment, out=seen)
            return pixel_array, overlap
        return super()._check_and_cast_pixel_array(
            pixel_array, segment_numbers, segmentation_type, dtype
        )


def _segment_descriptions(
    segments: Sequence[SegmentSpec], algorithm: AlgorithmIdentity
) -> list[hd.seg.SegmentDescription]:
    identification = algorithm.seg_identification()
    out = []
    for number, spec in enumerate(segments, start=1):
        out.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=spec.label,
                segmented_property_category=spec.category,
                segmented_property_type=spec.property_type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=identification,
                tracking_uid=hd.UID(),
                tracking_id=spec.label,
                anatomic_regions=[spec.anatomic_region] if spec.anatomic_region else None,
                display_color=(
                    hd.color.CIELabColor.from_rgb(*spec.color_rgb) if spec.color_rgb else None
                ),
            )
        )
    return out


def _uses_private_codes(segments: Sequence[SegmentSpec]) -> bool:
    return any(
        c is not None and c.scheme_designator == codes.DERMPACS_SCHEME
        for s in segments
        for c in (s.category, s.property_type, s.anatomic_region)
    )


def _check_masks(photo: Photograph, segments: Sequence[SegmentSpec], masks: np.ndarray) -> np.ndarray:
    if not isinstance(photo, Photograph):
        raise TypeError(f"photo must be a dicom.reader.Photograph, got {type(photo).__name__}")
    if not segments:
        raise ValueError("at least one segment is needed")
    for spec in segments:
        if not isinstance(spec, SegmentSpec):
            raise TypeError(f"segments must be SegmentSpec, got {type(spec).__name__}")
    labels = [s.label for s in segments]
    if len(set(labels)) != len(labels):
        raise ValueError(f"segment labels must be unique, got {labels}")
    if not isinstance(masks, np.ndarray):
        raise TypeError(f"masks must be a numpy array, got {type(masks).__name__}")
    if masks.ndim == 2 and len(segments) == 1:
        masks = masks[:, :, None]
    expected = (photo.rows, photo.columns, len(segments))
    if masks.shape != expected:
        raise ValueError(
            f"masks must have shape (rows, columns, segments) = {expected}, got {masks.shape}"
        )
    if masks.dtype != np.bool_:
        if not np.issubdtype(masks.dtype, np.integer) or masks.max(initial=0) > 1 or masks.min(initial=0) < 0:
            raise ValueError(f"masks must be boolean (or 0/1 integers), got dtype {masks.dtype}")
        masks = masks.astype(bool)
    return masks


def copy_issuer_of_patient_id(result: Dataset, source: Dataset) -> None:
    """highdicom copies Patient ID but not its issuer; priors are matched on both (dicom.longitudinal)."""
    issuer = source.get("IssuerOfPatientID")
    if issuer:
        result.IssuerOfPatientID = issuer


def _add_photo_geometry(seg: hd.seg.Segmentation, photo: Photograph) -> None:
    """Add the plane geometry OHIF needs (DESIGN.md) to a SEG of a photograph."""
    source = photo.dataset
    seg.PatientOrientation = source.get("PatientOrientation", "")
    if "FrameOfReferenceUID" not in seg:
        seg.FrameOfReferenceUID = hd.UID()
        seg.PositionReferenceIndicator = ""
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PlaneOrientationSequence" not in shared:
        shared.PlaneOrientationSequence = hd.PlaneOrientationSequence(
            coordinate_system="PATIENT", image_orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        )
    for frame in seg.PerFrameFunctionalGroupsSequence:
        if "PlanePositionSequence" not in frame:
            frame.PlanePositionSequence = hd.PlanePositionSequence(
                coordinate_system="PATIENT", image_position=(0.0, 0.0, 0.0)
            )


SEG_TRANSFER_SYNTAXES = (DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def build_photo_segmentation(
    photo: Photograph,
    segments: Sequence[SegmentSpec],
    masks: np.ndarray,
    algorithm: AlgorithmIdentity,
    *,
    series_instance_uid: str | None = None,
    series_number: int = 900,
    instance_number: int = 1,
    series_description: str = "dermpacs segmentation",
    transfer_syntax_uid: str = DeflatedExplicitVRLittleEndian,
) -> hd.seg.Segmentation:
    """Return a BINARY SEG of ``photo`` with one frame per segment.

    ``masks`` is bool (rows, columns, S) in the order of ``segments``; segments may
    overlap (face skin contains vitiligo). Empty segments keep their (empty) frame, so
    "no vitiligo found" is stored as an explicit empty Vitiligo segment rather than a
    missing one. The result goes into the photograph's study, in a new series.

    Written Deflated Explicit VR Little Endian by default: a full-resolution mask of a
    12-megapixel photograph is 1.5 MB a segment uncompressed and ~10 kB deflated (zlib,
    ~10 ms), which is what the PACS stores and the network carries. OHIF 3.13.2 reads it
    (make e2e); a peer that does not accept deflate gets it re-encoded uncompressed by the
    sender's negotiation. highdicom allows no compressed syntax for BINARY segmentations.
    """
    transfer_syntax_uid = UID(transfer_syntax_uid)
    if transfer_syntax_uid not in SEG_TRANSFER_SYNTAXES:
        raise ValueError(f"a BINARY SEG can be written in {', '.join(t.name for t in SEG_TRANSFER_SYNTAXES)}, "
                         f"not {transfer_syntax_uid.name}")
    masks = _check_masks(photo, segments, masks)
    if not isinstance(algorithm, AlgorithmIdentity):
        raise TypeError(f"algorithm must be an AlgorithmIdentity, got {type(algorithm).__name__}")
    spacing = photo.pixel_spacing_mm or (1.0, 1.0)
    seg = _PhotoSegmentation(
        source_images=[photo.dataset],
        pixel_array=masks[np.newaxis],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(segments, algorithm),
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=[f"dermpacs {__version__}", f"{algorithm.name} {algorithm.version}"[:64]],  # type: ignore[arg-type]
        device_serial_number="0",
        content_label="DERMPACS",
        content_description=algorithm.name,
        transfer_syntax_uid=ImplicitVRLittleEndian if transfer_syntax_uid == ImplicitVRLittleEndian
        else ExplicitVRLittleEndian,
        pixel_measures=hd.PixelMeasuresSequence(pixel_spacing=spacing, slice_thickness=1.0),
        omit_empty_frames=False,
        series_description=series_description,
        coding_schemes=(
            [codes.coding_scheme_identification()] if _uses_private_codes(segments) else None
        ),
    )
    _add_photo_geometry(seg, photo)
    copy_issuer_of_patient_id(seg, photo.dataset)
    seg.file_meta.TransferSyntaxUID = transfer_syntax_uid  # deflating is pydicom's, on writing
    return seg


def warm_up() -> None:
    """Build and discard a tiny SEG so highdicom loads its DICOM tables (~0.4 s) now.

    Call once at service or application start, not per photograph.
    """
    from .encode import photograph_dataset

    pixels = np.zeros((64, 64, 3), np.uint8)
    ds = photograph_dataset(pixels, transfer_syntax=ExplicitVRLittleEndian)
    del ds.PixelData
    photo = Photograph(Path("warm-up"), ds, pixels, False, None)
    spec = SegmentSpec("warm-up", codes.TISSUE, codes.SKIN)
    algorithm = AlgorithmIdentity("warm-up", "0", codes.ARTIFICIAL_INTELLIGENCE, "0" * 64)
    build_photo_segmentation(photo, [spec], np.zeros((64, 64, 1), bool), algorithm)
