"""Read a DICOM photograph into an RGB array, with errors a user can act on.

Everything a PACS may send is either decoded or rejected with a
:class:`PhotographError` subclass whose message is one line naming the problem (SOP
class, transfer syntax, photometric interpretation, size), never a traceback and never
patient identification. JPEG Baseline frames are decoded with OpenCV (about 5x faster
than pydicom for a 12 MP photograph); everything else goes through pydicom.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

__all__ = [
    "Photograph",
    "PhotographError",
    "NotDicomError",
    "UnsupportedSopClassError",
    "UnsupportedTransferSyntaxError",
    "UnsupportedPhotometricError",
    "CorruptPixelDataError",
    "ImageTooSmallError",
    "ImageTooLargeError",
    "SUPPORTED_SOP_CLASSES",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "read_photograph",
    "FileIdentity",
    "read_file_identity",
]


@dataclass(frozen=True)
class FileIdentity:
    """What a Part 10 file's meta group says it holds."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: UID


def read_file_identity(path: str | Path) -> FileIdentity:
    """The identity of a DICOM file from its File Meta Information alone.

    Only the meta group is read (it is never compressed): a Deflated SEG is not inflated,
    a 12-megapixel photograph is not parsed. Raises for a file without a complete meta group.
    """
    meta = pydicom.filereader.read_file_meta_info(path)
    missing = [kw for kw in ("MediaStorageSOPInstanceUID", "MediaStorageSOPClassUID", "TransferSyntaxUID")
               if not meta.get(kw)]
    if missing:
        raise ValueError(f"{Path(path).name}: file meta information lacks {', '.join(missing)}")
    return FileIdentity(str(meta.MediaStorageSOPInstanceUID), str(meta.MediaStorageSOPClassUID),
                        UID(meta.TransferSyntaxUID))


class PhotographError(Exception):
    """A file that cannot be analysed as a photograph; ``str(e)`` is shown to users."""


class NotDicomError(PhotographError):
    """The file is not a DICOM file (or is too damaged to parse)."""


class UnsupportedSopClassError(PhotographError):
    """The instance is DICOM but not a photograph (CT, MR, SR, ...)."""


class UnsupportedTransferSyntaxError(PhotographError):
    """The pixel data are encoded in a transfer syntax dermpacs does not decode."""


class UnsupportedPhotometricError(PhotographError):
    """Pixel format not handled: photometric interpretation, samples, bit depth, frames."""


class CorruptPixelDataError(PhotographError):
    """Pixel data missing, truncated or undecodable."""


class ImageTooSmallError(PhotographError):
    """The image is smaller than the analyses need."""


class ImageTooLargeError(PhotographError):
    """The image has more pixels than allowed (checked before decoding)."""


SUPPORTED_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.7": "Dermoscopic Photography Image Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    # Multi-frame SC classes are accepted when they hold a single frame.
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
}

SUPPORTED_TRANSFER_SYNTAXES: frozenset[UID] = frozenset(
    {
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        JPEGBaseline8Bit,
        JPEG2000Lossless,
        JPEG2000,
        JPEGLSLossless,
        JPEGLSNearLossless,
        RLELossless,
    }
)

_COLOUR = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})
_MONO = frozenset({"MONOCHROME1", "MONOCHROME2"})
_NATIVE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})
_JPEG_EOI = b"\xff\xd9"
_CV2_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


@dataclass(frozen=True, eq=False)
class Photograph:
    """A decoded photograph and its DICOM header (PixelData removed to save memory).

    Compared by identity (``eq=False``): comparing pixel arrays field by field is
    neither cheap nor meaningful.
    """

    path: Path
    dataset: Dataset
    pixels: np.ndarray
    """uint8 (H, W, 3) RGB, C-contiguous; grey images are replicated to 3 channels."""
    is_monochrome: bool
    pixel_spacing_mm: tuple[float, float] | None
    """(row, column) spacing from PixelSpacing, None when the image is not calibrated."""

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def study_instance_uid(self) -> str:
        return str(self.dataset.StudyInstanceUID)

    @property
    def series_instance_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)

    @property
    def rows(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def columns(self) -> int:
        return int(self.pixels.shape[1])


def _uid_text(uid: str) -> str:
    name = UID(uid).name
    return f"{uid} ({name})" if name and name != uid else uid


def _looks_like_raw_dataset(path: Path) -> bool:
    """A DICOM data set without preamble starts with a group 0x0002 or 0x0008 tag."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head[:2] in (b"\x02\x00", b"\x08\x00") and len(head) == 4


def _read_dataset(path: Path) -> Dataset:
    try:
        try:
            return pydicom.dcmread(path)
        except InvalidDicomError:
            if not _looks_like_raw_dataset(path):
                raise
            return pydicom.dcmread(path, force=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise  # the caller's environment, not the file's content
    except InvalidDicomError:
        raise NotDicomError(f"{path.name}: not a DICOM file (no DICM prefix)") from None
    except Exception as exc:  # pydicom raises many types on damaged files
        raise NotDicomError(
            f"{path.name}: not a readable DICOM file ({type(exc).__name__})"
        ) from None


def _int_attr(ds: Dataset, keyword: str, path: Path, *, default: int | None = None) -> int:
    try:
        value = ds.get(keyword, default)
        if value is None or value == "":
            raise ValueError
        return int(value)
    except Exception:
        raise CorruptPixelDataError(
            f"{path.name}: missing or invalid {keyword} in the image header"
        ) from None


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    try:
        spacing = ds.get("PixelSpacing")
        if spacing is None or len(spacing) != 2:
            return None
        row, col = float(spacing[0]), float(spacing[1])
    except Exception:
        return None
    if not (np.isfinite(row) and np.isfinite(col)) or row <= 0 or col <= 0:
        return None
    return row, col


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None:
        # Raw data set without file meta: pydicom guessed the encoding while reading.
        implicit, little = ds.original_encoding
        ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        if not little:
            ts = UID("1.2.840.10008.1.2.2")
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
    return UID(str(ts))


def _decode_jpeg_fast(frame: bytes, samples: int, path: Path) -> np.ndarray | None:
    """Decode a JPEG Baseline frame with OpenCV; None if OpenCV cannot decode it.

    EXIF orientation is ignored (DICOM rows/columns are authoritative). A frame with
    no EOI marker near its end is truncated: libjpeg would silently pad it with grey.
    (Some encoders add a few bytes after EOI, hence a window rather than the last two
    bytes; FFD9 cannot occur inside entropy-coded data, where FF is byte-stuffed.)
    """
    if _JPEG_EOI not in frame[-32:]:
        raise CorruptPixelDataError(f"{path.name}: JPEG data are truncated (no end-of-image marker)")
    buf = np.frombuffer(frame, dtype=np.uint8)
    if samples == 1:
        flags = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION
    elif _CV2_RGB is not None:
        flags = _CV2_RGB | cv2.IMREAD_IGNORE_ORIENTATION
    else:  # pragma: no cover - OpenCV < 4.10
        flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error:
        return None
    if img is None:
        return None
    if samples == 3 and _CV2_RGB is None:  # pragma: no cover
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def _decode(ds: Dataset, ts: UID, rows: int, cols: int, samples: int, path: Path) -> np.ndarray:
    """Return the decoded pixels, RGB (H, W, 3) or grey (H, W), as uint8."""
    if "PixelData" not in ds:
        raise CorruptPixelDataError(f"{path.name}: the instance has no pixel data")
    if ts == JPEGBaseline8Bit:
        try:
            frame = pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=1)
        except Exception:
            raise CorruptPixelDataError(
                f"{path.name}: the encapsulated JPEG pixel data are malformed"
            ) from None
        img = _decode_jpeg_fast(frame, samples, path)
        if img is not None:
            if img.shape[:2] != (rows, cols):
                raise CorruptPixelDataError(
                    f"{path.name}: JPEG is {img.shape[1]}x{img.shape[0]} but the header says "
                    f"{cols}x{rows}"
                )
            return img
    elif ts in _NATIVE:
        # native YBR_FULL_422 stores Y Y Cb Cr per pixel pair: 2 bytes per pixel
        per_pixel = 2 if ds.get("PhotometricInterpretation") == "YBR_FULL_422" else samples
        expected = rows * cols * per_pixel
        if len(ds.PixelData) < expected:
            raise CorruptPixelDataError(
                f"{path.name}: pixel data are truncated ({len(ds.PixelData)} of {expected} bytes)"
            )
    try:
        arr = ds.pixel_array  # converts YBR_FULL(_422) to RGB; J2K codecs undo ICT/RCT
    except Exception as exc:
        raise CorruptPixelDataError(
            f"{path.name}: pixel data could not be decoded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else 'no detail'})"
        ) from None
    expected_shape = (rows, cols) if samples == 1 else (rows, cols, 3)
    if arr.shape != expected_shape:
        raise CorruptPixelDataError(
            f"{path.name}: decoded pixels have shape {arr.shape}, header says {expected_shape}"
        )
    return arr.astype(np.uint8, copy=False)


def read_photograph(
    path: str | Path, *, min_side: int = 64, max_pixels: int = 100_000_000
) -> Photograph:
    """Read and decode a DICOM photograph.

    Raises a :class:`PhotographError` subclass for anything that cannot be analysed.
    Size limits are checked from Rows/Columns before any decoding, so a forged header
    cannot make the service allocate gigabytes. MONOCHROME1 is inverted so that the
    pixels are always "higher = brighter", like the colour images.
    """
    path = Path(path)
    ds = _read_dataset(path)

    sop_class = ds.get("SOPClassUID") or getattr(
        getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None
    )
    if not sop_class:
        raise UnsupportedSopClassError(f"{path.name}: the instance has no SOP Class UID")
    sop_class = str(sop_class)
    if sop_class not in SUPPORTED_SOP_CLASSES:
        raise UnsupportedSopClassError(
            f"{path.name}: SOP class {_uid_text(sop_class)} is not a photograph; supported: "
            + ", ".join(SUPPORTED_SOP_CLASSES.values())
        )

    ts = _transfer_syntax(ds)
    if ts not in SUPPORTED_TRANSFER_SYNTAXES:
        raise UnsupportedTransferSyntaxError(
            f"{path.name}: transfer syntax {_uid_text(ts)} is not supported; ask the PACS to "
            "send JPEG Baseline, JPEG 2000, JPEG-LS, RLE or uncompressed little endian"
        )

    rows = _int_attr(ds, "Rows", path)
    cols = _int_attr(ds, "Columns", path)
    if rows <= 0 or cols <= 0:
        raise CorruptPixelDataError(f"{path.name}: invalid image size {cols}x{rows}")
    if rows * cols > max_pixels:
        raise ImageTooLargeError(
            f"{path.name}: image is {cols}x{rows} = {rows * cols:,} pixels, "
            f"more than the limit of {max_pixels:,}"
        )
    if min(rows, cols) < min_side:
        raise ImageTooSmallError(
            f"{path.name}: image is {cols}x{rows}; both sides must be at least {min_side} pixels"
        )

    frames = _int_attr(ds, "NumberOfFrames", path, default=1)
    if frames != 1:
        raise UnsupportedPhotometricError(
            f"{path.name}: the instance has {frames} frames; only single-frame photographs "
            "are supported"
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = _int_attr(ds, "SamplesPerPixel", path)
    bits = _int_attr(ds, "BitsAllocated", path)
    if bits != 8:
        raise UnsupportedPhotometricError(
            f"{path.name}: {bits}-bit pixels are not supported; photographs must have 8 bits "
            "per sample"
        )
    if photometric in _COLOUR and samples == 3:
        monochrome = False
    elif photometric in _MONO and samples == 1:
        monochrome = True
    else:
        raise UnsupportedPhotometricError(
            f"{path.name}: photometric interpretation {photometric or '(missing)'} with "
            f"{samples} sample(s) per pixel is not supported; expected RGB, YBR_FULL, "
            "YBR_FULL_422, YBR_ICT, YBR_RCT (3 samples) or MONOCHROME1/2 (1 sample)"
        )
    if _int_attr(ds, "PixelRepresentation", path, default=0) != 0:
        raise UnsupportedPhotometricError(f"{path.name}: signed pixel values are not supported")

    arr = _decode(ds, ts, rows, cols, samples, path)
    if monochrome:
        if photometric == "MONOCHROME1":
            arr = 255 - arr
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    pixels = np.ascontiguousarray(arr, dtype=np.uint8)
    del ds.PixelData  # the header stays; the (possibly large) encoded data go
    return Photograph(
        path=path,
        dataset=ds,
        pixels=pixels,
        is_monochrome=monochrome,
        pixel_spacing_mm=_pixel_spacing(ds),
    )
