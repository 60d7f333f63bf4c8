"""SEG of a photograph: dciodvfy-clean, OHIF geometry present, masks round-trip, fast."""

from __future__ import annotations

import time

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from dicom import codes
from dicom.encode import pattern_image, photograph_dataset, write_dataset
from dicom.reader import Photograph, read_photograph
from dicom.seg import AlgorithmIdentity, SegmentSpec, _PhotoSegmentation, build_photo_segmentation, warm_up
from dicom.validate import dciodvfy

ALGORITHM = AlgorithmIdentity(
    name="dermpacs test segmenter", version="1.2.3", family=codes.ARTIFICIAL_INTELLIGENCE,
    weights_sha256="0123456789abcdef" * 4, description="unit-test model",
)
SPECS = [
    SegmentSpec("Skin of face", codes.TISSUE, codes.SKIN_OF_FACE, color_rgb=(80, 160, 255)),
    SegmentSpec("Vitiligo", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, codes.VITILIGO,
                anatomic_region=codes.SKIN_OF_FACE, color_rgb=(255, 60, 200)),
]


def make_photo(tmp_path, rows: int, cols: int, **kwargs) -> Photograph:
    ds = photograph_dataset(pattern_image(rows, cols), view="frontal", **kwargs)
    return read_photograph(write_dataset(ds, tmp_path / "photo.dcm"))


def make_masks(rows: int, cols: int, vitiligo: bool = True) -> np.ndarray:
    masks = np.zeros((rows, cols, 2), bool)
    yy, xx = np.mgrid[0:rows, 0:cols]
    masks[..., 0] = ((yy - rows / 2) / (0.4 * rows)) ** 2 + ((xx - cols / 2) / (0.35 * cols)) ** 2 < 1
    if vitiligo:
        masks[rows // 3: rows // 2, cols // 3: cols // 2, 1] = True
    return masks


def check_seg_file(path, photo: Photograph, masks: np.ndarray) -> None:
    result = dciodvfy(path)
    assert result.errors == [], result.output
    ds = pydicom.dcmread(path)
    assert ds.SegmentationType == "BINARY"
    assert (ds.Rows, ds.Columns) == (photo.rows, photo.columns)
    assert ds.StudyInstanceUID == photo.study_instance_uid
    assert ds.SeriesInstanceUID != photo.series_instance_uid
    assert list(ds.PatientOrientation) == list(photo.dataset.PatientOrientation)
    assert ds.Manufacturer == "dermpacs" and ds.ManufacturerModelName and ds.SoftwareVersions
    assert ds.FrameOfReferenceUID and ds.FrameOfReferenceUID != photo.dataset.get("FrameOfReferenceUID")
    shared = ds.SharedFunctionalGroupsSequence[0]
    measures = shared.PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == 1.0
    expected_spacing = photo.pixel_spacing_mm or (1.0, 1.0)
    assert [float(v) for v in measures.PixelSpacing] == list(expected_spacing)
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    ref_series = ds.ReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == photo.series_instance_uid
    assert ref_series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == photo.sop_instance_uid
    assert int(ds.NumberOfFrames) == masks.shape[2]  # empty segments keep their frame
    for frame in ds.PerFrameFunctionalGroupsSequence:
        assert [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient] == [0, 0, 0]
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert source.ReferencedSOPInstanceUID == photo.sop_instance_uid
        assert source.ReferencedSOPClassUID == photo.sop_class_uid
    for item in ds.SegmentSequence:
        algo = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algo.AlgorithmName == ALGORITHM.name and algo.AlgorithmVersion == ALGORITHM.version
        assert ALGORITHM.weights_sha256 in algo.AlgorithmParameters
    assert [s.SegmentLabel for s in ds.SegmentSequence] == [s.label for s in SPECS][: masks.shape[2]]

    seg = hd.seg.segread(path)
    read = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[photo.sop_instance_uid],
        segment_numbers=list(range(1, masks.shape[2] + 1)),
        combine_segments=False,
    )[0]
    assert np.array_equal(read.astype(bool), masks)


def test_two_segment_seg_small(tmp_path):
    photo = make_photo(tmp_path, 200, 300)
    masks = make_masks(200, 300)
    seg = build_photo_segmentation(photo, SPECS, masks, ALGORITHM, series_number=901)
    assert seg.SegmentsOverlap == "YES"
    assert seg.SeriesNumber == 901 and seg.SeriesDescription == "dermpacs segmentation"
    check_seg_file(write_dataset(seg, tmp_path / "seg.dcm"), photo, masks)


def test_empty_segment_is_kept(tmp_path):
    photo = make_photo(tmp_path, 200, 300)
    masks = make_masks(200, 300, vitiligo=False)
    seg = build_photo_segmentation(photo, SPECS, masks, ALGORITHM)
    assert seg.SegmentsOverlap == "NO"
    check_seg_file(write_dataset(seg, tmp_path / "seg.dcm"), photo, masks)
    all_empty = np.zeros_like(masks)
    seg = build_photo_segmentation(photo, SPECS, all_empty, ALGORITHM)
    check_seg_file(write_dataset(seg, tmp_path / "empty.dcm"), photo, all_empty)


def test_calibrated_and_monochrome_and_single_segment(tmp_path):
    photo = make_photo(tmp_path, 160, 120, pixel_spacing_mm=(0.05, 0.05), monochrome=True,
                       sop_class="secondary_capture")
    masks = make_masks(160, 120)[..., :1]
    seg = build_photo_segmentation(photo, SPECS[:1], masks, ALGORITHM)
    check_seg_file(write_dataset(seg, tmp_path / "seg.dcm"), photo, masks)


def test_private_codes_declare_the_scheme(tmp_path):
    photo = make_photo(tmp_path, 120, 120)
    spec = SegmentSpec("Custom", codes.TISSUE, codes.private_code("TEST-TYPE", "Test tissue type"))
    seg = build_photo_segmentation(photo, [spec], np.ones((120, 120, 1), bool), ALGORITHM)
    assert seg.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == codes.DERMPACS_SCHEME
    assert dciodvfy(write_dataset(seg, tmp_path / "seg.dcm")).errors == []


def test_fast_overlap_check_agrees_with_highdicom():
    numbers = np.array([1, 2, 3])
    rng = np.random.default_rng(1)
    for overlap in (False, True):
        arr = np.zeros((1, 40, 50, 3), bool)
        arr[0, :10, :, 0] = arr[0, 10:20, :, 1] = arr[0, 20:30, :, 2] = True
        if overlap:
            arr[0, rng.integers(0, 40), rng.integers(0, 50), :2] = True
        ours = _PhotoSegmentation._check_and_cast_pixel_array(arr, numbers, hd.seg.SegmentationTypeValues.BINARY, np.uint8)
        theirs = hd.seg.Segmentation._check_and_cast_pixel_array(arr, numbers, hd.seg.SegmentationTypeValues.BINARY, np.uint8)
        assert ours[1] == theirs[1]
        assert np.array_equal(ours[0], theirs[0])


def test_invalid_arguments_are_explained(tmp_path):
    photo = make_photo(tmp_path, 100, 100)
    masks = make_masks(100, 100)
    with pytest.raises(ValueError, match="shape"):
        build_photo_segmentation(photo, SPECS, masks[:50], ALGORITHM)
    with pytest.raises(ValueError, match="shape"):
        build_photo_segmentation(photo, SPECS[:1], masks, ALGORITHM)
    with pytest.raises(ValueError, match="boolean"):
        build_photo_segmentation(photo, SPECS, masks.astype(np.float32), ALGORITHM)
    with pytest.raises(ValueError, match="unique"):
        build_photo_segmentation(photo, [SPECS[0], SPECS[0]], masks, ALGORITHM)
    with pytest.raises(ValueError, match="weights_sha256"):
        AlgorithmIdentity("x", "1", codes.ARTIFICIAL_INTELLIGENCE, "not-a-hash")
    with pytest.raises(ValueError, match="color_rgb"):
        SegmentSpec("x", codes.TISSUE, codes.SKIN, color_rgb=(0, 0, 300))
    with pytest.raises(TypeError, match="Code"):
        SegmentSpec("x", "tissue", codes.SKIN)  # type: ignore[arg-type]
    # integer 0/1 masks are accepted
    seg = build_photo_segmentation(photo, SPECS, masks.astype(np.uint8), ALGORITHM)
    assert int(seg.NumberOfFrames) == 2


@pytest.mark.slow
def test_full_size_seg_is_valid(tmp_path):
    """A 2832x4240 two-segment SEG; its build/write times are printed (benchmarks report them)."""
    rows, cols = 4240, 2832  # the paper's portrait photographs
    ds = photograph_dataset(np.zeros((rows, cols, 3), np.uint8), view="frontal")
    photo = read_photograph(write_dataset(ds, tmp_path / "photo.dcm"))
    masks = make_masks(rows, cols)
    warm_up()
    build_times, write_times = [], []
    for i in range(3):
        start = time.perf_counter()
        seg = build_photo_segmentation(photo, SPECS, masks, ALGORITHM)
        build_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        path = write_dataset(seg, tmp_path / f"seg{i}.dcm")
        write_times.append(time.perf_counter() - start)
    print(f"SEG {cols}x{rows}: build {min(build_times):.3f} s, write {min(write_times):.3f} s")
    check_seg_file(path, photo, masks)


@pytest.mark.parametrize("syntax", [DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_seg_transfer_syntaxes_hold_the_same_masks(tmp_path, syntax):
    photo = make_photo(tmp_path, 600, 800)
    masks = make_masks(600, 800)
    seg = build_photo_segmentation(photo, SPECS, masks, ALGORITHM, transfer_syntax_uid=syntax)
    path = write_dataset(seg, tmp_path / "seg.dcm")
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    check_seg_file(path, photo, masks)  # dciodvfy-clean (deflated: judged inflated) and masks round-trip


def test_deflated_seg_is_the_default_and_small(tmp_path):
    photo = make_photo(tmp_path, 1200, 1600)
    masks = make_masks(1200, 1600)
    deflated = write_dataset(build_photo_segmentation(photo, SPECS, masks, ALGORITHM), tmp_path / "deflated.dcm")
    plain = write_dataset(build_photo_segmentation(photo, SPECS, masks, ALGORITHM,
                                                   transfer_syntax_uid=ExplicitVRLittleEndian), tmp_path / "plain.dcm")
    assert pydicom.dcmread(deflated).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert deflated.stat().st_size * 20 < plain.stat().st_size  # 2 x 240 kB of mask bits -> a few kB
    assert pydicom.dcmread(deflated).PixelData == pydicom.dcmread(plain).PixelData


def test_refuses_a_transfer_syntax_a_binary_seg_cannot_have(tmp_path):
    photo = make_photo(tmp_path, 100, 100)
    with pytest.raises(ValueError, match="RLE Lossless"):
        build_photo_segmentation(photo, SPECS, make_masks(100, 100), ALGORITHM, transfer_syntax_uid=RLELossless)


def test_dciodvfy_still_finds_errors_in_a_deflated_file(tmp_path):
    photo = make_photo(tmp_path, 100, 100)
    seg = build_photo_segmentation(photo, SPECS, make_masks(100, 100), ALGORITHM)
    del seg.SegmentSequence[0].SegmentLabel  # type 1 in the Segmentation Image module
    path = write_dataset(seg, tmp_path / "broken.dcm")
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    result = dciodvfy(path)
    assert any("SegmentLabel" in e for e in result.errors), result.output
