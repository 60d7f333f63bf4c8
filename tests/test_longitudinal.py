"""Visits over time without Orthanc: tracking UIDs, the SR's visit context, the mesh warp,
and the priors lookup against the embedded stand-in PACS (real pynetdicom sockets)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from dicom import codes
from dicom.encode import PatientInfo, pattern_image, photograph_dataset, write_dataset
from dicom.longitudinal import PRIORS_FOLDER, VisitContext, patient_key, read_priors, tracking_uid
from dicom.reader import read_photograph
from dicom.seg import AlgorithmIdentity
from dicom.service.config import Destination
from dicom.service.local_pacs import LocalStorageSCP, send_instances
from dicom.service.priors import PriorsRequest, fetch_priors
from dicom.sr import NumericMeasurement, PhotoMeasurementGroup, build_measurement_report, read_measurement_report
from dicom.validate import dciodvfy
from operators.longitudinal_comparison import PriorView, comparison_measurements
from operators.photo_loader import list_input_files

ALGORITHM = AlgorithmIdentity("dermpacs facial vitiligo", "test", codes.ARTIFICIAL_INTELLIGENCE, "0" * 64)
SECRET = b"site secret"
ME = PatientInfo(name="Same^Name", patient_id="P-1")


def _photo(folder: Path, patient: PatientInfo, issuer: str, when: dt.datetime, name: str) -> Path:
    ds = photograph_dataset(pattern_image(96, 64), patient=PatientInfo(**{**patient.__dict__, "study_datetime": when}),
                            view="frontal")
    ds.IssuerOfPatientID = issuer
    return write_dataset(ds, folder / f"{name}.dcm")


def _sr(photo_path: Path, folder: Path, visit: VisitContext | None = None, value: float = 10.0) -> Path:
    photo = read_photograph(photo_path)
    group = PhotoMeasurementGroup(photo, np.array([[5, 5], [50, 5], [50, 80]]), "Face, frontal view", codes.VITILIGO,
                                  codes.SKIN_OF_FACE, [NumericMeasurement(codes.F_VITILIGO, value, codes.PERCENT)],
                                  tracking_uid=tracking_uid(patient_key(SECRET, "SITE", "P-1"), ALGORITHM.name, "frontal"),
                                  visit=visit)
    return write_dataset(build_measurement_report([group], ALGORITHM), folder / f"SR-{photo_path.stem}.dcm")


def test_tracking_uid_is_stable_and_reveals_nothing():
    key = patient_key(SECRET, "SITE", "P-1")
    uid = tracking_uid(key, ALGORITHM.name, "face", "left")
    assert uid == tracking_uid(patient_key(SECRET, "SITE", " P-1 "), ALGORITHM.name, "face", "left")
    assert uid.startswith("2.25.") and len(uid) <= 64 and "P-1" not in uid
    others = {tracking_uid(key, ALGORITHM.name, "face", "right"),
              tracking_uid(patient_key(SECRET, "OTHER", "P-1"), ALGORITHM.name, "face", "left"),
              tracking_uid(patient_key(b"another site", "SITE", "P-1"), ALGORITHM.name, "face", "left")}
    assert uid not in others and len(others) == 3
    with pytest.raises(ValueError):
        patient_key(b"", "SITE", "P-1")


def test_comparison_adds_up_and_names_responders():
    base = PriorView("20260101", "1.2", pydicom.Dataset(), 10.0, None, None)
    prev = PriorView("20260401", "1.3", pydicom.Dataset(), 6.0, None, None)
    values = {m.name.meaning: m.value for m in comparison_measurements(4.9, base, prev)}
    assert values[codes.F_VITILIGO_CHANGE_BASELINE.meaning] == pytest.approx(-5.1)
    assert values[codes.F_VITILIGO_CHANGE_PREVIOUS.meaning] == pytest.approx(-1.1)
    assert values[codes.F_VITILIGO_RELATIVE_CHANGE.meaning] == pytest.approx(-51.0)
    assert (values[codes.F_VITILIGO_50.meaning], values[codes.F_VITILIGO_75.meaning]) == (1.0, 0.0)
    zero = {m.name.meaning for m in comparison_measurements(1.0, PriorView("", "", pydicom.Dataset(), 0.0, None, None),
                                                            PriorView("", "", pydicom.Dataset(), 0.0, None, None))}
    assert codes.F_VITILIGO_50.meaning not in zero  # no relative change from a zero baseline


def test_sr_with_visit_context_is_valid_and_reads_back(tmp_path):
    earlier = _photo(tmp_path, ME, "SITE", dt.datetime(2026, 1, 5, 9), "v1")
    now = _photo(tmp_path, ME, "SITE", dt.datetime(2026, 4, 6, 9), "v2")
    baseline_sr = pydicom.dcmread(_sr(earlier, tmp_path))
    visit = VisitContext(order=2, baseline_date=dt.date(2026, 1, 5),
                         prior_reports=((codes.BASELINE_REPORT, baseline_sr),), comment="Compared with 1 earlier visit.")
    path = _sr(now, tmp_path, visit)
    result = dciodvfy(path)
    assert result.ok, result.errors
    ds = pydicom.dcmread(path)
    assert ds.IssuerOfPatientID == "SITE"
    assert ds.PertinentOtherEvidenceSequence[0].StudyInstanceUID == baseline_sr.StudyInstanceUID
    (group,) = read_measurement_report(ds)
    assert group["time_point_order"] == 2 and group["comment"] == "Compared with 1 earlier visit."
    assert group["prior_reports"] == {codes.BASELINE_REPORT.meaning: str(baseline_sr.SOPInstanceUID)}
    assert group["tracking_uid"] == read_measurement_report(baseline_sr)[0]["tracking_uid"]


def test_photo_loader_leaves_priors_alone(tmp_path):
    (tmp_path / PRIORS_FOLDER / "study-001").mkdir(parents=True)
    (tmp_path / PRIORS_FOLDER / "study-001" / "x.dcm").write_bytes(b"prior")
    (tmp_path / "photo.dcm").write_bytes(b"photo")
    assert [c.source.name for c in list_input_files(tmp_path)] == ["photo.dcm"]
    assert read_priors(tmp_path).status == "absent"
    with pytest.raises(ValueError):
        VisitContext(order=0)
    assert VisitContext(order=None).time_point is None


def test_fetch_priors_takes_only_this_patients_results(tmp_path):
    """Earlier results of the same name but another Patient ID, and of the same ID from another
    issuer, sit in the PACS beside the patient's own: only the patient's own come back."""
    archive, job = tmp_path / "archive", tmp_path / "job"
    archive.mkdir(), job.mkdir()
    mine = _photo(archive, ME, "SITE", dt.datetime(2026, 1, 5, 9), "mine")
    other_id = _photo(archive, PatientInfo(name="Same^Name", patient_id="P-2"), "SITE", dt.datetime(2026, 1, 5, 9), "id")
    other_issuer = _photo(archive, ME, "ELSEWHERE", dt.datetime(2026, 1, 5, 9), "issuer")
    today = _photo(job, ME, "SITE", dt.datetime(2026, 4, 6, 9), "today")
    # A PACS that does not index the issuer: its C-FIND matches on Patient ID alone.
    with LocalStorageSCP(tmp_path / "pacs", ae_title="PACS", match_issuer=False) as pacs:
        mine_sr = _sr(mine, archive)
        send_instances([mine_sr, _sr(other_id, archive), _sr(other_issuer, archive)], pacs.address())
        request = PriorsRequest(Destination.parse(pacs.address()), "DERMAI", 10, 50, ALGORITHM.name, SECRET.hex())
        manifest = fetch_priors(request, job)
        assert manifest["status"] == "found", manifest
        (study,) = read_priors(job).studies
        fetched = [pydicom.dcmread(f) for f in study.files]
        assert [str(ds.SOPInstanceUID) for ds in fetched] == [str(pydicom.dcmread(mine_sr).SOPInstanceUID)]
        assert manifest["rejected"] == {"other patient (Patient ID or issuer differs)": 1}  # same ID, other issuer
        assert [q["operation"] for q in manifest["queries"]][:2] == ["C-FIND", "C-FIND"]
        assert manifest["tracking_key"] == patient_key(SECRET, "SITE", "P-1")
        assert "P-1" not in (job / PRIORS_FOLDER / "priors.json").read_text()
    assert today.exists()


def test_unreachable_pacs_fails_the_lookup_quickly_and_quietly(tmp_path):
    _photo(tmp_path, ME, "SITE", dt.datetime(2026, 4, 6, 9), "today")
    from tests.pacs.netns import free_port

    request = PriorsRequest(Destination("NOBODY", "127.0.0.1", free_port()), "DERMAI", 3, 50, ALGORITHM.name, SECRET.hex())
    started = time.monotonic()
    manifest = fetch_priors(request, tmp_path)
    assert time.monotonic() - started < 10
    assert manifest["status"] == "failed" and "association" in manifest["reason"]
    priors = read_priors(tmp_path)
    assert priors.status == "failed" and priors.tracking_key and not priors.compared


def test_mesh_warp_follows_a_reframed_face(face_masker):
    from apps.demo_study import astronaut_portrait
    from models.facial_alignment import face_landmarks, warp_masks

    portrait = astronaut_portrait(708, 1060)
    matrix = cv2.getRotationMatrix2D((354, 530), 0.0, 1.05)
    matrix[:, 2] += (-20, 15)
    moved = cv2.warpAffine(portrait, matrix, (708, 1060), borderValue=(205, 205, 210))
    before = face_masker.mask(portrait).skin_mask
    after = face_masker.mask(moved).skin_mask
    (warped,), valid = warp_masks([before], face_landmarks(face_masker, portrait), face_landmarks(face_masker, moved),
                                  after.shape)
    inside = valid & after
    assert inside.sum() > 0.95 * after.sum()
    iou = np.logical_and(warped, after).sum() / np.logical_or(warped & valid, after & valid).sum()
    assert iou > 0.93, iou


def test_trend_picture_is_a_valid_secondary_capture(tmp_path):
    from dicom.trend import TrendPoint, build_trend_image, render_trend

    photo = pydicom.dcmread(_photo(tmp_path, ME, "SITE", dt.datetime(2026, 7, 6, 9), "today"))
    series = {view: [TrendPoint(dt.date(2026, 1, 5), 20.0 + k), TrendPoint(dt.date(2026, 4, 6), 12.0 + k),
                     TrendPoint(dt.date(2026, 7, 6), 7.5 + k)] for k, view in enumerate(("left", "frontal", "right"))}
    rgb = render_trend(series)
    assert rgb.shape == (800, 1200, 3) and rgb.std() > 10  # something is drawn
    sc = build_trend_image(photo, rgb, ALGORITHM)
    path = write_dataset(sc, tmp_path / "trend.dcm")
    result = dciodvfy(path)
    assert result.ok, result.errors
    back = pydicom.dcmread(path)
    assert back.StudyInstanceUID == photo.StudyInstanceUID and back.PatientID == photo.PatientID
    assert back.IssuerOfPatientID == "SITE" and list(back.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert back.Manufacturer == "dermpacs"
    with pytest.raises(ValueError):
        TrendPoint(dt.date(2026, 1, 1), 120.0)


def test_close_up_site_is_tracked_and_compared_with_the_previous_visit(tmp_path):
    """Close-ups and prick tests follow a site (its tracking label), no warp: previous value and change."""
    from dicom.longitudinal import write_manifest
    from operators.cases import MeasurementGroupResult, PhotoCase
    from operators.longitudinal_sites import SiteComparisonStep

    closeup = AlgorithmIdentity("dermpacs vitiligo close-up", "test", codes.ARTIFICIAL_INTELLIGENCE, "0" * 64)
    key = patient_key(SECRET, "SITE", "P-1")
    site = "Skin of left hand"
    then_photo = read_photograph(_photo(tmp_path, ME, "SITE", dt.datetime(2026, 1, 5, 9), "then"))
    group = PhotoMeasurementGroup(then_photo, np.array([[5, 5], [50, 5], [50, 80]]), site, codes.VITILIGO, codes.SKIN,
                                  [NumericMeasurement(codes.VITILIGO_SKIN_PERCENT, 20.0, codes.PERCENT)],
                                  tracking_uid=tracking_uid(key, closeup.name, site))
    job = tmp_path / "job"
    prior = write_dataset(build_measurement_report([group], closeup), job / PRIORS_FOLDER / "study-001" / "sr.dcm")
    write_manifest(job / PRIORS_FOLDER, {"status": "found", "reason": "", "tracking_key": key, "studies": [
        {"study_instance_uid": then_photo.study_instance_uid, "study_date": "20260105", "files": ["study-001/sr.dcm"]}]})
    now = read_photograph(_photo(job, ME, "SITE", dt.datetime(2026, 4, 6, 9), "now"))
    cases = [PhotoCase(source=now.path, photo=now, groups=[MeasurementGroupResult(
        np.array([[5, 5], [50, 5], [50, 80]]), site, codes.VITILIGO, codes.SKIN,
        [NumericMeasurement(codes.VITILIGO_SKIN_PERCENT, 12.5, codes.PERCENT)]),
        MeasurementGroupResult(np.array([[5, 5], [50, 5], [50, 80]]), "Skin of right knee", codes.VITILIGO, codes.SKIN,
                               [NumericMeasurement(codes.VITILIGO_SKIN_PERCENT, 3.0, codes.PERCENT)])])]
    SiteComparisonStep(job, closeup).process(cases[0])
    hand, knee = cases[0].groups
    assert hand.tracking_uid == group.tracking_uid and hand.visit.order == 2
    values = {m.name.meaning: m.value for m in hand.measurements}
    assert values["Vitiligo area (percent of visible skin) at previous visit"] == 20.0
    assert values["Vitiligo area (percent of visible skin) change since previous"] == -7.5
    assert hand.visit.prior_reports[0][1].SOPInstanceUID == pydicom.dcmread(prior).SOPInstanceUID
    assert knee.visit.comment.startswith("No comparison") and len(knee.measurements) == 1
    report = build_measurement_report([PhotoMeasurementGroup(now, g.outline_xy, g.tracking_label, g.finding, g.finding_site,
                                                             g.measurements, tracking_uid=g.tracking_uid, visit=g.visit)
                                       for g in cases[0].groups], closeup)
    path = write_dataset(report, tmp_path / "sr-now.dcm")
    assert dciodvfy(path).ok, dciodvfy(path).errors


def test_fetch_priors_over_dicomweb_takes_only_this_patients_results(tmp_path):
    """The same lookup against Orthanc's DICOMweb (QIDO-RS + WADO-RS): only the patient's own SR."""
    import shutil

    from tests.pacs.netns import free_port, isolated_network, isolation_unavailable_reason
    from tests.pacs.orthanc import OrthancServer

    reason = isolation_unavailable_reason()
    if reason or (shutil.which("Orthanc") is None and shutil.which("Orthanc", path="/usr/sbin") is None):
        pytest.skip(reason or "Orthanc is not installed")
    archive, job = tmp_path / "archive", tmp_path / "job"
    archive.mkdir(), job.mkdir()
    other_issuer = _photo(archive, ME, "ELSEWHERE", dt.datetime(2026, 1, 5, 9), "issuer")
    other_id = _photo(archive, PatientInfo(name="Same^Name", patient_id="P-2"), "SITE", dt.datetime(2026, 1, 5, 9), "id")
    mine = _photo(archive, ME, "SITE", dt.datetime(2026, 1, 6, 9), "mine")
    _photo(job, ME, "SITE", dt.datetime(2026, 4, 6, 9), "today")
    with isolated_network(), OrthancServer(tmp_path / "orthanc", free_port(), router=False) as pacs:
        mine_sr = _sr(mine, archive)
        for path in (_sr(other_issuer, archive), _sr(other_id, archive), mine_sr):  # the other issuer first
            assert pacs.upload(path)["Status"] == "Success"
        request = PriorsRequest(Destination.parse(f"{pacs.url}/dicom-web"), "DERMAI", 10, 50, ALGORITHM.name,
                                SECRET.hex())
        manifest = fetch_priors(request, job)
    assert manifest["status"] == "found", manifest
    (study,) = read_priors(job).studies
    assert [str(pydicom.dcmread(f).SOPInstanceUID) for f in study.files] == [str(pydicom.dcmread(mine_sr).SOPInstanceUID)]
    assert set(manifest["rejected"]) <= {"other patient (Patient ID or issuer differs)"}
    operations = [(q["operation"], q["level"], q["status"]) for q in manifest["queries"]]
    assert operations[0] == ("QIDO-RS", "STUDY", "success") and ("WADO-RS", "SERIES", "success") in operations
    assert "P-1" not in (job / PRIORS_FOLDER / "priors.json").read_text()


def test_unreachable_dicomweb_source_fails_the_lookup_quickly_and_quietly(tmp_path):
    _photo(tmp_path, ME, "SITE", dt.datetime(2026, 4, 6, 9), "today")
    from tests.pacs.netns import free_port

    request = PriorsRequest(Destination.parse(f"http://127.0.0.1:{free_port()}/dicom-web"), "DERMAI", 3, 50,
                            ALGORITHM.name, SECRET.hex())
    started = time.monotonic()
    manifest = fetch_priors(request, tmp_path)
    assert time.monotonic() - started < 10
    assert manifest["status"] == "failed" and manifest["reason"].startswith("QIDO-RS at STUDY level"), manifest
    assert manifest["queries"][0]["operation"] == "QIDO-RS" and manifest["queries"][0]["status"].startswith("no response")
    assert read_priors(tmp_path).status == "failed"
