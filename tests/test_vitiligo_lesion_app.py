"""The vitiligo close-up app end to end, as a user runs it: `python -m apps.vitiligo_lesion`.

One run over a folder holding a calibrated and an uncalibrated synthetic close-up plus
bad inputs (kept to one app process: the test budget on the 2-core machine is ~60 s).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGBaseline8Bit

from apps.vitiligo_lesion.app import SHIPPED_WEIGHTS
from dicom import codes
from dicom.encode import photograph_dataset, write_dataset
from dicom.sr import read_measurement_report
from dicom.validate import dciodvfy
from models.lesion.synthetic import render_closeup
from models.facial.synthetic import sample_rng
from tests.app_cases import assert_bad_inputs_fail_alone, results_of, run_app, write_bad_inputs

APP = "apps.vitiligo_lesion"


@pytest.fixture(scope="module")
def closeup_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vitiligo_lesion")
    folder = root / "in"
    folder.mkdir()
    truth = {}
    for name, seed, spacing in (("arm.dcm", 21, None), ("hand.dcm", 22, (0.05, 0.05))):
        sample = render_closeup(900, 1200, sample_rng(seed, 0), severity="high", lesion_prob=1.0)
        ds = photograph_dataset(sample.image, transfer_syntax=JPEGBaseline8Bit, body_part="SKIN",
                                pixel_spacing_mm=spacing, jpeg_quality=95)
        write_dataset(ds, folder / name)
        truth[name] = sample
    expected_words = write_bad_inputs(folder, folder / "arm.dcm")
    proc = run_app(APP, folder, root / "out")
    return root, truth, proc, expected_words


def test_app_analyses_the_closeups_and_writes_seg_sr_previews(closeup_run):
    root, _, proc, _ = closeup_run
    out = root / "out"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(sorted(out.glob("SEG_*.dcm"))) == 2
    assert len(sorted(out.glob("SR_*.dcm"))) == 2  # each photograph is its own series here
    assert len(sorted(out.glob("overlay_*.png"))) == 2
    report = results_of(out)
    assert report["analysed"] == 2
    assert "arm.dcm: vitiligo % of visible skin =" in proc.stdout


def test_lesion_area_and_severity_are_close_to_the_painted_truth(closeup_run):
    root, truth, _, _ = closeup_run
    cases = {c["source"]: c for c in results_of(root / "out")["cases"]}
    for name, sample in truth.items():
        res = cases[name]["results"]
        true_percent = 100 * sample.lesion_mask.sum() / sample.skin_mask.sum()
        assert res["lesion_percent_of_skin"] == pytest.approx(true_percent, abs=max(2.5, 0.5 * true_percent)), name
        assert res["lesion_count"] >= 1
        assert res["rgb_difference"] > 15 and res["delta_e2000"] > 3  # complete depigmentation is visible
        assert res["visible_skin_pixels"] <= 900 * 1200


def test_seg_and_sr_pass_dciodvfy_and_seg_names_skin_and_vitiligo(closeup_run):
    root, _, _, _ = closeup_run
    for path in sorted((root / "out").glob("*.dcm")):
        result = dciodvfy(path)
        assert not result.errors, (path.name, result.errors)
    seg = pydicom.dcmread(sorted((root / "out").glob("SEG_*.dcm"))[0])
    assert seg.SegmentationType == "BINARY" and (seg.Rows, seg.Columns) == (900, 1200)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Skin", "Vitiligo"]
    assert seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "56727007"


def test_sr_round_trips_every_number_and_names_the_model(closeup_run):
    root, _, _, _ = closeup_run
    out = root / "out"
    report = results_of(out)
    by_sop = {c["sop_instance_uid"]: (c["source"], c["results"]) for c in report["cases"] if c["status"] == "analysed"}
    sha = hashlib.sha256(SHIPPED_WEIGHTS.read_bytes()).hexdigest()
    assert report["algorithm"]["weights_sha256"] == sha
    seen = set()
    for sr_path in sorted(out.glob("SR_*.dcm")):
        for group in read_measurement_report(sr_path):
            source, expected = by_sop[group["referenced_sop_instance_uid"]]
            seen.add(source)
            m = group["measurements"]
            assert group["finding"] == "Vitiligo" and group["finding_site"] == "Skin"
            assert m[codes.VITILIGO_SKIN_PERCENT.meaning] == (pytest.approx(round(expected["lesion_percent_of_skin"], 4), abs=1e-9), "%")
            assert m[codes.VITILIGO_LESION_COUNT.meaning] == (expected["lesion_count"], "{lesions}")
            assert m[codes.VITILIGO_RGB_DIFFERENCE.meaning][0] == pytest.approx(round(expected["rgb_difference"], 4), abs=1e-9)
            assert m[codes.VITILIGO_DELTA_E2000.meaning][0] == pytest.approx(round(expected["delta_e2000"], 4), abs=1e-9)
            area = m[codes.VITILIGO_AREA.meaning]
            if source == "hand.dcm":  # calibrated: mm2
                assert area == (pytest.approx(round(expected["vitiligo_pixels"] * 0.0025, 3)), "mm2")
            else:
                assert area == (float(expected["vitiligo_pixels"]), "{pixels}")
            assert len(m) == 5  # OHIF 3.13 lists five lines per group
            outline = group["outline_xy"]  # the lesions' convex hull, inside the photograph
            assert outline is not None and len(outline) >= 4
            assert outline[:, 0].min() > 0 or outline[:, 1].min() > 0
            assert f"weights_sha256={sha}" in group["algorithm"]["parameters"]
    assert seen == {"arm.dcm", "hand.dcm"}


def test_bad_inputs_fail_alone_with_clear_reasons_and_no_traceback(closeup_run):
    root, _, proc, expected_words = closeup_run
    assert set(expected_words) == {"notes.txt", "truncated.dcm", "ct.dcm", "tiny.dcm", "huge.dcm"}
    assert_bad_inputs_fail_alone(proc, root / "out", expected_words, analysed=("arm.dcm", "hand.dcm"))


def test_no_skin_is_an_expected_failure():
    from operators.base import run_step
    from operators.cases import PhotoCase
    from operators.closeup_segmentation import CloseUpSegmentationStep

    class NoSkin:
        def predict(self, rgb, threshold=0.5):
            h, w = rgb.shape[:2]
            return np.zeros((h, w), bool), np.zeros((h, w), bool)

    class Photo:
        pixels = np.zeros((80, 80, 3), np.uint8)
        sop_instance_uid = "1.2.3"

    case = PhotoCase(source=Path("x.dcm"), photo=Photo())
    run_step(CloseUpSegmentationStep(NoSkin()), [case])
    assert not case.ok and "no skin found" in case.error


def test_the_service_finds_the_apps_main():
    from apps.vitiligo_lesion.app import main
    from dicom.service.runner import app_entry_point

    assert app_entry_point("apps.vitiligo_lesion") is main
