"""Photograph encoder + reader: every encoding round-trips and validates; bad input fails clearly."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from dicom import codes
from dicom.encode import (
    SUPPORTED_ENCODINGS,
    PatientInfo,
    pattern_image,
    photograph_dataset,
    write_dataset,
)
from dicom.reader import (
    CorruptPixelDataError,
    ImageTooLargeError,
    ImageTooSmallError,
    NotDicomError,
    PhotographError,
    UnsupportedPhotometricError,
    UnsupportedSopClassError,
    UnsupportedTransferSyntaxError,
    read_photograph,
)
from dicom.validate import dciodvfy

H, W = 120, 160
SECRET = PatientInfo(name="Secretname^Patient", patient_id="SECRET-ID-42")
LOSSY = {JPEGBaseline8Bit, JPEG2000, JPEGLSNearLossless}
# mean absolute error allowed for lossy codecs at the encoder defaults
TOLERANCE = {JPEGBaseline8Bit: 4.0, JPEG2000: 4.0, JPEGLSNearLossless: 2.0}


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return pattern_image(H, W)


def _cases() -> list[pytest.param]:
    cases = []
    for ts, photometrics in SUPPORTED_ENCODINGS.items():
        for i, pi in enumerate(photometrics):
            sop = "vl_photo" if i == 0 else "secondary_capture"
            cases.append(pytest.param(ts, pi, 0, False, sop, id=f"{ts.keyword}-{pi}-{sop}"))
        cases.append(pytest.param(ts, None, 0, True, "vl_photo", id=f"{ts.keyword}-MONO2"))
    cases.append(pytest.param(JPEGBaseline8Bit, None, 0, False, "secondary_capture", id="JPEG-SC"))
    cases.append(pytest.param(RLELossless, None, 0, True, "secondary_capture", id="RLE-MONO2-SC"))
    for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        for pi in ("RGB", "YBR_FULL"):
            cases.append(
                pytest.param(ts, pi, 1, False, "secondary_capture", id=f"{ts.keyword}-{pi}-planar1-SC")
            )
    return cases


@pytest.mark.parametrize("ts, photometric, planar, mono, sop", _cases())
def test_round_trip_every_encoding(tmp_path, rgb, ts, photometric, planar, mono, sop):
    ds = photograph_dataset(
        rgb, transfer_syntax=ts, photometric=photometric, planar_configuration=planar,
        monochrome=mono, sop_class=sop, view="frontal",
    )
    path = write_dataset(ds, tmp_path / "photo.dcm")
    result = dciodvfy(path)
    assert result.errors == [], result.output

    photo = read_photograph(path)
    assert photo.pixels.shape == (H, W, 3) and photo.pixels.dtype == np.uint8
    assert photo.pixels.flags.c_contiguous
    assert photo.is_monochrome is mono
    assert "PixelData" not in photo.dataset
    assert photo.rows == H and photo.columns == W
    assert photo.sop_instance_uid == ds.SOPInstanceUID
    assert photo.study_instance_uid == ds.StudyInstanceUID
    assert photo.series_instance_uid == ds.SeriesInstanceUID

    expected = rgb
    if mono:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        expected = np.repeat(grey[:, :, None], 3, axis=2)
        assert np.array_equal(photo.pixels[..., 0], photo.pixels[..., 2])
    diff = np.abs(photo.pixels.astype(np.int16) - expected.astype(np.int16))
    if ts in LOSSY:
        assert diff.mean() < TOLERANCE[ts], diff.mean()
    elif photometric == "YBR_FULL":  # 8-bit RGB->YBR->RGB rounding only
        assert diff.max() <= 2
    else:
        assert diff.max() == 0


def test_jpeg_fast_path_matches_pydicom(tmp_path, rgb):
    for pi, sop in (("YBR_FULL_422", "vl_photo"), ("RGB", "secondary_capture")):
        ds = photograph_dataset(rgb, photometric=pi, sop_class=sop)
        path = write_dataset(ds, tmp_path / f"{pi}.dcm")
        fast = read_photograph(path).pixels.astype(np.int16)
        reference = pydicom.dcmread(path).pixel_array.astype(np.int16)
        assert np.abs(fast - reference).mean() < 0.5, pi
        assert np.abs(fast - reference).max() <= 8, pi


def test_encoder_header(tmp_path, rgb):
    study = generate_uid()
    ds = photograph_dataset(
        rgb, view="left", study_uid=study, series_number=3, instance_number=7,
        pixel_spacing_mm=(0.1, 0.125), series_description="left profile",
    )
    assert ds.Modality == "XC"
    assert ds.StudyInstanceUID == study
    assert ds.SeriesNumber == 3 and ds.InstanceNumber == 7
    assert ds.AnatomicRegionSequence[0].CodeValue == codes.FACE.value
    assert ds.ViewCodeSequence[0].CodeValue == codes.VIEW_LEFT.value
    assert list(ds.PatientOrientation) == ["P", "F"]
    assert ds.AcquisitionContextSequence == []
    assert ds.LossyImageCompression == "01"
    photo = read_photograph(write_dataset(ds, tmp_path / "p.dcm"))
    assert photo.pixel_spacing_mm == (0.1, 0.125)
    assert dciodvfy(tmp_path / "p.dcm").errors == []


def test_encoder_rejects_invalid_combinations(rgb):
    with pytest.raises(ValueError, match="VL Photographic Image IOD allows only"):
        photograph_dataset(rgb, photometric="RGB")  # RGB JPEG is SC-only
    with pytest.raises(ValueError, match="planar configuration 0"):
        photograph_dataset(rgb, transfer_syntax=ExplicitVRLittleEndian, planar_configuration=1)
    with pytest.raises(ValueError, match="planar_configuration must be 0 for compressed"):
        photograph_dataset(rgb, sop_class="secondary_capture", planar_configuration=1)
    with pytest.raises(ValueError, match="cannot encode transfer syntax"):
        photograph_dataset(rgb, transfer_syntax=JPEGLosslessSV1)
    with pytest.raises(TypeError, match="uint8"):
        photograph_dataset(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        photograph_dataset(rgb[..., 0])
    with pytest.raises(ValueError, match="view"):
        photograph_dataset(rgb, view="top")  # type: ignore[arg-type]


def test_write_dataset_is_atomic(tmp_path, rgb):
    ds = photograph_dataset(rgb, transfer_syntax=ExplicitVRLittleEndian)
    path = write_dataset(ds, tmp_path / "sub" / "a.dcm")
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["a.dcm"]  # no temporary left


def test_monochrome1_is_inverted(tmp_path, rgb):
    ds = photograph_dataset(rgb, transfer_syntax=ExplicitVRLittleEndian, monochrome=True,
                            sop_class="secondary_capture")
    grey = np.frombuffer(ds.PixelData, np.uint8).reshape(H, W)
    ds.PhotometricInterpretation = "MONOCHROME1"
    photo = read_photograph(write_dataset(ds, tmp_path / "m1.dcm"))
    assert np.array_equal(photo.pixels[..., 1], 255 - grey)


def test_deflate_and_raw_dataset_without_preamble(tmp_path, rgb):
    ds = photograph_dataset(rgb, transfer_syntax=ExplicitVRLittleEndian)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "deflate.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert np.array_equal(read_photograph(path).pixels, rgb)

    ds = photograph_dataset(rgb, transfer_syntax=ImplicitVRLittleEndian)
    raw = tmp_path / "raw.dcm"
    pydicom.dcmwrite(raw, ds, implicit_vr=True, little_endian=True)  # no preamble, no meta
    assert raw.read_bytes()[128:132] != b"DICM"
    assert np.array_equal(read_photograph(raw).pixels, rgb)


def test_single_frame_multiframe_sc_accepted_two_frames_rejected(tmp_path, rgb):
    ds = photograph_dataset(rgb, transfer_syntax=ExplicitVRLittleEndian, sop_class="secondary_capture")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.4"
    ds.NumberOfFrames = 1
    assert np.array_equal(read_photograph(write_dataset(ds, tmp_path / "mf1.dcm")).pixels, rgb)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    with pytest.raises(UnsupportedPhotometricError, match="2 frames"):
        read_photograph(write_dataset(ds, tmp_path / "mf2.dcm"))


# --- bad inputs ----------------------------------------------------------------------


def _check_message(exc: PhotographError) -> None:
    message = str(exc)
    assert "\n" not in message and "Traceback" not in message
    assert "Secretname" not in message and "SECRET-ID-42" not in message


def _expect(exc_type: type[PhotographError], path: Path, match: str) -> PhotographError:
    with pytest.raises(exc_type, match=match) as info:
        read_photograph(path)
    _check_message(info.value)
    return info.value


def test_not_dicom(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is a text file, not an image\n" * 20)
    _expect(NotDicomError, text, "not a DICOM file")
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    _expect(NotDicomError, empty, "not")


@pytest.mark.parametrize("ts", [JPEGBaseline8Bit, ExplicitVRLittleEndian])
def test_truncated_file(tmp_path, rgb, ts):
    path = write_dataset(photograph_dataset(rgb, transfer_syntax=ts, patient=SECRET), tmp_path / "t.dcm")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2000])
    with pytest.raises(PhotographError) as info:
        read_photograph(path)
    assert isinstance(info.value, (CorruptPixelDataError, NotDicomError))
    _check_message(info.value)
    path.write_bytes(data[:300])  # cut inside the header
    with pytest.raises(PhotographError) as info:
        read_photograph(path)
    _check_message(info.value)


def test_ct_is_rejected_naming_the_sop_class(tmp_path):
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Secretname^Patient"
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 128
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = write_dataset(ds, tmp_path / "ct.dcm")
    exc = _expect(UnsupportedSopClassError, path, "CT Image Storage")
    assert CTImageStorage in str(exc)


@pytest.mark.parametrize("ts", [JPEGExtended12Bit, JPEGLosslessSV1])
def test_unsupported_transfer_syntax_named(tmp_path, rgb, ts):
    ds = photograph_dataset(rgb, patient=SECRET)
    ds.file_meta.TransferSyntaxUID = ts
    path = write_dataset(ds, tmp_path / "ts.dcm")
    exc = _expect(UnsupportedTransferSyntaxError, path, "not supported")
    assert ts in str(exc) and ts.name in str(exc)


def test_corrupt_jpeg(tmp_path, rgb):
    ds = photograph_dataset(rgb, patient=SECRET)
    frame = pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=1)
    # garbage instead of the JPEG headers: neither OpenCV nor Pillow can decode it
    bad = frame[:2] + bytes(400) + frame[402:]
    ds.PixelData = encapsulate([bad])
    _expect(CorruptPixelDataError, write_dataset(ds, tmp_path / "c1.dcm"), "could not be decoded")
    # truncated entropy-coded data: libjpeg would silently fill with grey
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])
    _expect(CorruptPixelDataError, write_dataset(ds, tmp_path / "c2.dcm"), "truncated")
    # header size disagrees with the JPEG
    ds.PixelData = encapsulate([frame])
    ds.Rows = H + 8
    _expect(CorruptPixelDataError, write_dataset(ds, tmp_path / "c3.dcm"), "header says")


def test_missing_and_short_native_pixel_data(tmp_path, rgb):
    ds = photograph_dataset(rgb, transfer_syntax=ExplicitVRLittleEndian, patient=SECRET)
    ds.PixelData = ds.PixelData[:1000]
    _expect(CorruptPixelDataError, write_dataset(ds, tmp_path / "short.dcm"), "truncated")
    del ds.PixelData
    _expect(CorruptPixelDataError, write_dataset(ds, tmp_path / "none.dcm"), "no pixel data")


def test_too_small(tmp_path):
    small = pattern_image(32, 32)
    path = write_dataset(photograph_dataset(small, patient=SECRET), tmp_path / "s.dcm")
    _expect(ImageTooSmallError, path, "at least 64")
    assert read_photograph(path, min_side=16).pixels.shape == (32, 32, 3)


def test_too_large_is_rejected_before_decoding(tmp_path, rgb):
    ds = photograph_dataset(rgb, transfer_syntax=ExplicitVRLittleEndian, patient=SECRET)
    ds.Rows, ds.Columns = 60000, 60000  # 3.6 G pixels claimed, 57 kB present
    path = write_dataset(ds, tmp_path / "huge.dcm")
    # 57 kB of pixels cannot be decoded as 60000x60000: the size check must come first.
    _expect(ImageTooLargeError, path, "more than the limit")
    normal = write_dataset(photograph_dataset(rgb), tmp_path / "normal.dcm")
    with pytest.raises(ImageTooLargeError):
        read_photograph(normal, max_pixels=H * W - 1)
    assert read_photograph(normal, max_pixels=H * W).rows == H


def test_unsupported_pixel_formats(tmp_path, rgb):
    ds = photograph_dataset(rgb, transfer_syntax=ExplicitVRLittleEndian, patient=SECRET)
    ds16 = photograph_dataset(rgb, transfer_syntax=ExplicitVRLittleEndian)
    ds16.BitsAllocated, ds16.BitsStored, ds16.HighBit = 16, 16, 15
    ds16.PixelData = rgb.astype(np.uint16).tobytes()
    _expect(UnsupportedPhotometricError, write_dataset(ds16, tmp_path / "16.dcm"), "16-bit")
    ds.PhotometricInterpretation = "PALETTE COLOR"
    _expect(UnsupportedPhotometricError, write_dataset(ds, tmp_path / "pal.dcm"), "PALETTE COLOR")


def test_native_ybr_full_422_is_upsampled(tmp_path, rgb):
    """Uncompressed YBR_FULL_422 (Y Y Cb Cr per pixel pair) is rare but legal for some IODs."""
    ds = photograph_dataset(rgb, transfer_syntax=ExplicitVRLittleEndian, sop_class="secondary_capture")
    ybr = pydicom.pixels.convert_color_space(rgb, "RGB", "YBR_FULL").astype(np.float64)
    pairs = ybr.reshape(H, W // 2, 2, 3)
    chroma = pairs[..., 1:].mean(axis=2).round().astype(np.uint8)
    packed = np.concatenate([pairs[..., 0].astype(np.uint8), chroma], axis=-1)
    ds.PixelData = packed.tobytes()
    ds.PhotometricInterpretation = "YBR_FULL_422"
    photo = read_photograph(write_dataset(ds, tmp_path / "422.dcm"))
    assert np.abs(photo.pixels.astype(np.int16) - rgb).mean() < 3
    ds.PixelData = packed.tobytes()[:-100]
    _expect(CorruptPixelDataError, write_dataset(ds, tmp_path / "422short.dcm"), "truncated")
