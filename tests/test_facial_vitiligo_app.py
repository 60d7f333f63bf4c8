"""The facial vitiligo app end to end, as a user runs it: `python -m apps.facial_vitiligo`."""

from __future__ import annotations

import hashlib

import cv2
import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGBaseline8Bit

from apps.demo_study import DEMO_SEED, astronaut_portrait, make_demo_study
from apps.facial_vitiligo.app import SHIPPED_WEIGHTS
from dicom import codes
from dicom.encode import photograph_dataset, write_dataset
from dicom.sr import read_measurement_report
from dicom.validate import dciodvfy
from tests.app_cases import (assert_bad_inputs_fail_alone, assert_no_patient_identifiers,
                             assert_nothing_analysable_fails, results_of, run_app, write_bad_inputs)

APP = "apps.facial_vitiligo"


# How far the face-skin mask's edge moves, in % of the face's height, when the same photograph
# is perturbed imperceptibly (JPEG re-encode, noise of 1-2 grey levels, a 1-2 px shift, a 0.5 %
# rescale): at most 2.96 % on the demo studies' six views (`benchmarks/facemesh_spread.py`,
# 5-pass median FaceMesh). Other CPUs' kernels move FaceMesh's landmarks by that kind of amount,
# so a lesion pixel outside the mask is accepted within twice that distance of its edge.
FACE_EDGE_TOLERANCE = 2 * 2.96 / 100


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, face_masker):
    """The study `make demo` sends (its left three-quarter view is 35 % depigmented)."""
    root = tmp_path_factory.mktemp("facial_vitiligo")
    study = make_demo_study(root / "in", seed=DEMO_SEED, masker=face_masker)
    proc = run_app(APP, root / "in", root / "out")
    return study, root / "out", proc


def test_app_writes_one_seg_per_photograph_one_sr_and_previews(demo_run):
    study, out, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(sorted(out.glob("SEG_*.dcm"))) == 3
    assert len(sorted(out.glob("SR_*.dcm"))) == 1
    assert len(sorted(out.glob("overlay_*.png"))) == 3
    report = results_of(out)
    assert report["analysed"] == 3 and report["failed"] == 0
    for line in ("left", "frontal", "right"):
        assert f"({line} view)" in proc.stdout


def _assert_within_two_points(study, out) -> None:
    by_source = {c["source"]: c for c in results_of(out)["cases"]}
    for photo in study:
        measured = by_source[photo.path.name]["results"]["f_vitiligo_percent"]
        assert abs(measured - photo.true_f_vitiligo) <= 2.0, (photo.view, measured, photo.true_f_vitiligo)


def test_f_vitiligo_within_two_points_of_the_painted_truth(demo_run):
    study, out, _ = demo_run
    _assert_within_two_points(study, out)


@pytest.mark.parametrize("seed", [11, 23])
def test_turned_face_with_confluent_vitiligo_within_two_points(tmp_path, face_masker, seed):
    """Three-quarter views whose large, confluent patches cover a third of the face or more.

    The cheek that faces the camera holds most of the lesion; neither the face mask nor the
    segmenter may lose its interior (the left view of `make demo` once read 28.8 % for 35.2 %).
    """
    study = make_demo_study(tmp_path / "in", seed=seed, views=("left", "right"), size=(1416, 2120),
                            masker=face_masker, paint={"size_range": (0.18, 0.4), "n_patches": 4})
    assert all(photo.true_f_vitiligo > 20 for photo in study), [p.true_f_vitiligo for p in study]
    proc = run_app(APP, tmp_path / "in", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_within_two_points(study, tmp_path / "out")


def test_visit_f_vitiligo_pools_the_three_views(demo_run):
    _, out, _ = demo_run
    results = [c["results"] for c in results_of(out)["cases"]]
    pooled = 100 * sum(r["vitiligo_pixels"] for r in results) / sum(r["face_skin_pixels"] for r in results)
    assert all(r["visit_f_vitiligo_percent"] == pytest.approx(pooled) and r["visit_views"] == 3 for r in results)


def test_face_mask_is_the_denominator_and_holds_the_lesions(demo_run):
    """The SEG's face-skin segment covers the painted (depigmented) skin: no colour threshold."""
    study, out, _ = demo_run
    by_sop = {}
    for path in out.glob("SEG_*.dcm"):
        seg = hd.seg.segread(path)
        source_uid = seg.SourceImageSequence[0].ReferencedSOPInstanceUID if "SourceImageSequence" in seg else \
            seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        by_sop[source_uid] = seg
    for photo in study:
        sop = pydicom.dcmread(photo.path, stop_before_pixels=True).SOPInstanceUID
        seg = by_sop[sop]
        masks = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[sop], segment_numbers=[1, 2], combine_segments=False
        )[0]
        face, vitiligo = masks[..., 0].astype(bool), masks[..., 1].astype(bool)
        assert not (vitiligo & ~face).any(), "vitiligo outside the face-skin mask"
        # The painted lesion was drawn inside FaceMesh's mask of the unpainted photograph; the
        # app's mesh on the painted one may sit a little differently, never a region further off.
        rows = np.flatnonzero(face.any(axis=1))
        tolerance_px = FACE_EDGE_TOLERANCE * (rows[-1] - rows[0] + 1)
        outside = photo.lesion_mask & ~face
        if outside.any():
            distance = cv2.distanceTransform((~face).astype(np.uint8), cv2.DIST_L2, 5)
            assert distance[outside].max() <= tolerance_px, (photo.view, distance[outside].max(), tolerance_px)


def test_seg_and_sr_pass_dciodvfy(demo_run):
    _, out, _ = demo_run
    for path in sorted(out.glob("*.dcm")):
        result = dciodvfy(path)
        assert not result.errors, (path.name, result.errors)


def test_seg_carries_the_geometry_ohif_needs(demo_run):
    study, out, _ = demo_run
    seg = pydicom.dcmread(sorted(out.glob("SEG_*.dcm"))[0])
    photo = pydicom.dcmread(study[0].path, stop_before_pixels=True)
    assert seg.SegmentationType == "BINARY"
    assert (seg.Rows, seg.Columns) == (photo.Rows, photo.Columns)
    assert seg.StudyInstanceUID == photo.StudyInstanceUID and seg.SeriesInstanceUID != photo.SeriesInstanceUID
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert shared.PixelMeasuresSequence[0].PixelSpacing and shared.PixelMeasuresSequence[0].SliceThickness
    assert "FrameOfReferenceUID" in seg and "ReferencedSeriesSequence" in seg
    assert "PatientOrientation" in seg
    for frame in seg.PerFrameFunctionalGroupsSequence:
        assert "PlanePositionSequence" in frame
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert source.ReferencedSOPClassUID == photo.SOPClassUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Skin of face", "Vitiligo"]


def test_sr_round_trips_the_numbers_and_names_the_model(demo_run):
    study, out, _ = demo_run
    report = results_of(out)
    by_sop = {c["sop_instance_uid"]: c["results"] for c in report["cases"]}
    groups = read_measurement_report(sorted(out.glob("SR_*.dcm"))[0])
    assert len(groups) == 3
    for group in groups:
        expected = by_sop[group["referenced_sop_instance_uid"]]
        values = group["measurements"]
        f_value = values[codes.F_VITILIGO.meaning]
        assert f_value[0] == pytest.approx(round(expected["f_vitiligo_percent"], 4), abs=1e-9)
        assert f_value[1] == "%"
        visit = values[codes.F_VITILIGO_VISIT.meaning]
        assert visit[0] == pytest.approx(round(expected["visit_f_vitiligo_percent"], 4), abs=1e-9)
        areas = {k: v for k, v in values.items() if "area" in k.lower()}
        assert sorted(v[0] for v in areas.values()) == sorted(
            [float(expected["vitiligo_pixels"]), float(expected["face_skin_pixels"])]
        )
    sha = hashlib.sha256(SHIPPED_WEIGHTS.read_bytes()).hexdigest()
    assert report["algorithm"]["weights_sha256"] == sha
    for group in groups:
        assert group["algorithm"]["name"] == report["algorithm"]["name"]
        assert f"weights_sha256={sha}" in group["algorithm"]["parameters"]


def test_logs_hold_no_patient_name_or_id(demo_run):
    _, out, proc = demo_run
    assert_no_patient_identifiers(proc, out)


# ---------------------------------------------------------------------------------------
# Bad input: clear errors, no traceback, the rest of the folder still analysed.


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, face_masker):
    root = tmp_path_factory.mktemp("bad_inputs")
    good = root / "in"
    make_demo_study(good, seed=3, views=("frontal",), size=(1416, 2120), masker=face_masker, pixel_spacing_mm=(0.1, 0.1))
    expected_words = write_bad_inputs(good, good / "face_frontal.dcm")
    from skimage import data

    write_dataset(photograph_dataset(np.ascontiguousarray(data.coffee()), transfer_syntax=JPEGBaseline8Bit), good / "no_face.dcm")
    corrupt = photograph_dataset(astronaut_portrait(708, 1060), transfer_syntax=JPEGBaseline8Bit)
    frame = bytearray(pydicom.encaps.generate_frames(corrupt.PixelData, number_of_frames=1).__next__())
    rng = np.random.default_rng(0)
    frame[200:] = rng.integers(0, 256, len(frame) - 200, dtype=np.uint8).tobytes()
    corrupt.PixelData = pydicom.encaps.encapsulate([bytes(frame)])
    write_dataset(corrupt, good / "corrupt_jpeg.dcm")
    expected_words.update({"no_face.dcm": "no face", "corrupt_jpeg.dcm": ""})
    proc = run_app(APP, good, root / "out")
    return root, proc, expected_words


def test_bad_inputs_fail_alone_with_clear_reasons(bad_inputs):
    root, proc, expected_words = bad_inputs
    assert set(expected_words) == {"notes.txt", "truncated.dcm", "ct.dcm", "tiny.dcm", "no_face.dcm",
                                   "corrupt_jpeg.dcm", "huge.dcm"}
    assert_bad_inputs_fail_alone(proc, root / "out", expected_words, analysed=("face_frontal.dcm",))
    assert len(list((root / "out").glob("SEG_*.dcm"))) == 1


def test_calibrated_photograph_reports_areas_in_mm2(bad_inputs):
    root, _, _ = bad_inputs
    case = next(c for c in results_of(root / "out")["cases"] if c["source"] == "face_frontal.dcm")
    assert case["results"]["vitiligo_mm2"] == pytest.approx(case["results"]["vitiligo_pixels"] * 0.01)
    group = read_measurement_report(sorted((root / "out").glob("SR_*.dcm"))[0])[0]
    assert group["measurements"]["Vitiligo area"] == (pytest.approx(round(case["results"]["vitiligo_mm2"], 3)), "mm2")
    assert group["measurements"]["Face skin area"][1] == "mm2"


def test_nothing_analysable_exits_non_zero_and_writes_no_dicom(bad_inputs, tmp_path):
    root, _, _ = bad_inputs
    assert_nothing_analysable_fails(APP, root / "in", ("notes.txt", "ct.dcm", "no_face.dcm"), tmp_path)


# ---------------------------------------------------------------------------------------
# Quality flags: a before/after composite with two faces is analysed (largest) and flagged.


@pytest.fixture(scope="module")
def composite_run(tmp_path_factory):
    import cv2

    root = tmp_path_factory.mktemp("composite")
    (root / "in").mkdir()
    portrait = astronaut_portrait(708, 1060)
    canvas = np.full((1060, 1500, 3), 200, np.uint8)
    canvas[:, :708] = portrait
    canvas[200:730, 1000:1354] = cv2.resize(portrait, (354, 530))
    write_dataset(photograph_dataset(canvas, transfer_syntax=JPEGBaseline8Bit), root / "in" / "composite.dcm")
    return root / "out", run_app(APP, root / "in", root / "out")


def test_several_faces_are_flagged_in_results_and_sr(composite_run):
    out, proc = composite_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    case = results_of(out)["cases"][0]
    quality = case["results"]["quality"]
    assert quality["flagged"] and "several-faces" in quality["flags"]
    assert any("2 faces found" in reason and "largest" in reason for reason in quality["reasons"])
    assert case["results"]["faces_found"] == 2
    group = read_measurement_report(sorted(out.glob("SR_*.dcm"))[0])[0]
    assert codes.RESULT_QUALITY_FLAG.meaning in group["qualitative"]
    for path in sorted(out.glob("*.dcm")):
        assert not dciodvfy(path).errors, path.name


def test_a_single_face_photograph_reports_its_quality(demo_run):
    _, out, _ = demo_run
    for case in results_of(out)["cases"]:
        quality = case["results"]["quality"]
        assert "several-faces" not in quality["flags"]
        assert set(quality) == {"flagged", "reasons", "flags", "values"}
