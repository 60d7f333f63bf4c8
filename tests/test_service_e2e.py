"""dermpacs as a DICOM node, end to end: real sockets, real processes, Orthanc as the PACS.

Everything runs inside a private network namespace with only loopback (tests/pacs/netns.py).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from pydicom.uid import JPEGBaseline8Bit, generate_uid
from pynetdicom import AE

from apps.demo_study import astronaut_portrait, make_demo_study
from dicom.encode import DEMO_PATIENT, photograph_dataset, write_dataset
from dicom.service.config import load_config
from dicom.service.local_pacs import LocalStorageSCP, send_instances
from dicom.sr import read_measurement_report
from tests.pacs.dcmtk import storescu, wait_until
from tests.pacs.dermpacs import DermpacsProcess
from tests.pacs.netns import free_port, isolated_network, isolation_unavailable_reason
from tests.pacs.orthanc import OrthancServer

_reason = isolation_unavailable_reason()
if shutil.which("Orthanc") is None and shutil.which("Orthanc", path="/usr/sbin") is None:
    _reason = _reason or "Orthanc is not installed"
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")

SEG = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture(scope="module")
def netns():
    with isolated_network():
        yield


@pytest.fixture(scope="module")
def visit(tmp_path_factory, face_masker):
    """Three views of one visit, small enough to analyse quickly (708x1060)."""
    folder = tmp_path_factory.mktemp("visit")
    return make_demo_study(folder, seed=5, size=(708, 1060), masker=face_masker)


def _photos(folder: Path, series: int, per_series: int, description: str = "Facial vitiligo") -> list[Path]:
    """Face photographs in new series of one study (pixels shared, UIDs unique)."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = astronaut_portrait(354, 530)
    study, paths = generate_uid(), []
    for s in range(series):
        series_uid = generate_uid()
        for i in range(per_series):
            ds = photograph_dataset(pixels, study_uid=study, series_uid=series_uid, series_number=s + 1,
                                    instance_number=i + 1, series_description=description, view="frontal")
            paths.append(write_dataset(ds, folder / f"s{s:02d}_{i:02d}.dcm"))
    return paths


def _results_by_source(pacs: LocalStorageSCP) -> tuple[dict[str, list[str]], list[pydicom.Dataset]]:
    """Which photograph each received SEG was derived from; and the SRs."""
    segs: dict[str, list[str]] = {}
    srs = []
    for uid, path in pacs.snapshot().items():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.SOPClassUID == SEG:
            source = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
            segs.setdefault(source, []).append(uid)
        elif ds.Modality == "SR":
            srs.append(pydicom.dcmread(path))
    return segs, srs


def _send_until_killed(paths: list[Path], port: int, kill_after: int, node: DermpacsProcess) -> list[str]:
    """C-STORE one by one; SIGKILL the node after ``kill_after`` acknowledgements. Returns acked UIDs."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.77.1.4", [JPEGBaseline8Bit])
    assoc = ae.associate("127.0.0.1", port, ae_title="DERMAI")
    assert assoc.is_established
    acked = []
    for path in paths:
        ds = pydicom.dcmread(path)
        try:
            status = assoc.send_c_store(ds)
        except Exception:
            break
        if status and status.Status == 0x0000:
            acked.append(str(ds.SOPInstanceUID))
        else:
            break
        if len(acked) == kill_after:
            node.kill()
    if assoc.is_established:
        assoc.abort()
    return acked


# -- Orthanc as the PACS --------------------------------------------------------------------
def test_photographs_stored_in_orthanc_come_back_as_seg_and_sr(netns, tmp_path, visit):
    """Orthanc's Lua router forwards the photographs; SEG + SR land in Orthanc's study (QIDO-RS)."""
    dermpacs_port = free_port()
    with OrthancServer(tmp_path / "orthanc", dermpacs_port) as orthanc:
        node = DermpacsProcess(tmp_path / "dermpacs", destination=f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
                               port=dermpacs_port)
        with node:
            for photo in visit:
                orthanc.upload(photo.path)
            study = pydicom.dcmread(visit[0].path, stop_before_pixels=True).StudyInstanceUID
            wait_until(lambda: len(orthanc.find_instances(study, "SEG")) == 3
                       and len(orthanc.find_instances(study, "SR")) == 1, 180,
                       what=f"SEG+SR in Orthanc\n{node.log_tail()}")
            sr = orthanc.dataset(orthanc.find_instances(study, "SR")[0])
            groups = read_measurement_report(sr)
            assert {g["referenced_sop_instance_uid"] for g in groups} == {p.sop_instance_uid for p in visit}
            # What dermpacs stored back was not routed to it again.
            received = [r for r in json.loads(node.cli("audit", "export", "--format", "json").stdout)
                        if r["event"] == "received"]
            assert {r["sop_instance_uid"] for r in received} == {p.sop_instance_uid for p in visit}

            # dcmtk's storescu as an independent sender, straight to dermpacs.
            others = make_demo_study(tmp_path / "more", seed=9, views=("frontal",), size=(708, 1060))
            storescu(node.port, [others[0].path], calling_ae="STORESCU", called_ae="DERMAI")
            study2 = pydicom.dcmread(others[0].path, stop_before_pixels=True).StudyInstanceUID
            wait_until(lambda: len(orthanc.find_instances(study2, "SEG")) == 1, 120, what="SEG from storescu")

            audit = json.loads(node.cli("audit", "export", "--format", "json").stdout)
            events = {r["event"] for r in audit}
            assert {"received", "routed", "started", "analysed", "sent"} <= events
            analysed = next(r for r in audit if r["event"] == "analysed")
            assert len(analysed["details"]["weights_sha256"]) == 64 and analysed["details"]["model"]
            sent = [r for r in audit if r["event"] == "sent"]
            assert all(r["details"]["destination"].startswith("ORTHANC@") for r in sent)
            assert all(len(r["details"]["sha256"]) == 64 for r in audit if r["event"] == "received")
            export = node.cli("audit", "export").stdout + node.cli("audit", "export", "--format", "json").stdout
            assert DEMO_PATIENT.name not in export and DEMO_PATIENT.patient_id not in export
            assert DEMO_PATIENT.name not in node.log_tail(10**7)
            rows = list(csv.DictReader(io.StringIO(node.cli("audit", "export", "--since", "2999-01-01").stdout)))
            assert rows == []


# -- durability ---------------------------------------------------------------------------
def test_sigkill_while_receiving_loses_nothing_acknowledged(netns, tmp_path):
    paths = _photos(tmp_path / "in", series=1, per_series=6)
    with LocalStorageSCP(tmp_path / "pacs", ae_title="PACS") as pacs:
        node = DermpacsProcess(tmp_path / "node", destination=pacs.address(), stable_seconds=3).start()
        try:
            acked = _send_until_killed(paths, node.port, kill_after=3, node=node)
            assert len(acked) == 3
            node.start()  # restart on the same data dir
            # The modality re-sends what was not acknowledged (and, harmlessly, one that was).
            sent_again = [p for p in paths if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID not in acked]
            send_instances(sent_again + [paths[0]], f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY")
            all_uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}
            wait_until(lambda: set(_results_by_source(pacs)[0]) == all_uids, 180, what=f"6 SEGs\n{node.log_tail()}")
            time.sleep(2)  # anything duplicated would arrive now
            segs, srs = _results_by_source(pacs)
            assert all(len(v) == 1 for v in segs.values()), "a photograph got two SEGs"
            assert pacs.store_count == len(pacs.received), "a result was delivered twice"
            in_srs = [g["referenced_sop_instance_uid"] for sr in srs for g in read_measurement_report(sr)]
            assert sorted(in_srs) == sorted(all_uids)
        finally:
            node.stop()


def test_sigkill_while_analysing_resumes_and_delivers_once(netns, tmp_path):
    paths = _photos(tmp_path / "in", series=1, per_series=3)
    with LocalStorageSCP(tmp_path / "pacs", ae_title="PACS") as pacs:
        node = DermpacsProcess(tmp_path / "node", destination=pacs.address()).start()
        try:
            send_instances(paths, f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY")
            wait_until(lambda: node.status()["jobs"].get("running", 0) == 1, 60, what="a running job")
            node.kill()
            assert not pacs.received
            node.start()
            wait_until(lambda: len(pacs.received) == 4, 180, what=f"3 SEG + 1 SR\n{node.log_tail()}")
            time.sleep(2)
            segs, srs = _results_by_source(pacs)
            assert len(segs) == 3 and all(len(v) == 1 for v in segs.values()) and len(srs) == 1
            assert pacs.store_count == 4
            events = [r["event"] for r in json.loads(node.cli("audit", "export", "--format", "json").stdout)]
            assert "retried" in events
        finally:
            node.stop()


def test_results_survive_a_destination_outage_and_a_restart(netns, tmp_path):
    pacs_port = free_port()
    paths = _photos(tmp_path / "in", series=1, per_series=2)
    node = DermpacsProcess(tmp_path / "node", destination=f"PACS@127.0.0.1:{pacs_port}").start()
    try:
        send_instances(paths, f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY")
        wait_until(lambda: node.status()["outbox"].get("pending", 0) == 3, 120, what="results waiting in the outbox")
        wait_until(lambda: any(e["event"] == "send_failed" for e in node.status()["last_errors"]), 30,
                   what="a failed delivery")
        node.kill()
        node.start()
        with LocalStorageSCP(tmp_path / "pacs", ae_title="PACS", port=pacs_port) as pacs:
            wait_until(lambda: len(pacs.received) == 3, 60, what=f"delivery after the outage\n{node.log_tail()}")
        status = node.status()
        assert status["jobs"] == {"done": 1} and status["outbox"] == {"sent": 3}
    finally:
        node.stop()


def test_a_hanging_app_times_out_and_the_node_keeps_answering(netns, tmp_path):
    defaults = load_config()
    rules = [{"name": "hang", "app": "hang", "series_description_regex": "hang"}] + [
        {k: v for k, v in vars(r).items() if v is not None} for r in defaults.rules if r.app == "facial_vitiligo"
    ] + [{"name": "rest", "app": "facial_vitiligo", "sop_class_uid": defaults.accepted_sop_classes}]
    apps = {"hang": {"module": "tests.service_apps.hang_app", "timeout_s": 4},
            "facial_vitiligo": {"module": "apps.facial_vitiligo", "timeout_s": 600}}
    with LocalStorageSCP(tmp_path / "pacs", ae_title="PACS") as pacs:
        node = DermpacsProcess(tmp_path / "node", destination=pacs.address(), rules=rules, apps=apps).start()
        try:
            send_instances(_photos(tmp_path / "hang", 1, 1, description="hang please"),
                           f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY")
            wait_until(lambda: node.status()["jobs"].get("running", 0) == 1, 30, what="the hanging job")
            assert node.echo(), "the node stopped answering while an app hangs"
            wait_until(lambda: node.status()["jobs"].get("failed", 0) == 1, 30, what="the timeout")
            status = node.status()
            assert "timed out after 4 s" in status["failed_jobs"][0]["error"]
            send_instances(_photos(tmp_path / "ok", 1, 1), f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY")
            wait_until(lambda: len(pacs.received) == 2, 120, what="a normal job after the hang")
            assert node.cli("status").returncode == 1  # failures are visible to monitoring
        finally:
            node.stop()


def test_rules_that_would_leave_accepted_photographs_unrouted_are_refused_at_start_up(tmp_path):
    """Face rules alone would leave a forearm close-up unrouted: the node does not start."""
    face_rules = [{k: v for k, v in vars(r).items() if v is not None}
                  for r in load_config().rules if r.app == "facial_vitiligo"]
    node = DermpacsProcess(tmp_path / "node", destination="PACS@127.0.0.1:9", rules=face_rules)
    with pytest.raises(RuntimeError, match="has no rule that routes every instance of it"):
        node.start()


# -- load -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_200_photographs_over_4_concurrent_associations(netns, tmp_path):
    paths = _photos(tmp_path / "in", series=20, per_series=10)
    with LocalStorageSCP(tmp_path / "pacs", ae_title="PACS") as pacs:
        node = DermpacsProcess(tmp_path / "node", destination=pacs.address(), workers=2, stable_seconds=2).start()
        try:
            chunks = [paths[i::4] for i in range(4)]
            statuses: list[int] = []
            threads = [threading.Thread(target=lambda c=c: statuses.extend(
                send_instances(c, f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY"))) for c in chunks]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert statuses.count(0) == 200
            wait_until(lambda: len(pacs.received) == 220, 600, what=f"200 SEG + 20 SR\n{node.log_tail()}")
            segs, srs = _results_by_source(pacs)
            assert len(segs) == 200 and len(srs) == 20
            status = node.status()
            assert status["jobs"] == {"done": 20} and not status["failed_jobs"]
        finally:
            node.stop()
