"""The scalp app end to end, as a user runs it: `python -m apps.scalp`."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from apps.scalp.app import SHIPPED_WEIGHTS
from dicom import codes
from dicom.encode import photograph_dataset, write_dataset
from dicom.sr import read_measurement_report
from dicom.validate import dciodvfy
from models.scalp import INDICATORS
from models.scalp.synthetic import generate_sample
from operators.scalp_grading import INDICATOR_CODES, PROBABILITY_CODES, SCALP_SR_GROUPS, SEVERITY_CODES
from tests.app_cases import (assert_bad_inputs_fail_alone, assert_no_patient_identifiers,
                             assert_nothing_analysable_fails, results_of, run_app, write_bad_inputs)

APP = "apps.scalp"


@pytest.fixture(scope="module")
def scalp_run(tmp_path_factory):
    """Two scalp photographs of one series (JPEG and native) plus bad files in the same folder."""
    root = tmp_path_factory.mktemp("scalp")
    folder = root / "in"
    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    for i, ts in enumerate((JPEGBaseline8Bit, ExplicitVRLittleEndian), start=1):
        image = generate_sample(404, i).image
        ds = photograph_dataset(image, transfer_syntax=ts, body_part="SCALP", study_uid=study, series_uid=series,
                                instance_number=i, series_description="scalp close-up")
        write_dataset(ds, folder / f"scalp_{i}.dcm")
    expected_words = write_bad_inputs(folder, folder / "scalp_1.dcm", body_part="SCALP")
    proc = run_app(APP, folder, root / "out")
    return root, proc, expected_words


def test_app_grades_each_photograph_and_writes_one_sr(scalp_run):
    root, proc, _ = scalp_run
    out = root / "out"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(out.glob("SR_*.dcm"))) == 1
    assert not list(out.glob("SEG_*.dcm"))  # nothing is segmented
    report = results_of(out)
    assert report["analysed"] == 2 and report["failed"] == 5
    for case in report["cases"]:
        if case["status"] == "analysed":
            assert set(case["results"]["grades"]) == set(INDICATORS)
            assert all(g in (0, 1, 2, 3) for g in case["results"]["grades"].values())
    assert "scalp_1.dcm: grades = " in proc.stdout


def test_sr_passes_dciodvfy(scalp_run):
    root, _, _ = scalp_run
    for path in sorted((root / "out").glob("*.dcm")):
        result = dciodvfy(path)
        assert not result.errors, (path.name, result.errors)


def test_sr_round_trips_grades_confidence_and_names_the_model(scalp_run):
    root, _, _ = scalp_run
    out = root / "out"
    report = results_of(out)
    by_sop = {c["sop_instance_uid"]: c["results"] for c in report["cases"] if c["status"] == "analysed"}
    groups = read_measurement_report(sorted(out.glob("SR_*.dcm"))[0])
    assert len(groups) == 2 * len(SCALP_SR_GROUPS)
    sha = hashlib.sha256(SHIPPED_WEIGHTS.read_bytes()).hexdigest()
    assert report["algorithm"]["weights_sha256"] == sha
    seen: dict[str, list[str]] = {sop: [] for sop in by_sop}
    for group in groups:
        expected = by_sop[group["referenced_sop_instance_uid"]]
        assert group["finding_site"] == codes.SKIN_OF_SCALP.meaning
        assert group["finding"] == codes.SCALP_FINDING.meaning
        names = list(group["measurements"])
        indicators = [name for name in INDICATORS if INDICATOR_CODES[name].meaning in names]
        assert 1 <= len(indicators) <= 5  # OHIF 3.13.2 draws five lines per group
        seen[group["referenced_sop_instance_uid"]] += indicators
        for i, name in enumerate(indicators):
            grade = expected["grades"][name]
            concept = INDICATOR_CODES[name].meaning
            assert group["measurements"][concept] == (float(grade), "{grade}")
            assert group["qualitative"][concept] == SEVERITY_CODES[grade].meaning
            # the first lines a viewer draws: the assigned grade's probability, never 0
            confidence = PROBABILITY_CODES[name][grade].meaning
            assert names[i] == confidence
            assert group["measurements"][confidence] == (expected["probabilities_percent"][name][grade], "%")
            assert expected["probabilities_percent"][name][grade] == max(expected["probabilities_percent"][name])
        assert f"weights_sha256={sha}" in group["algorithm"]["parameters"]
    for sop, indicators in seen.items():
        assert sorted(indicators) == sorted(INDICATORS), sop  # every indicator once per photograph
    for case in report["cases"]:
        if case["status"] == "analysed":
            for probs in case["results"]["probabilities_percent"].values():
                assert len(probs) == 4 and sum(probs) == pytest.approx(100, abs=0.05)


def test_sr_outlines_keep_viewer_text_on_the_photograph(scalp_run):
    """Outlines inside the photograph, left of its middle, at distinct mid-heights (text boxes stack)."""
    root, _, _ = scalp_run
    groups = read_measurement_report(sorted((root / "out").glob("SR_*.dcm"))[0])
    by_photo: dict[str, list[np.ndarray]] = {}
    for group in groups:
        by_photo.setdefault(group["referenced_sop_instance_uid"], []).append(group["outline_xy"])
    for outlines in by_photo.values():
        for xy in outlines:
            assert xy[:, 0].min() > 0 and xy[:, 1].min() > 0 and xy[:, 1].max() < 480
            assert xy[:, 0].max() <= 0.6 * 640
        middles = [(xy[:, 1].min() + xy[:, 1].max()) / 2 for xy in outlines]
        assert min(np.diff(sorted(middles))) >= 0.1 * 480


def test_bad_inputs_fail_alone_with_clear_reasons(scalp_run):
    root, proc, expected_words = scalp_run
    assert set(expected_words) == {"notes.txt", "truncated.dcm", "ct.dcm", "tiny.dcm", "huge.dcm"}
    assert_bad_inputs_fail_alone(proc, root / "out", expected_words, analysed=("scalp_1.dcm", "scalp_2.dcm"))


def test_logs_hold_no_patient_name_or_id(scalp_run):
    root, proc, _ = scalp_run
    assert_no_patient_identifiers(proc, root / "out")


def test_nothing_analysable_exits_non_zero_and_writes_no_dicom(scalp_run, tmp_path):
    root, _, _ = scalp_run
    assert_nothing_analysable_fails(APP, root / "in", ("notes.txt", "ct.dcm", "tiny.dcm"), tmp_path)


def test_sr_layout_is_checked():
    """A layout that would hide lines in a viewer, or skip or repeat an indicator, is refused."""
    from operators.scalp_grading import ScalpGradingStep, ScalpSrGroup

    with pytest.raises(ValueError, match="at most 5 lines"):
        ScalpSrGroup("all", INDICATORS, (0.05, 0.05, 0.55, 0.95))
    with pytest.raises(ValueError, match="box"):
        ScalpSrGroup("hair", ("hair_loss",), (0.6, 0.05, 0.55, 0.95))
    with pytest.raises(ValueError, match="every indicator once"):
        ScalpGradingStep(grader=None, layout=SCALP_SR_GROUPS[:1])
