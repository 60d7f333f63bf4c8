"""Treatment response across visits, through the network: Orthanc -> dermpacs -> Orthanc.

Orthanc (deploy/orthanc/orthanc.json with the router) is the PACS; `dermpacs serve` is a
real process that, before analysing a facial study, C-FINDs and C-GETs the patient's
earlier results from Orthanc. The demo patient's visits are painted with known lesions
that repigment from their margins (apps.demo_visits), so the true change is known.
Tests run in file order and share the PACS: each visit builds on the ones before.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from apps.demo_visits import make_demo_visits
from dicom import codes
from dicom.encode import DEMO_PATIENT, write_dataset
from dicom.service.local_pacs import LocalStorageSCP, send_instances
from dicom.sr import read_measurement_report
from dicom.validate import dciodvfy
from tests.pacs.dcmtk import wait_until
from tests.pacs.dermpacs import DermpacsProcess
from tests.pacs.netns import free_port, isolated_network, isolation_unavailable_reason
from tests.pacs.orthanc import OrthancServer

_reason = isolation_unavailable_reason()
if shutil.which("Orthanc") is None and shutil.which("Orthanc", path="/usr/sbin") is None:
    _reason = _reason or "Orthanc is not installed"
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")

SIZE = (2832, 4240)  # the paper's format, as `make demo` sends
F = codes.F_VITILIGO.meaning
CHANGE = codes.F_VITILIGO_CHANGE_BASELINE.meaning


@pytest.fixture(scope="module")
def visits(tmp_path_factory, face_masker):
    """The demo patient's baseline and two follow-ups (lesion area 100 %, 50 %, 25 %)."""
    return make_demo_visits(tmp_path_factory.mktemp("visits"), remaining=(1.0, 0.5, 0.25), size=SIZE,
                            masker=face_masker)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """Orthanc with the router, and dermpacs storing back into it (two workers)."""
    tmp = tmp_path_factory.mktemp("priors")
    with isolated_network():
        port = free_port()
        with OrthancServer(tmp / "orthanc", port) as pacs:
            dermpacs = DermpacsProcess(tmp / "dermpacs", f"ORTHANC@127.0.0.1:{pacs.dicom_port}", port=port,
                                       workers=2)
            with dermpacs:
                yield SimpleNamespace(tmp=tmp, pacs=pacs, dermpacs=dermpacs)


def _send(node, photographs) -> None:
    for photo in photographs:
        assert node.pacs.upload(photo.path)["Status"] == "Success"


def _wait_sr(node, visit, timeout: float = 240) -> tuple[Dataset, list[dict]]:
    """The SR dermpacs stored into this visit's study (read from Orthanc), and its groups."""
    def ready():
        srs = [node.pacs.dataset(uid) for uid in node.pacs.find_instances(visit.study_instance_uid, "SR")]
        return [ds for ds in srs if ds.Manufacturer == "dermpacs"] or None

    try:
        found = wait_until(ready, timeout, interval=0.5, what="the SR in Orthanc")
    except TimeoutError:
        raise AssertionError(f"no SR for visit {visit.number}:\n{node.dermpacs.log_tail()}") from None
    assert len(found) == 1
    return found[0], read_measurement_report(found[0])


def _by_view(groups: list[dict]) -> dict[str, dict]:
    """Per view: its main group (tracking UID, time point, references), with the measurements
    of the view's extra groups ("...: since baseline", "...: change map and previous visit") merged in."""
    views: dict[str, dict] = {}
    for g in sorted(groups, key=lambda g: ":" in g["tracking_label"]):
        view = g["tracking_label"].split(", ")[1].split()[0]
        if view not in views:
            views[view] = {**g, "measurements": dict(g["measurements"])}
        else:
            assert not set(g["measurements"]) & set(views[view]["measurements"])
            views[view]["measurements"].update(g["measurements"])
    return views


def _with_issuer(visit, folder: Path, issuer: str | None = None, patient_id: str | None = None,
                 study_date: str | None = None):
    """The same photographs as another patient (new UIDs), e.g. a colliding name."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    out = []
    for photo in visit.photographs:
        ds = pydicom.dcmread(photo.path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        if issuer is not None:
            ds.IssuerOfPatientID = issuer
        if patient_id is not None:
            ds.PatientID = patient_id
        if study_date is not None:
            ds.StudyDate = ds.SeriesDate = study_date
        out.append(dataclasses.replace(photo, path=write_dataset(ds, folder / photo.path.name),
                                       sop_instance_uid=str(ds.SOPInstanceUID)))
    return dataclasses.replace(visit, study_instance_uid=study, photographs=out)


def _other_product_sr(node, visit) -> str:
    """An SR from another vendor in the patient's baseline study: must never be a prior."""
    source = pydicom.dcmread(visit.photographs[0].path, stop_before_pixels=True)
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    for keyword in ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber"):
        setattr(ds, keyword, source.get(keyword, ""))
    ds.SeriesInstanceUID, ds.Modality, ds.Manufacturer = pydicom.uid.generate_uid(), "SR", "ACME"
    ds.ManufacturerModelName = "dermpacs facial vitiligo"  # even a look-alike model name
    ds.SeriesNumber, ds.InstanceNumber, ds.ValueType = 77, 1, "CONTAINER"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    path = write_dataset(ds, node.tmp / "acme-sr.dcm")
    assert node.pacs.upload(path)["Status"] == "Success"
    return str(ds.SOPInstanceUID)


def test_other_patient_with_colliding_name_is_never_a_prior(node, visits):
    # Same name and Patient ID as the demo patient, another issuer: another person.
    # Photographed earlier, so that it would be a "prior" if patient matching were by name or ID alone.
    other = _with_issuer(visits[0], node.tmp / "other-issuer", issuer="OTHER-HOSPITAL", study_date="20250101")
    _send(node, other.photographs)
    _, other_groups = _wait_sr(node, other)
    # Then the demo patient's baseline: the other person's results must not be its priors.
    _send(node, visits[0].photographs)
    sr, groups = _wait_sr(node, visits[0])
    assert len(groups) == 3  # no comparison: one group per view
    for g in groups:
        assert g["time_point_order"] == 1
        assert g["comment"].startswith("No comparison with earlier visits")
        assert not g["prior_reports"] and CHANGE not in g["measurements"]
    assert "PertinentOtherEvidenceSequence" not in sr
    assert {g["tracking_uid"] for g in groups}.isdisjoint({g["tracking_uid"] for g in other_groups})
    # The lookup ran and is in the audit trail, without patient data.
    audit = node.dermpacs.cli("audit", "export", "--format", "csv").stdout
    assert "priors_query" in audit and "C-FIND" in audit
    assert DEMO_PATIENT.patient_id not in audit and "Demo^Dermpacs" not in audit


def test_second_visit_reports_change_from_baseline(node, visits):
    baseline_sr, baseline = _wait_sr(node, visits[0])
    acme = _other_product_sr(node, visits[0])
    _send(node, visits[1].photographs)
    sr, groups = _wait_sr(node, visits[1])
    before, now = _by_view(baseline), _by_view(groups)
    assert set(now) == {"left", "frontal", "right"}
    for view, g in now.items():
        m = g["measurements"]
        assert g["tracking_uid"] == before[view]["tracking_uid"], view  # same patient and view: same UID
        assert g["time_point_order"] == 2
        assert g["prior_reports"] == {codes.BASELINE_REPORT.meaning: str(baseline_sr.SOPInstanceUID)}
        assert m[codes.F_VITILIGO_BASELINE.meaning][0] == pytest.approx(before[view]["measurements"][F][0])
        assert m[CHANGE][0] == pytest.approx(m[F][0] - m[codes.F_VITILIGO_BASELINE.meaning][0], abs=1e-3)
        assert m[codes.DAYS_SINCE_BASELINE.meaning][0] == 91
        assert codes.REPIGMENTED_AREA.meaning in m, g["comment"]
        # Repigmented from the margins: the map shows more repigmented than new skin.
        assert m[codes.REPIGMENTED_AREA.meaning][0] > 5 * m[codes.NEW_DEPIGMENTATION_AREA.meaning][0]
    # OHIF 3.13.2 shows a group's first five NUMs: the comparison is among them.
    for g in groups:
        first = list(g["measurements"])[:5]
        if g["tracking_label"].endswith("since baseline"):
            assert first[:3] == [codes.F_VITILIGO_BASELINE.meaning, CHANGE, codes.F_VITILIGO_RELATIVE_CHANGE.meaning]
        if g["tracking_label"].endswith("previous visit"):
            assert first[:3] == [codes.REPIGMENTED_AREA.meaning, codes.NEW_DEPIGMENTATION_AREA.meaning,
                                 codes.UNCHANGED_VITILIGO_AREA.meaning]
    assert len({g["tracking_uid"] for g in groups}) == 9
    referenced = {item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                  for s in sr.PertinentOtherEvidenceSequence for item in s.ReferencedSeriesSequence}
    assert referenced == {str(baseline_sr.SOPInstanceUID)} and acme not in referenced
    # SR and change SEGs are valid DICOM.
    path = node.tmp / "visit2-sr.dcm"
    sr.save_as(path)
    assert dciodvfy(path).ok, dciodvfy(path).errors
    segs = [node.pacs.dataset(uid) for uid in node.pacs.find_instances(visits[1].study_instance_uid, "SEG")]
    change = [s for s in segs if s.SeriesDescription == "dermpacs change since baseline"]
    assert len(change) == 3
    labels = [s.SegmentLabel for s in change[0].SegmentSequence]
    assert labels == ["Repigmented since baseline", "New depigmentation since baseline", "Unchanged vitiligo"]
    change[0].save_as(node.tmp / "change-seg.dcm")
    assert dciodvfy(node.tmp / "change-seg.dcm").ok
    # The trend picture: a Secondary Capture in the follow-up's study, not routed back for analysis.
    trend = [node.pacs.dataset(uid) for uid in node.pacs.find_instances(visits[1].study_instance_uid, "OT")]
    assert [t.SeriesDescription for t in trend] == ["dermpacs trend"]
    trend[0].save_as(node.tmp / "trend.dcm")
    assert dciodvfy(node.tmp / "trend.dcm").ok, dciodvfy(node.tmp / "trend.dcm").errors
    audit = csv.DictReader(io.StringIO(node.dermpacs.cli("audit", "export", "--format", "csv").stdout))
    assert not [row for row in audit if row["event"] == "received" and row["sop_instance_uid"] == trend[0].SOPInstanceUID]


def test_second_visit_change_within_2_points_of_the_truth(node, visits):
    """The issue's bar: the reported change lies within 2 points of the painted truth."""
    _, baseline = _wait_sr(node, visits[0])
    _, groups = _wait_sr(node, visits[1])
    truth_then, truth_now = visits[0].truth(), visits[1].truth()
    errors = {view: g["measurements"][CHANGE][0] - (truth_now[view] - truth_then[view])
              for view, g in _by_view(groups).items()}
    assert all(abs(e) <= 2.0 for e in errors.values()), errors


def test_third_visit_compares_with_baseline_and_previous(node, visits):
    first_sr, first = _wait_sr(node, visits[0])
    second_sr, second = _wait_sr(node, visits[1])
    _send(node, visits[2].photographs)
    _, groups = _wait_sr(node, visits[2])
    b, p = _by_view(first), _by_view(second)
    for view, g in _by_view(groups).items():
        m = g["measurements"]
        assert g["time_point_order"] == 3 and g["tracking_uid"] == b[view]["tracking_uid"]
        assert m[codes.F_VITILIGO_BASELINE.meaning][0] == pytest.approx(b[view]["measurements"][F][0])
        assert m[codes.F_VITILIGO_PREVIOUS.meaning][0] == pytest.approx(p[view]["measurements"][F][0])
        assert m[codes.F_VITILIGO_CHANGE_PREVIOUS.meaning][0] == pytest.approx(
            m[F][0] - p[view]["measurements"][F][0], abs=1e-3)
        assert g["prior_reports"] == {codes.BASELINE_REPORT.meaning: str(first_sr.SOPInstanceUID),
                                      codes.PREVIOUS_REPORT.meaning: str(second_sr.SOPInstanceUID)}


def test_priors_still_being_analysed_are_waited_for(node, visits):
    """A new patient's baseline and follow-up arrive together: the follow-up (second
    worker) starts while the baseline is being analysed, and waits for its results."""
    first = _with_issuer(visits[0], node.tmp / "p2-v1", patient_id="DERMPACS-DEMO-0002")
    second = _with_issuer(visits[1], node.tmp / "p2-v2", patient_id="DERMPACS-DEMO-0002")
    _send(node, first.photographs)
    _send(node, second.photographs)
    first_sr, _ = _wait_sr(node, first)
    _, groups = _wait_sr(node, second)
    assert len(groups) == 9  # per view: the measurements, since baseline, change map
    for g in _by_view(groups).values():
        assert g["time_point_order"] == 2, g["comment"]
        assert g["prior_reports"] == {codes.BASELINE_REPORT.meaning: str(first_sr.SOPInstanceUID)}


class _SilentFindSCP:
    """A PACS that accepts the association and never answers C-FIND (until stopped)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.finds = 0

    def _on_find(self, event):
        self.finds += 1
        self.release.wait(60)
        yield 0xA700, None

    def __enter__(self):
        ae = AE(ae_title="SLOWPACS")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context("1.2.840.10008.5.1.4.1.2.2.3")  # Study Root GET: accepted, unused
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, self._on_find)])
        self.port = self.server.server_address[1]
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.server.shutdown()


def test_pacs_timing_out_on_c_find_never_blocks_the_result(tmp_path, visits):
    with isolated_network(), LocalStorageSCP(tmp_path / "pacs", ae_title="STORE") as store, _SilentFindSCP() as slow:
        dermpacs = DermpacsProcess(tmp_path / "dermpacs", store.address(),
                                   priors={"source": f"SLOWPACS@127.0.0.1:{slow.port}", "timeout_s": 3})
        with dermpacs:
            started = time.monotonic()
            send_instances([p.path for p in visits[1].photographs], f"DERMAI@127.0.0.1:{dermpacs.port}")
            assert store.wait_for(4, 180), dermpacs.log_tail()  # 3 SEGs and the SR, without comparison
            elapsed = time.monotonic() - started
            audit = dermpacs.cli("audit", "export", "--format", "csv").stdout
    srs = [pydicom.dcmread(p) for p in store.snapshot().values()]
    srs = [ds for ds in srs if ds.Modality == "SR"]
    assert len(srs) == 1 and slow.finds == 1
    for g in read_measurement_report(srs[0]):
        assert g["comment"].startswith("No comparison with earlier visits: C-FIND at STUDY level got no response")
        assert g["time_point_order"] is None and F in g["measurements"]  # unknown: no time point claimed
    assert "no response" in audit
    assert elapsed < 120


# -- Orthanc as a DICOMweb destination: QIDO-RS + WADO-RS instead of C-FIND + C-GET ------------

SMALL = (1416, 2120)  # half the paper's format: only that priors are found and compared is asserted


@pytest.fixture(scope="module")
def small_visits(tmp_path_factory, face_masker):
    return make_demo_visits(tmp_path_factory.mktemp("small-visits"), remaining=(1.0, 0.5), size=SMALL,
                            masker=face_masker)


def test_priors_from_a_dicomweb_destination(tmp_path, small_visits):
    """dermpacs stores into Orthanc by STOW-RS, so its priors come from Orthanc by QIDO-RS/WADO-RS."""
    with isolated_network():
        port = free_port()
        with OrthancServer(tmp_path / "orthanc", port) as pacs:
            web = SimpleNamespace(tmp=tmp_path, pacs=pacs,
                                  dermpacs=DermpacsProcess(tmp_path / "dermpacs", f"{pacs.url}/dicom-web", port=port))
            with web.dermpacs:
                _send(web, small_visits[0].photographs)
                baseline_sr, baseline = _wait_sr(web, small_visits[0])
                assert all(g["time_point_order"] == 1 for g in baseline)
                acme = _other_product_sr(web, small_visits[0])  # another product's SR: never a prior
                _send(web, small_visits[1].photographs)
                sr, groups = _wait_sr(web, small_visits[1])
                rows = list(csv.DictReader(io.StringIO(web.dermpacs.cli("audit", "export", "--format", "csv").stdout)))
    before, now = _by_view(baseline), _by_view(groups)
    assert set(now) == {"left", "frontal", "right"}
    for view, g in now.items():
        m = g["measurements"]
        assert g["time_point_order"] == 2, g["comment"]
        assert g["tracking_uid"] == before[view]["tracking_uid"]
        assert g["prior_reports"] == {codes.BASELINE_REPORT.meaning: str(baseline_sr.SOPInstanceUID)}
        assert m[codes.F_VITILIGO_BASELINE.meaning][0] == pytest.approx(before[view]["measurements"][F][0])
        assert m[CHANGE][0] == pytest.approx(m[F][0] - m[codes.F_VITILIGO_BASELINE.meaning][0], abs=1e-3)
        assert codes.REPIGMENTED_AREA.meaning in m, g["comment"]  # the baseline's photographs came by WADO-RS
    referenced = {item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                  for s in sr.PertinentOtherEvidenceSequence for item in s.ReferencedSeriesSequence}
    assert referenced == {str(baseline_sr.SOPInstanceUID)} and acme not in referenced
    queries = [r for r in rows if r["event"] == "priors_query"]
    text = "\n".join(",".join(r.values()) for r in queries)
    assert "QIDO-RS" in text and "WADO-RS" in text and "C-FIND" not in text and "C-GET" not in text, text
    assert DEMO_PATIENT.patient_id not in text


def test_unreachable_dicomweb_priors_source_never_blocks_the_result(tmp_path, small_visits):
    with isolated_network(), LocalStorageSCP(tmp_path / "pacs", ae_title="STORE") as store:
        nobody = free_port()  # nothing listens: connection refused
        dermpacs = DermpacsProcess(tmp_path / "dermpacs", store.address(),
                                   priors={"source": f"http://127.0.0.1:{nobody}/dicom-web", "timeout_s": 3})
        with dermpacs:
            started = time.monotonic()
            send_instances([p.path for p in small_visits[1].photographs], f"DERMAI@127.0.0.1:{dermpacs.port}")
            assert store.wait_for(4, 180), dermpacs.log_tail()  # 3 SEGs and the SR, without comparison
            elapsed = time.monotonic() - started
            audit = dermpacs.cli("audit", "export", "--format", "csv").stdout
    srs = [ds for ds in (pydicom.dcmread(p) for p in store.snapshot().values()) if ds.Modality == "SR"]
    assert len(srs) == 1
    for g in read_measurement_report(srs[0]):
        assert g["comment"].startswith("No comparison with earlier visits: QIDO-RS at STUDY level"), g["comment"]
        assert g["time_point_order"] is None and F in g["measurements"]
    assert "QIDO-RS" in audit and "no response" in audit
    assert elapsed < 120
