"""The DICOM listener over real sockets, with pynetdicom and dcmtk (an independent peer) as callers."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import socket
import ssl
import subprocess
import time
import warnings
from pathlib import Path

import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import Verification

from dicom.encode import pattern_image, photograph_dataset, write_dataset
from dicom.service.config import AllowedCaller, RoutingRule, ServiceConfig, TlsConfig
from dicom.service.listener import DicomListener
from dicom.service.spool import Spool
from dicom.service.store import JobStore

VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
HAVE_DCMTK = shutil.which("storescu") is not None and shutil.which("echoscu") is not None
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI", "ignore:The value length")
needs_dcmtk = pytest.mark.skipif(not HAVE_DCMTK, reason="dcmtk (storescu, echoscu) not installed")


# -- helpers ----------------------------------------------------------------------------------
def make_photo(**kwargs):
    return photograph_dataset(pattern_image(64, 96, seed=kwargs.pop("seed", 0)), **kwargs)


class Node:
    """A started listener on 127.0.0.1 with its store and spool under ``tmp``."""

    def __init__(self, tmp: Path, **config) -> None:
        config.setdefault("ae_title", "DERMAI")
        self.config = ServiceConfig(data_dir=tmp / "data", port=0, bind_address="127.0.0.1", **config)
        self.store = JobStore(self.config.database)
        self.spool = Spool(self.config.data_dir)
        self.received: list[str] = []
        self.listener = DicomListener(self.config, self.store, self.spool, on_received=self.received.append)
        self.listener.start()
        self.port = self.listener.port

    def close(self) -> None:
        self.listener.stop()
        self.store.close()

    def spooled(self) -> list[Path]:
        return sorted(self.spool.instances.rglob("*.dcm"))

    def events(self, name: str) -> list[dict]:
        return [row for row in self.store.audit_rows() if row["event"] == name]


@pytest.fixture
def node_factory(tmp_path):
    nodes: list[Node] = []

    def make(**config) -> Node:
        node = Node(tmp_path, **config)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()


@pytest.fixture
def node(node_factory) -> Node:
    return node_factory()


def associate(port, *, calling="SCU", called="DERMAI", contexts=None, tls=None, bind=None):
    ae = AE(calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = 10
    for sop_class, syntaxes in contexts or [(VL_PHOTO, [JPEGBaseline8Bit, ExplicitVRLittleEndian]),
                                            (Verification, [ExplicitVRLittleEndian])]:
        ae.add_requested_context(sop_class, syntaxes)
    kwargs = {"ae_title": called}
    if tls is not None:
        kwargs["tls_args"] = tls
    if bind is not None:
        kwargs["bind_address"] = (bind, 0)
    return ae.associate("127.0.0.1", port, **kwargs)


def c_store(port, dataset, **kwargs) -> int:
    assoc = associate(port, **kwargs)
    assert assoc.is_established, "association not established"
    try:
        status = assoc.send_c_store(dataset)
        return int(status.Status)
    finally:
        assoc.release()


def send_file_raw(port, path: Path, **kwargs) -> int:
    """C-STORE a file's bytes as they are (pynetdicom's chunked mode: no decoding, no checks)."""
    saved = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        return c_store(port, path, **kwargs)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = saved


def write_raw(path: Path, ds) -> Path:
    """``ds.file_meta`` as it is, then ``ds`` (explicit VR LE), without pydicom's consistency fixes."""
    fp = DicomBytesIO()
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
    fp.is_little_endian, fp.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(fp, ds)
    path.write_bytes(fp.getvalue())
    return path


def wait_for(read, count: int, timeout: float = 5.0) -> list:
    """Poll ``read()`` until it returns ``count`` items (server-side audit rows land asynchronously)."""
    deadline = time.monotonic() + timeout
    while len(found := read()) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- verification and storage ------------------------------------------------------------------
@needs_dcmtk
def test_echo_from_dcmtk(node):
    result = subprocess.run(["echoscu", "-aet", "ECHOSCU", "-aec", "DERMAI", "127.0.0.1", str(node.port)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@needs_dcmtk
def test_jpeg_photo_from_dcmtk_is_spooled_as_sent(node, tmp_path):
    ds = make_photo()
    src = write_dataset(ds, tmp_path / "photo.dcm")
    result = subprocess.run(["storescu", "-xy", "-aet", "MODALITY", "-aec", "DERMAI", "127.0.0.1", str(node.port),
                             str(src)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr

    (spooled,) = node.spooled()
    got = pydicom.dcmread(spooled)
    assert got.file_meta.TransferSyntaxUID == JPEGBaseline8Bit  # stored as sent, not transcoded
    assert got.SOPInstanceUID == ds.SOPInstanceUID
    assert got.PixelData == pydicom.dcmread(src).PixelData
    (event,) = node.events("received")
    assert event["details"]["sha256"] == hashlib.sha256(spooled.read_bytes()).hexdigest()
    assert event["details"]["calling_ae"] == "MODALITY"
    assert node.received == [ds.SeriesInstanceUID]


def test_c_store_from_pynetdicom_is_durable_before_success(node):
    ds = make_photo(series_description="left cheek")
    assert c_store(node.port, ds, calling="PACS") == 0x0000

    # a fresh connection to the same database (as after a crash) sees the row and the file
    other = JobStore(node.config.database)
    try:
        (row,) = other.waiting_instances(ds.SeriesInstanceUID)
    finally:
        other.close()
    path = Path(row["path"])
    data = path.read_bytes()
    assert path.parent.parent == node.spool.instances and ds.SOPInstanceUID not in str(path)
    assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["size"] == len(data)
    assert (row["calling_ae"], row["called_ae"]) == ("PACS", "DERMAI")
    assert '"SeriesDescription": "left cheek"' in row["header"]
    got = pydicom.dcmread(path)
    assert got.SOPInstanceUID == ds.SOPInstanceUID and got.PixelData == ds.PixelData
    assert node.received == [ds.SeriesInstanceUID]


def test_other_sop_class_is_refused_at_negotiation(node, tmp_path):
    # only CT proposed: the whole association is rejected
    assoc = associate(node.port, contexts=[(CTImageStorage, [ExplicitVRLittleEndian])])
    assert assoc.is_rejected and not assoc.is_established
    # CT beside VL photo: the CT context alone is rejected, the instance cannot be sent
    ct = make_photo()
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CTImageStorage
    assoc = associate(node.port, contexts=[(CTImageStorage, [JPEGBaseline8Bit]), (VL_PHOTO, [JPEGBaseline8Bit])])
    assert assoc.is_established
    assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == [VL_PHOTO]
    with pytest.raises(ValueError):
        assoc.send_c_store(ct)
    assoc.release()
    if HAVE_DCMTK:  # an independent caller proposing only what the file needs
        src = write_dataset(ct, tmp_path / "ct.dcm")
        result = subprocess.run(["storescu", "-R", "-xy", "-aec", "DERMAI", "127.0.0.1", str(node.port), str(src)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode != 0
    assert node.spooled() == [] and node.events("received") == []
    assert node.events("rejected")[0]["details"]["reason"] == "no acceptable presentation context"


def test_dataset_of_another_class_than_requested_is_refused(node, tmp_path):
    ds = make_photo()
    ds.SOPClassUID = CTImageStorage  # the request (from the file meta) says VL photo, the data say CT
    assert send_file_raw(node.port, write_raw(tmp_path / "mismatch.dcm", ds)) == 0xA900
    assert node.spooled() == []


# -- association policy -------------------------------------------------------------------------
def test_calling_ae_allow_list_with_hosts(node_factory):
    node = node_factory(allowed_callers=[AllowedCaller("PACS", "127.0.0.1"), AllowedCaller("WORKSTATION")])
    cases = [
        ("PACS", "DERMAI", "127.0.0.1", True),
        ("PACS", "DERMAI", "127.0.0.2", False),  # right AE title, wrong host
        ("WORKSTATION", "DERMAI", "127.0.0.2", True),  # no host given: any host
        ("INTRUDER", "DERMAI", "127.0.0.1", False),
        ("PACS", "SOMEONEELSE", "127.0.0.1", False),  # not our AE title
    ]
    for calling, called, source, allowed in cases:
        assoc = associate(node.port, calling=calling, called=called, bind=source)
        assert assoc.is_established == allowed, (calling, called, source)
        if allowed:
            assert assoc.send_c_echo().Status == 0x0000
            assoc.release()
        else:
            assert assoc.is_rejected
            rj = assoc.acceptor.primitive
            assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x07 if called != "DERMAI" else 0x03)
    reasons = [e["details"]["reason"] for e in node.events("rejected")]
    assert reasons == ["calling AE title not recognised"] * 2 + ["called AE title not recognised"]
    assert node.events("rejected")[0]["details"]["peer"].startswith("127.0.0.2:")


@needs_dcmtk
def test_dcmtk_sees_the_rejection_reason(node_factory):
    node = node_factory(allowed_callers=[AllowedCaller("PACS")])
    result = subprocess.run(["echoscu", "-aet", "INTRUDER", "-aec", "DERMAI", "127.0.0.1", str(node.port)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "Calling AE Title Not Recognized" in result.stderr


def test_a_routing_rules_called_ae_title_is_accepted(node_factory):
    rule = RoutingRule(name="vitiligo", app="vit", called_ae_title="DERMAI_VIT")
    node = node_factory(rules=[rule])
    ds = make_photo()
    assert c_store(node.port, ds, called="DERMAI_VIT") == 0x0000
    (row,) = node.store.waiting_instances(ds.SeriesInstanceUID)
    assert row["called_ae"] == "DERMAI_VIT"


# -- hostile or broken input ---------------------------------------------------------------------
CRAFTED = ["1.2.3/../../../x", "../../evil", "1." + "2" * 70, "1.2.03"]


@pytest.mark.parametrize("crafted", CRAFTED)
@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "SeriesInstanceUID"])
def test_crafted_uids_are_refused_and_never_touch_the_filesystem(node, tmp_path, crafted, keyword):
    before = tree(tmp_path)
    ds = make_photo()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setattr(ds, keyword, crafted)
        path = write_raw(tmp_path / "crafted.dcm", ds)  # the file meta (and so the request) keeps a valid UID
    status = send_file_raw(node.port, path)
    assert status == 0xC210
    if keyword == "SOPInstanceUID" and len(crafted) <= 64:  # the request itself names the crafted UID too
        ds.file_meta.MediaStorageSOPInstanceUID = crafted
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert c_store(node.port, ds) == 0xC210
    path.unlink()
    after = tree(tmp_path)
    assert node.spooled() == []
    assert {p for p in after - before if not p.startswith("data/dermpacs.sqlite3")} == set()
    assert not any("evil" in p or p.endswith("/x") for p in tree(tmp_path.parent))
    (event, *_) = node.events("rejected")
    assert "invalid or missing UID" in event["details"]["reason"]
    assert node.events("received") == []


@pytest.mark.parametrize("body, reason", [
    (b"\x08\x00\x16\x00ZZ\x04\x00abcd", "dataset cannot be decoded"),  # an unknown VR
    (b"\x08\x00\x18\x00UI\x00\xf0" + b"\x01\x02" * 50, "invalid or missing UID"),  # overlong, then noise
    (bytes(range(256)) * 4, "invalid or missing UID"),  # noise
])
def test_undecodable_dataset_is_refused(node, tmp_path, body, reason):
    good = write_dataset(make_photo(), tmp_path / "good.dcm")
    _, offset = split_dataset(good)
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(good.read_bytes()[:offset] + body)  # valid file meta, then the body
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert send_file_raw(node.port, corrupt) == 0xC210
    assert node.spooled() == []
    (event,) = node.events("rejected")
    assert event["details"]["stage"] == "c-store" and event["details"]["status"] == "0xC210"
    assert event["details"]["reason"].startswith(reason)


def test_duplicate_is_success_and_changes_nothing(node):
    ds = make_photo()
    assert c_store(node.port, ds) == 0x0000
    (first,) = node.spooled()
    first_bytes = first.read_bytes()
    assert c_store(node.port, ds) == 0x0000  # the same object again
    assert node.spooled() == [first] and first.read_bytes() == first_bytes
    assert len(node.store.waiting_instances(ds.SeriesInstanceUID)) == 1
    (dup,) = node.events("duplicate")
    assert dup["sop_instance_uid"] == ds.SOPInstanceUID and dup["details"]["same_content"] is True
    assert node.received == [ds.SeriesInstanceUID]


def test_changed_content_under_a_known_uid_is_kept_as_a_new_version(node):
    ds = make_photo()
    assert c_store(node.port, ds) == 0x0000
    (first,) = node.spooled()
    first_bytes = first.read_bytes()
    job = node.store.create_job(ds.StudyInstanceUID, ds.SeriesInstanceUID, "vit", "face", [ds.SOPInstanceUID])
    ds.SeriesDescription = "resent with other content"
    assert c_store(node.port, ds) == 0x0000
    assert first.read_bytes() == first_bytes  # the earlier version is kept
    (second,) = [p for p in node.spooled() if p != first]
    assert second.name.endswith(".v2.dcm") and pydicom.dcmread(second).SeriesDescription == "resent with other content"
    (row,) = node.store.waiting_instances(ds.SeriesInstanceUID)  # waiting to be analysed again
    assert row["version"] == 2 and Path(row["path"]) == second
    assert node.store.job(job).state == "superseded"
    (event,) = node.events("new_version")
    assert event["details"]["version"] == 2 and event["details"]["superseded_job"] == job
    assert node.store.status()["changed_instances"][0]["sop_instance_uid"] == ds.SOPInstanceUID
    assert c_store(node.port, ds) == 0x0000  # and the same again is a plain duplicate
    assert len(node.spooled()) == 2 and len(node.events("duplicate")) == 1


def test_database_failure_is_out_of_resources(node, monkeypatch, caplog):
    def broken(item):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(node.store, "add_instance", broken)
    assert c_store(node.port, make_photo()) == 0xA700
    assert c_store(node.port, make_photo(seed=1)) == 0xA700
    assert node.spooled() == []  # nothing left behind that no row refers to
    assert node.received == []
    monkeypatch.undo()
    assert c_store(node.port, make_photo(seed=2)) == 0x0000
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if m.startswith("receiving failing")]) == 1  # one line per state change
    assert len([m for m in messages if "refused 0xA700" in m]) == 2  # and each refusal
    assert len([m for m in messages if m.startswith("receiving recovered")]) == 1


# -- TLS -----------------------------------------------------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=dermpacs test CA", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d


def _client_tls(certs: Path, with_certificate: bool) -> tuple[ssl.SSLContext, str]:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / "ca.pem"))
    if with_certificate:
        context.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
    return context, "127.0.0.1"


def test_tls_with_client_certificates(node_factory, certs):
    tls = TlsConfig(certificate=certs / "server.pem", private_key=certs / "server.key",
                    ca_certificates=certs / "ca.pem", require_client_certificate=True)
    node = node_factory(tls=tls)

    # a peer that connects and says nothing must not hold up anyone else
    silent = socket.create_connection(("127.0.0.1", node.port))
    try:
        ds = make_photo()
        started = time.monotonic()
        assert c_store(node.port, ds, tls=_client_tls(certs, True)) == 0x0000
        assert time.monotonic() - started < 5
    finally:
        silent.close()
    assert len(node.spooled()) == 1

    # no client certificate, or no TLS at all: the handshake fails, no association
    assert not associate(node.port, tls=_client_tls(certs, False)).is_established
    assert not associate(node.port).is_established
    reasons = wait_for(lambda: [e["details"]["reason"] for e in node.events("rejected")
                                if e["details"]["stage"] == "tls"], count=3)
    assert len(reasons) == 3 and all(r.startswith("TLS handshake failed") for r in reasons)  # silent, no cert, plain
    assert any("PEER_DID_NOT_RETURN_A_CERTIFICATE" in r for r in reasons)
    assert len(node.spooled()) == 1


def test_tls_without_client_certificates(node_factory, certs):
    tls = TlsConfig(certificate=certs / "server.pem", private_key=certs / "server.key")
    node = node_factory(tls=tls)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / "ca.pem"))
    assoc = associate(node.port, tls=(context, "127.0.0.1"))
    assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
    assoc.release()


def test_listener_stops_and_frees_its_port(tmp_path):
    node = Node(tmp_path)
    port = node.port
    node.close()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
