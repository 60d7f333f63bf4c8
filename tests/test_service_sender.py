"""The result sender against real receivers: a pynetdicom SCP, dcmtk storescp, a STOW-RS server."""

from __future__ import annotations

import email.parser
import email.policy
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import Comprehensive3DSRStorage, EnhancedSRStorage, SegmentationStorage, Verification

from dicom.service.config import ConfigError, Destination, SenderConfig, ServiceConfig
from dicom.service.sender import ResultSender, backoff_delay
from dicom.service.store import JobStore
from tests.test_service_listener import certs  # noqa: F401 - the module's PKI fixture

RESULT_CLASSES = (SegmentationStorage, Comprehensive3DSRStorage, EnhancedSRStorage)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def result_file(folder: Path, sop_class: str, study_uid: str, ts: str = ExplicitVRLittleEndian) -> tuple[Path, str]:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SEG" if sop_class == SegmentationStorage else "SR"
    ds.PatientID = "DERMPACS-TEST"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path, str(ds.SOPInstanceUID)


class Env:
    def __init__(self, tmp: Path, destination: Destination, **config) -> None:
        self.tmp = tmp
        self.config = ServiceConfig(data_dir=tmp / "data", destination=destination,
                                    sender=config.pop("sender", SenderConfig(max_attempts=4, backoff_initial_s=5,
                                                                             backoff_max_s=60)), **config)
        self.store = JobStore(self.config.database)
        self.sender = ResultSender(self.config, self.store)

    def queue(self, classes=(SegmentationStorage, Comprehensive3DSRStorage), ts=ExplicitVRLittleEndian):
        study, series = generate_uid(), generate_uid()
        job_id = self.store.create_job(study, series, "app", "rule", [])
        assert self.store.claim_next_job().id == job_id
        folder = self.tmp / f"job{job_id}"
        folder.mkdir()
        outputs = []
        for sop_class in classes:
            path, uid = result_file(folder, sop_class, study, ts)
            outputs.append((path, uid, sop_class))
        self.store.finish_analysis(job_id, outputs, self.config.destination.describe(), {"app": "app"})
        return job_id, outputs

    def outbox(self) -> list[dict]:
        with self.store._lock:
            return [dict(r) for r in self.store._db.execute("SELECT * FROM outbox ORDER BY id")]

    def events(self, name: str) -> list[dict]:
        return [row for row in self.store.audit_rows() if row["event"] == name]


@pytest.fixture
def env_factory(tmp_path):
    envs: list[Env] = []

    def make(destination: Destination, **config) -> Env:
        env = Env(tmp_path, destination, **config)
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.store.close()


class StorageSCP:
    """A pynetdicom storage SCP that records what it gets and answers ``status``."""

    def __init__(self, port: int = 0, ae_title: str = "PACS", status: int = 0x0000, ssl_context=None,
                 transfer_syntaxes=(ExplicitVRLittleEndian, ImplicitVRLittleEndian)) -> None:
        self.received: dict[str, bytes] = {}
        self.status = status
        self.calling: list[str] = []
        self.associations: set[int] = set()
        ae = AE(ae_title)
        ae.require_called_aet = True
        ae.add_supported_context(Verification)
        for sop_class in RESULT_CLASSES:
            ae.add_supported_context(sop_class, list(transfer_syntaxes))
        self.ae = ae
        self.server = ae.start_server(("127.0.0.1", port), block=False, ssl_context=ssl_context,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = self.server.server_address[1]

    def _on_store(self, event):
        self.calling.append(event.assoc.requestor.ae_title)
        self.associations.add(id(event.assoc))
        if self.status in (0x0000, 0xB000):
            self.received[str(event.dataset.SOPInstanceUID)] = event.encoded_dataset(include_meta=False)
        return self.status

    def stop(self) -> None:
        self.ae.shutdown()


@pytest.fixture
def scp():
    servers: list[StorageSCP] = []

    def make(**kwargs) -> StorageSCP:
        server = StorageSCP(**kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def dimse(port: int, ae_title: str = "PACS", **kw) -> Destination:
    return Destination(ae_title=ae_title, host="127.0.0.1", port=port, **kw)


# -- backoff ---------------------------------------------------------------------------------------
def test_backoff_doubles_and_is_capped():
    cfg = SenderConfig(max_attempts=8, backoff_initial_s=5, backoff_max_s=600)
    assert [backoff_delay(a, cfg) for a in range(1, 9)] == [5, 10, 20, 40, 80, 160, 320, 600]
    assert backoff_delay(10_000, cfg) == 600


# -- C-STORE -----------------------------------------------------------------------------------------
def test_results_are_delivered_and_the_job_is_done(env_factory, scp):
    server = scp()
    env = env_factory(dimse(server.port), ae_title="DERMAI")
    job_id, outputs = env.queue(RESULT_CLASSES)
    assert env.sender.send_due() == 3
    assert env.store.job(job_id).state == "done"
    assert {row["state"] for row in env.outbox()} == {"sent"}
    for path, uid, _ in outputs:
        _, offset = split_dataset(path)
        assert server.received[uid] == path.read_bytes()[offset:]  # the file's dataset, byte for byte
    assert set(server.calling) == {"DERMAI"}
    assert [e["details"]["status"] for e in env.events("sent")] == ["0x0000"] * 3
    assert env.sender.send_due() == 0  # nothing left


@pytest.mark.parametrize("stored_as", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_results_are_converted_for_a_peer_without_their_transfer_syntax(env_factory, scp, stored_as):
    """Files are streamed as stored only in their own syntax; a peer taking only Implicit VR
    gets the same data set re-encoded (a deflated SEG inflated), not a refusal."""
    server = scp(transfer_syntaxes=(ImplicitVRLittleEndian,))
    env = env_factory(dimse(server.port))
    job_id, outputs = env.queue(ts=stored_as)
    assert env.sender.send_due() == 2
    assert env.store.job(job_id).state == "done"
    for path, uid, _ in outputs:
        got = read_dataset(BytesIO(server.received[uid]), is_implicit_VR=True, is_little_endian=True)
        assert got == pydicom.dcmread(path)


def test_deflated_results_go_as_stored_to_a_peer_that_accepts_deflate(env_factory, scp):
    server = scp(transfer_syntaxes=(DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian))
    env = env_factory(dimse(server.port))
    _, outputs = env.queue(ts=DeflatedExplicitVRLittleEndian)
    assert env.sender.send_due() == 2
    for path, uid, _ in outputs:
        _, offset = split_dataset(path)
        assert server.received[uid] == path.read_bytes()[offset:]  # the deflated bytes, unchanged


@pytest.mark.skipif(shutil.which("storescp") is None, reason="dcmtk storescp not installed")
@pytest.mark.parametrize("associations", [1, 2, 3])
def test_a_batch_is_dealt_over_concurrent_associations(env_factory, scp, associations):
    server = scp()
    env = env_factory(dimse(server.port), sender=SenderConfig(associations=associations))
    job_id, outputs = env.queue((SegmentationStorage, SegmentationStorage, SegmentationStorage,
                                 Comprehensive3DSRStorage))
    assert env.sender.send_due() == 4
    assert env.store.job(job_id).state == "done"
    assert set(server.received) == {uid for _, uid, _ in outputs}
    assert len(server.associations) == associations
    assert len(env.events("sent")) == 4


def test_associations_setting_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="sender.associations"):
        ServiceConfig(data_dir=tmp_path, sender=SenderConfig(associations=0)).validate()


@pytest.mark.skipif(shutil.which("storescp") is None, reason="dcmtk storescp not installed")
def test_results_reach_dcmtk_storescp(env_factory, tmp_path):
    port, out = free_port(), tmp_path / "storescp"
    out.mkdir()
    proc = subprocess.Popen(["storescp", "-aet", "DCMTKPACS", "-od", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port)
        env = env_factory(dimse(port, "DCMTKPACS"))
        job_id, outputs = env.queue()
        assert env.sender.send_due() == 2
        assert env.store.job(job_id).state == "done"
        got = {str(pydicom.dcmread(p).SOPInstanceUID) for p in out.iterdir()}
        assert got == {uid for _, uid, _ in outputs}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_listening(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def test_destination_down_then_up(env_factory, scp):
    port = free_port()
    env = env_factory(dimse(port))
    job_id, outputs = env.queue()
    t0 = time.time()
    assert env.sender.send_due(now=t0) == 0
    rows = env.outbox()
    assert [r["attempts"] for r in rows] == [1, 1] and {r["state"] for r in rows} == {"pending"}
    assert [r["next_attempt_at"] for r in rows] == [pytest.approx(t0 + 5)] * 2  # backoff_initial_s
    assert "PACS@127.0.0.1" in rows[0]["last_error"]
    failed = env.events("send_failed")
    assert len(failed) == 2 and not failed[0]["details"]["gave_up"]
    assert env.store.job(job_id).state == "sending"

    assert env.sender.send_due(now=t0 + 1) == 0  # not due yet: no attempt
    assert [r["attempts"] for r in env.outbox()] == [1, 1]

    server = scp(port=port)
    assert env.sender.send_due(now=t0 + 5) == 2
    assert env.store.job(job_id).state == "done"
    assert set(server.received) == {uid for _, uid, _ in outputs}
    assert [r["attempts"] for r in env.outbox()] == [2, 2]


def test_gives_up_after_max_attempts(env_factory):
    env = env_factory(dimse(free_port()), sender=SenderConfig(max_attempts=3, backoff_initial_s=2, backoff_max_s=3))
    job_id, _ = env.queue((SegmentationStorage,))
    now = time.time()
    retry_times = []
    for _ in range(3):
        assert env.sender.send_due(now=now) == 0
        (row,) = env.outbox()
        retry_times.append(row["next_attempt_at"] - now if row["state"] == "pending" else None)
        now = row["next_attempt_at"]
    assert retry_times == [pytest.approx(2), pytest.approx(3), None]  # 2, then 4 capped at 3, then give up
    (row,) = env.outbox()
    assert row["state"] == "failed" and row["attempts"] == 3
    status = env.store.status()
    assert status["jobs"] == {"failed": 1} and status["outbox"] == {"failed": 1}
    (failed_job,) = status["failed_jobs"]
    assert failed_job["id"] == job_id and "results not delivered to PACS@127.0.0.1" in failed_job["error"]
    assert env.events("send_failed")[-1]["details"]["gave_up"] is True
    assert env.sender.send_due(now=now + 1000) == 0 and env.outbox()[0]["attempts"] == 3

    # an operator's retry puts it back in the outbox
    assert env.store.retry(job_id) == [job_id]
    assert env.store.job(job_id).state == "sending" and env.outbox()[0]["state"] == "pending"


@pytest.mark.parametrize("status, delivered", [(0xA700, False), (0xC000, False), (0xB000, True)])
def test_peer_statuses(env_factory, scp, status, delivered):
    server = scp(status=status)
    env = env_factory(dimse(server.port))
    job_id, _ = env.queue((SegmentationStorage,))
    assert env.sender.send_due() == int(delivered)
    (row,) = env.outbox()
    if delivered:
        assert row["state"] == "sent" and env.events("sent")[0]["details"]["status"] == "0xB000"
        assert env.store.job(job_id).state == "done"
    else:
        assert row["state"] == "pending" and f"0x{status:04X}" in row["last_error"]


def test_rejected_association_and_unsupported_class(env_factory, scp):
    server = scp()
    env = env_factory(dimse(server.port, ae_title="NOTTHEPACS"))
    env.queue((SegmentationStorage,))
    assert env.sender.send_due() == 0
    assert "association rejected" in env.outbox()[0]["last_error"]

    env2 = env_factory(dimse(server.port))
    env2.store.close()
    env2.store = env.store
    env2.sender = ResultSender(env2.config, env.store)
    env.queue(("1.2.840.10008.5.1.4.1.1.88.11",))  # Basic Text SR: the SCP does not take it
    assert env2.sender.send_due(now=time.time() + 100) == 1  # the SEG goes; the Basic Text SR cannot
    rows = env.outbox()
    assert [r["state"] for r in rows] == ["sent", "pending"]
    assert "did not accept" in rows[1]["last_error"]


def test_missing_or_broken_result_file_fails_at_once(env_factory, scp):
    server = scp()
    env = env_factory(dimse(server.port))
    job_id, outputs = env.queue()
    outputs[0][0].unlink()
    outputs[1][0].write_bytes(b"not DICOM")
    assert env.sender.send_due() == 0
    rows = env.outbox()
    assert [r["state"] for r in rows] == ["failed", "failed"]
    assert "result file missing" in rows[0]["last_error"] and "unreadable" in rows[1]["last_error"]
    assert env.store.job(job_id).state == "failed"
    assert server.received == {}


def test_run_thread_sends_when_woken_and_stops(env_factory, scp):
    server = scp()
    env = env_factory(dimse(server.port))
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=env.sender.run, args=(stop, wake), daemon=True)
    thread.start()
    time.sleep(0.1)
    job_id, outputs = env.queue()
    wake.set()
    deadline = time.monotonic() + 10
    while env.store.job(job_id).state != "done" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert env.store.job(job_id).state == "done"
    stop.set()
    thread.join(timeout=2)
    assert not thread.is_alive()


def test_tls_destination(env_factory, scp, certs):  # noqa: F811
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certs / "server.pem"), str(certs / "server.key"))
    server = scp(ssl_context=context)
    env = env_factory(dimse(server.port, tls=True, ca_certificates=certs / "ca.pem"))
    job_id, outputs = env.queue()
    assert env.sender.send_due() == 2
    assert set(server.received) == {uid for _, uid, _ in outputs}
    # without trusting the server's CA the handshake fails: a retryable failure
    env2 = env_factory(dimse(server.port, tls=True))
    env2.store.close()
    env2.store, env2.sender = env.store, ResultSender(env2.config, env.store)
    job2, _ = env.queue((SegmentationStorage,))
    assert env2.sender.send_due() == 0
    assert env.store.job(job2).state == "sending" and env.outbox()[-1]["attempts"] == 1


# -- STOW-RS -------------------------------------------------------------------------------------------
class StowServer:
    """POST {base}/studies with multipart/related; type="application/dicom" -> a DICOM JSON answer."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.received: dict[str, Dataset] = {}
        self.requests = 0
        self.refuse = refuse or set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                outer.requests += 1
                if self.path != "/dicom-web/studies":
                    self.send_error(404)
                    return
                ctype = self.headers.get("Content-Type", "")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else _read_chunked(self.rfile)
                if not ctype.startswith("multipart/related") or 'type="application/dicom"' not in ctype:
                    self.send_error(415)
                    return
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
                ok, failed = [], []
                for part in message.iter_parts():
                    ds = pydicom.dcmread(BytesIO(part.get_payload(decode=True)))
                    item = Dataset()
                    item.ReferencedSOPClassUID = ds.SOPClassUID
                    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
                    if str(ds.SOPInstanceUID) in outer.refuse:
                        item.FailureReason = 0xC000
                        failed.append(item)
                    else:
                        outer.received[str(ds.SOPInstanceUID)] = ds
                        ok.append(item)
                answer = Dataset()
                if ok:
                    answer.ReferencedSOPSequence = ok
                if failed:
                    answer.FailedSOPSequence = failed
                payload = json.dumps(answer.to_json_dict()).encode()
                self.send_response(409 if failed and not ok else (202 if failed else 200))
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dicom-web"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _read_chunked(stream) -> bytes:
    out = bytearray()
    while True:
        size = int(stream.readline().strip().split(b";")[0], 16)
        if size == 0:
            stream.readline()
            return bytes(out)
        out += stream.read(size)
        stream.readline()


@pytest.fixture
def stow():
    servers: list[StowServer] = []

    def make(**kwargs) -> StowServer:
        server = StowServer(**kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def test_stow_rs_delivers(env_factory, stow):
    server = stow()
    env = env_factory(Destination.parse(server.url))
    job_id, outputs = env.queue(RESULT_CLASSES)
    assert env.sender.send_due() == 3
    assert server.requests == 1  # one POST for the batch
    assert set(server.received) == {uid for _, uid, _ in outputs}
    assert env.store.job(job_id).state == "done"
    assert {e["details"]["destination"] for e in env.events("sent")} == {server.url}


def test_stow_rs_partial_failure_and_server_down(env_factory, stow):
    env = env_factory(Destination.parse("http://127.0.0.1:1/dicom-web"))  # nothing listens on port 1
    env.queue((SegmentationStorage,))
    t0 = time.time()
    assert env.sender.send_due(now=t0) == 0
    (row,) = env.outbox()
    assert row["state"] == "pending" and row["next_attempt_at"] == pytest.approx(t0 + 5)
    assert "STOW-RS" in row["last_error"]

    job_id, outputs = env.queue()
    server = stow(refuse={outputs[1][1]})
    env.sender.destination = Destination.parse(server.url)
    assert env.sender.send_due(now=t0 + 5) == 2  # the first SEG (retried) and this job's SEG
    rows = env.outbox()
    assert [r["state"] for r in rows] == ["sent", "sent", "pending"]
    assert "0xC000" in rows[2]["last_error"]
    assert env.store.job(job_id).state == "sending"
