"""Build DICOM photographs from RGB arrays (demo data, tests, network tests).

The output is a complete VL Photographic Image (or Secondary Capture Image) instance,
valid for dciodvfy, in any transfer syntax a PACS commonly sends photographs in, so
that the reader can be tested against what it meets in practice.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    VLPhotographicImageStorage,
    generate_uid,
)

from . import codes

__all__ = [
    "PatientInfo",
    "DEMO_PATIENT",
    "SUPPORTED_ENCODINGS",
    "photograph_dataset",
    "write_dataset",
    "pattern_image",
]

SUPPORTED_ENCODINGS: dict[UID, tuple[str, ...]] = {
    # transfer syntax -> photometric interpretations it can produce (first = default)
    ExplicitVRLittleEndian: ("RGB", "YBR_FULL"),
    ImplicitVRLittleEndian: ("RGB", "YBR_FULL"),
    JPEGBaseline8Bit: ("YBR_FULL_422", "RGB"),
    JPEG2000Lossless: ("YBR_RCT", "RGB"),
    JPEG2000: ("YBR_ICT", "RGB"),
    JPEGLSLossless: ("RGB",),
    JPEGLSNearLossless: ("RGB",),
    RLELossless: ("RGB", "YBR_FULL"),
}
"""Transfer syntaxes :func:`photograph_dataset` writes, with the colour photometric
interpretations possible for each (monochrome images are always MONOCHROME2). The VL
Photographic Image IOD allows only the first (and planar configuration 0: dciodvfy
checks both); the others are for Secondary Capture. Deflate is left out because
dciodvfy cannot read it (the reader accepts it)."""

_NATIVE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
_SOP_CLASSES = {
    "vl_photo": VLPhotographicImageStorage,
    "secondary_capture": SecondaryCaptureImageStorage,
}
# PatientOrientation (row direction, column direction) for each view of the face:
# frontal: image right = patient left; left profile: nose to the image left, so image
# right = posterior; right profile: image right = anterior. Rows run head to feet.
_ORIENTATION = {"frontal": ["L", "F"], "left": ["P", "F"], "right": ["A", "F"]}
_BODY_PART_REGION = {"FACE": codes.FACE, "SCALP": codes.SCALP, "SKIN": codes.SKIN}
_MANUFACTURER = "dermpacs"
_MODEL = "dermpacs synthetic photograph"
_SOFTWARE = "dermpacs 0.1.0"


@dataclass(frozen=True)
class PatientInfo:
    """Patient and study identification written into generated photographs."""

    name: str = "Demo^Dermpacs"
    patient_id: str = "DERMPACS-DEMO-0001"
    birth_date: str = "19800101"
    sex: Literal["F", "M", "O", ""] = "F"
    accession_number: str = ""
    study_id: str = "1"
    study_description: str = "Dermatology photography"
    study_datetime: _dt.datetime | None = None
    """None: the time of the call (pass one value for all photographs of a study)."""

    def __post_init__(self) -> None:
        if not self.patient_id or len(self.patient_id) > 64:
            raise ValueError("patient_id must be 1-64 characters (LO)")
        if self.birth_date and (len(self.birth_date) != 8 or not self.birth_date.isdigit()):
            raise ValueError(f"birth_date must be YYYYMMDD, got {self.birth_date!r}")
        if self.sex not in ("F", "M", "O", ""):
            raise ValueError(f"sex must be F, M, O or empty, got {self.sex!r}")
        if len(self.study_id) > 16:
            raise ValueError("study_id must be at most 16 characters (SH)")
        if len(self.accession_number) > 16:
            raise ValueError("accession_number must be at most 16 characters (SH)")


DEMO_PATIENT = PatientInfo()
"""Synthetic demo patient (not a real person)."""


def _check_pixels(rgb: np.ndarray, monochrome: bool) -> np.ndarray:
    """Return the pixels to encode: (H, W, 3) RGB or, for monochrome, (H, W) grey."""
    if not isinstance(rgb, np.ndarray):
        raise TypeError(f"rgb must be a numpy array, got {type(rgb).__name__}")
    if rgb.dtype != np.uint8:
        raise TypeError(f"rgb must be uint8, got {rgb.dtype}")
    if rgb.ndim == 3 and rgb.shape[2] == 3:
        if monochrome:
            return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        return np.ascontiguousarray(rgb)
    if rgb.ndim == 2 and monochrome:
        return np.ascontiguousarray(rgb)
    raise ValueError(
        f"rgb must have shape (H, W, 3){' or (H, W)' if monochrome else ''}, got {rgb.shape}"
    )


def _base_dataset(
    sop_class_uid: UID, patient: PatientInfo, study_uid: str, series_uid: str,
    series_number: int, instance_number: int, series_description: str,
) -> Dataset:
    """Patient, study, series, equipment and SOP common modules."""
    now = _dt.datetime.now()
    study_dt = patient.study_datetime or now
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    # Patient
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    # General Study
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = study_dt.strftime("%Y%m%d")
    ds.StudyTime = study_dt.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = patient.study_id
    ds.AccessionNumber = patient.accession_number
    ds.StudyDescription = patient.study_description
    # General Series
    ds.Modality = "XC"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = ds.StudyTime
    if series_description:
        ds.SeriesDescription = series_description
    # General Equipment
    ds.Manufacturer = _MANUFACTURER
    ds.ManufacturerModelName = _MODEL
    ds.SoftwareVersions = _SOFTWARE
    ds.InstitutionName = "dermpacs demo clinic"
    # General Image
    ds.InstanceNumber = instance_number
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "YES"
    return ds


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _set_pixel_module(ds: Dataset, pixels: np.ndarray, photometric: str, planar: int) -> None:
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel = 1 if pixels.ndim == 2 else 3
    ds.PhotometricInterpretation = photometric
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = planar
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0


def _set_lossy(ds: Dataset, raw_size: int, compressed_size: int, method: str) -> None:
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = f"{raw_size / max(compressed_size, 1):.2f}"
    ds.LossyImageCompressionMethod = method


def _encode_pixels(
    ds: Dataset, pixels: np.ndarray, ts: UID, photometric: str, planar: int, jpeg_quality: int
) -> None:
    """Fill Image Pixel attributes and PixelData for ``ts``."""
    raw_size = pixels.size
    mono = pixels.ndim == 2
    if ts in _NATIVE:
        data = pixels
        if photometric == "YBR_FULL":
            data = pydicom.pixels.convert_color_space(pixels, "RGB", "YBR_FULL")
        if not mono and planar == 1:
            data = np.ascontiguousarray(data.transpose(2, 0, 1))
        _set_pixel_module(ds, pixels, photometric, planar)
        ds.PixelData = data.tobytes()
        ds.LossyImageCompression = "00"
        return
    if planar != 0:
        raise ValueError(
            f"planar_configuration must be 0 for compressed transfer syntax {ts.name} "
            "(PS3.5 8.2: the codec defines the component order)"
        )
    if ts == JPEGBaseline8Bit:
        if mono or photometric == "YBR_FULL_422":
            img = pixels if mono else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(
                ".jpg", img,
                [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality,
                 cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422],
            )
            if not ok:
                raise RuntimeError("OpenCV failed to encode the JPEG")
            frame = buf.tobytes()
        else:  # RGB components, no colour transform (Adobe marker), no subsampling
            from PIL import Image

            out = io.BytesIO()
            Image.fromarray(pixels).save(
                out, "JPEG", quality=jpeg_quality, subsampling=0, keep_rgb=True
            )
            frame = out.getvalue()
        _set_pixel_module(ds, pixels, photometric, 0)
        ds.PixelData = encapsulate([frame])
        _set_lossy(ds, raw_size, len(frame), "ISO_10918_1")
    elif ts in (JPEG2000Lossless, JPEG2000):
        import openjpeg

        lossless = ts == JPEG2000Lossless
        frame = openjpeg.encode(
            pixels,
            bits_stored=8,
            photometric_interpretation=2 if mono else 1,
            use_mct=photometric in ("YBR_RCT", "YBR_ICT"),
            compression_ratios=None if lossless else [10.0],
        )
        _set_pixel_module(ds, pixels, photometric, 0)
        ds.PixelData = encapsulate([frame])
        if lossless:
            ds.LossyImageCompression = "00"
        else:
            _set_lossy(ds, raw_size, len(frame), "ISO_15444_1")
    elif ts in (JPEGLSLossless, JPEGLSNearLossless, RLELossless):
        _set_pixel_module(ds, pixels, "RGB" if not mono else photometric, 0)
        data = pixels
        if photometric == "YBR_FULL":
            data = pydicom.pixels.convert_color_space(pixels, "RGB", "YBR_FULL")
            ds.PhotometricInterpretation = "YBR_FULL"
        kwargs = {"jls_error": 2} if ts == JPEGLSNearLossless else {}
        ds.compress(ts, data, generate_instance_uid=False, **kwargs)
        if ts == JPEGLSNearLossless:
            _set_lossy(ds, raw_size, len(ds.PixelData), "ISO_14495_1")
        else:
            ds.LossyImageCompression = "00"
    else:  # pragma: no cover - guarded by SUPPORTED_ENCODINGS
        raise ValueError(f"unsupported transfer syntax {ts}")


def photograph_dataset(
    rgb: np.ndarray,
    *,
    transfer_syntax: str = JPEGBaseline8Bit,
    sop_class: Literal["vl_photo", "secondary_capture"] = "vl_photo",
    monochrome: bool = False,
    planar_configuration: int = 0,
    patient: PatientInfo | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
    instance_number: int = 1,
    series_description: str = "",
    body_part: str = "FACE",
    anatomic_region: Code | None = None,
    view: Literal["left", "frontal", "right"] | None = None,
    pixel_spacing_mm: tuple[float, float] | None = None,
    jpeg_quality: int = 92,
    photometric: str | None = None,
) -> Dataset:
    """Return a complete VL Photographic (or Secondary Capture) Image dataset.

    ``rgb`` is uint8 (H, W, 3); with ``monochrome`` it may also be (H, W) and colour
    input is converted to luminance (MONOCHROME2). ``photometric`` picks the colour
    encoding among ``SUPPORTED_ENCODINGS[transfer_syntax]`` (default: the first).
    ``planar_configuration`` 1 is only possible for native (uncompressed) syntaxes.
    The view is written as ViewCodeSequence (SCT frontal / left lateral / right
    lateral, as in CID 4010) and as PatientOrientation; laterality is not set because
    the face is an unpaired structure. The dataset has file meta information and can
    be written with :func:`write_dataset`.
    """
    ts = UID(str(transfer_syntax))
    if ts not in SUPPORTED_ENCODINGS:
        names = ", ".join(u.name for u in SUPPORTED_ENCODINGS)
        raise ValueError(f"cannot encode transfer syntax {ts} ({ts.name}); supported: {names}")
    if sop_class not in _SOP_CLASSES:
        raise ValueError(f"sop_class must be one of {sorted(_SOP_CLASSES)}, got {sop_class!r}")
    if planar_configuration not in (0, 1):
        raise ValueError(f"planar_configuration must be 0 or 1, got {planar_configuration!r}")
    if view is not None and view not in _ORIENTATION:
        raise ValueError(f"view must be one of {sorted(_ORIENTATION)} or None, got {view!r}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be 1-100, got {jpeg_quality}")
    if pixel_spacing_mm is not None and (
        len(pixel_spacing_mm) != 2 or min(pixel_spacing_mm) <= 0
    ):
        raise ValueError(f"pixel_spacing_mm must be two positive numbers, got {pixel_spacing_mm!r}")
    pixels = _check_pixels(rgb, monochrome)
    if pixels.ndim == 2:
        if photometric not in (None, "MONOCHROME2"):
            raise ValueError("monochrome images are always encoded as MONOCHROME2")
        photometric = "MONOCHROME2"
    else:
        allowed = SUPPORTED_ENCODINGS[ts]
        photometric = photometric or allowed[0]
        if photometric not in allowed:
            raise ValueError(
                f"photometric {photometric!r} is not possible with {ts.name}; "
                f"choose one of {allowed}"
            )
        if sop_class == "vl_photo" and photometric != allowed[0]:
            raise ValueError(
                f"the VL Photographic Image IOD allows only {allowed[0]} with {ts.name} "
                f"(not {photometric}); use sop_class='secondary_capture'"
            )
    if sop_class == "vl_photo" and planar_configuration != 0:
        raise ValueError(
            "the VL Photographic Image IOD requires planar configuration 0; "
            "use sop_class='secondary_capture' for planar configuration 1"
        )
    if anatomic_region is None:
        anatomic_region = _BODY_PART_REGION.get(body_part.upper())
        if anatomic_region is None:
            raise ValueError(
                f"no default anatomic region for body part {body_part!r}; pass anatomic_region"
            )

    sop_class_uid = _SOP_CLASSES[sop_class]
    ds = _base_dataset(
        sop_class_uid,
        patient or DEMO_PATIENT,
        study_uid or generate_uid(),
        series_uid or generate_uid(),
        series_number,
        instance_number,
        series_description,
    )
    ds.BodyPartExamined = body_part.upper()
    ds.PatientOrientation = _ORIENTATION[view] if view else ""
    ds.AnatomicRegionSequence = DicomSequence([_code_item(anatomic_region)])
    if view is not None:
        ds.ViewCodeSequence = DicomSequence([_code_item(codes.VIEW_CODES[view])])
    if sop_class == "vl_photo":
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.AcquisitionContextSequence = DicomSequence([])
    else:
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.ConversionType = "WSD"
        ds.DateOfSecondaryCapture = ds.ContentDate
        ds.TimeOfSecondaryCapture = ds.ContentTime
    if pixel_spacing_mm is not None:
        ds.PixelSpacing = [f"{float(v):.10g}" for v in pixel_spacing_mm]

    _encode_pixels(ds, pixels, ts, photometric, planar_configuration, jpeg_quality)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    ds.set_original_encoding(ts.is_implicit_VR, ts.is_little_endian)
    return ds


def pattern_image(height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """Return a structured uint8 RGB image (gradients, edges, texture, a skin-like blob).

    Codec tests need structure: a flat image would hide colour-conversion, subsampling
    and plane-order mistakes.
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = (x * 255 // max(width - 1, 1)).astype(np.uint8)
    img[..., 1] = (y * 255 // max(height - 1, 1)).astype(np.uint8)
    img[..., 2] = ((x // 7 + y // 5) * 9 % 256).astype(np.uint8)
    cy, cx = height / 2, width / 2
    blob = ((y - cy) / (0.3 * height)) ** 2 + ((x - cx) / (0.25 * width)) ** 2 < 1
    img[blob] = (224, 172, 150)
    img[: height // 8, : width // 8] = (255, 255, 255)
    noise = rng.integers(-4, 5, size=img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)




def write_dataset(ds: Dataset, path: str | Path) -> Path:
    """Write ``ds`` as a DICOM file atomically: temporary file, fsync, rename.

    A reader (or a crash) never sees a half-written file, which matters once the
    network service stores received instances with it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            pydicom.dcmwrite(fh, ds, enforce_file_format=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path
