"""The node under hostile or unlucky conditions (issue 11), over real sockets with real peers.

Silent sockets, too many associations from one peer, forged log lines through UIDs and AE
titles, oversized objects.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid
from pynetdicom import AE, _config

from dicom.encode import write_dataset
from dicom.service.config import AllowedCaller, ListenerConfig
from tests.pacs.dermpacs import DermpacsProcess
from tests.test_service_listener import VL_PHOTO, associate, c_store, make_photo, node_factory, wait_for, write_raw  # noqa: F401

HAVE_DCMTK = shutil.which("storescu") is not None
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI", "ignore:The value length")


SLOW_START = b"\x01\x00\x00\x00\x00\xc8\x00\x01\x00\x00"  # A-ASSOCIATE-RQ of 200 bytes: its first 10 only


def _silent_sockets(port: int, n: int, source: str = "127.0.0.1", first: bytes = b"") -> list[socket.socket]:
    """Connections that say nothing (or start a request and stall: a slow peer)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        if first:
            s.sendall(first)
        socks.append(s)
    return socks


def _study(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    return [write_dataset(make_photo(seed=i, study_uid=study, series_uid=series, instance_number=i + 1),
                          folder / f"p{i}.dcm") for i in range(n)]


def _store_study(port: int, paths: list[Path]) -> None:
    """The allowed PACS (AE ORTHANC) stores the study: dcmtk storescu when installed, else pynetdicom."""
    if HAVE_DCMTK:
        result = subprocess.run(["storescu", "-xy", "-aet", "ORTHANC", "-aec", "DERMAI", "127.0.0.1", str(port),
                                 *map(str, paths)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
    else:
        for path in paths:
            assert c_store(port, pydicom.dcmread(path), calling="ORTHANC") == 0x0000


@pytest.mark.parametrize("silent, first", [(50, b""), (100, b""), (50, SLOW_START)],
                         ids=["50-silent", "100-silent", "50-slow"])  # 100: more than may wait, the oldest go
def test_silent_connections_do_not_lock_out_the_allowed_pacs(node_factory, tmp_path, silent, first):
    node = node_factory(allowed_callers=[AllowedCaller("ORTHANC", "127.0.0.1")],
                        listener=ListenerConfig(request_timeout_s=2.0, max_pending_connections=64))
    paths = _study(tmp_path / "study")
    socks = _silent_sockets(node.port, silent, first=first)  # same address as the PACS: no per-address excuse
    try:
        time.sleep(0.3)
        started = time.monotonic()
        _store_study(node.port, paths)
        assert time.monotonic() - started < 5, "the allowed caller waited for the silent sockets"
        assert len(node.spooled()) == 3
        # and again, while the same sockets are still open
        assert c_store(node.port, make_photo(seed=9), calling="ORTHANC") == 0x0000
    finally:
        for s in socks:
            s.close()
    # every silent socket was refused: logged and audited with its address
    dropped = wait_for(lambda: [e for e in node.events("rejected") if e["details"]["stage"] == "connection"],
                       count=silent, timeout=10)
    assert len(dropped) == silent
    assert all(e["details"]["peer"].startswith("127.0.0.1:") for e in dropped)
    reasons = {e["details"]["reason"].split(" (")[0] for e in dropped}
    if silent > 64:
        assert any(r.startswith("dropped for a newer connection") for r in reasons)
    assert len(node.events("received")) == 4


def test_a_flood_of_dropped_connections_is_audited_in_summary(node_factory):
    node = node_factory(listener=ListenerConfig(request_timeout_s=0.5, refusals_recorded_per_minute=10))
    socks = _silent_sockets(node.port, 30)
    try:
        wait_for(lambda: [e for e in node.events("rejected")], count=10, timeout=10)
        time.sleep(1)
    finally:
        for s in socks:
            s.close()
    node.listener.stop()  # the summary of the current minute is written at the latest on stop
    dropped = [e["details"] for e in node.events("rejected")]
    assert len(dropped) == 11 and dropped[-1]["count"] == 20 and dropped[-1]["peer"] == "127.0.0.1"
    assert "20 more connection(s) closed before association" in dropped[-1]["reason"]


def test_associations_are_bounded_per_peer_and_refusals_audited(node_factory):
    node = node_factory(listener=ListenerConfig(max_associations=6, max_associations_per_peer=2))
    greedy = [associate(node.port, calling="GREEDY", bind="127.0.0.2") for _ in range(2)]
    try:
        assert all(a.is_established for a in greedy)
        third = associate(node.port, calling="GREEDY", bind="127.0.0.2")
        assert third.is_rejected
        rj = third.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)  # transient, local limit
        # another peer is not affected
        assert c_store(node.port, make_photo(), calling="PACS") == 0x0000
        more = [associate(node.port, calling="OTHER", bind=f"127.0.0.{i}") for i in (3, 3, 4, 4)]
        assert all(a.is_established for a in more)
        over = associate(node.port, calling="PACS", bind="127.0.0.5")  # 6 held: the total limit
        assert over.is_rejected
        for a in more:
            a.release()
    finally:
        for a in greedy:
            a.release()
    refusals = [e["details"] for e in node.events("rejected")]
    assert [r["reason"] for r in refusals] == ["local limit exceeded: 2 associations from this peer",
                                               "local limit exceeded: 6 associations"]
    assert refusals[0]["peer"].startswith("127.0.0.2:") and refusals[0]["calling_ae"] == "GREEDY"


def test_an_object_over_the_size_limit_is_refused_out_of_resources(node_factory):
    node = node_factory(listener=ListenerConfig(max_object_bytes=200_000))
    small = make_photo()
    assert c_store(node.port, small) == 0x0000
    big = make_photo(seed=1)
    big.add_new(0x00091010, "LO", "dermpacs test")
    big.add_new(0x00091011, "OB", b"\0" * 400_000)
    assoc = associate(node.port)
    try:
        status = assoc.send_c_store(big)
        assert status.Status == 0xA700 and "exceeds the limit of 200000" in status.ErrorComment
        assert assoc.send_c_store(make_photo(seed=2)).Status == 0x0000  # the association goes on
    finally:
        assoc.release()
    assert len(node.spooled()) == 2
    (event,) = node.events("rejected")
    assert event["sop_instance_uid"] == big.SOPInstanceUID and event["details"]["status"] == "0xA700"


# -- forged log lines ---------------------------------------------------------------------------
FORGED = "2026-12-07 11:11:11,111 INFO dermpacs.listener: received 1.2.3.4 from ORTHANC"
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def test_peer_text_with_newlines_esc_and_nul_writes_no_log_line(tmp_path):
    """A real `dermpacs serve` process; UIDs and AE titles from the peer carry \\n, ESC, NUL."""
    with DermpacsProcess(tmp_path / "node", destination="NOWHERE@127.0.0.1:9") as node:
        # 1. an Affected SOP Instance UID with a forged line (the request), a valid data set otherwise
        ds = make_photo()
        ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.3\n{FORGED}\x1b[2J\x00"
        path = write_raw(tmp_path / "crafted.dcm", ds)
        saved = _config.STORE_SEND_CHUNKED_DATASET, dict(_config.VALIDATORS)
        _config.STORE_SEND_CHUNKED_DATASET = True
        _config.VALIDATORS["UI"] = _config.VALIDATORS["AE"] = lambda value: (True, "")  # this client only
        try:
            assoc = associate(node.port)
            assert assoc.is_established
            status = assoc.send_c_store(path)
            assert not status or status.Status != 0x0000  # refused or aborted, never stored
            if assoc.is_established:
                assoc.release()
            # 2. calling and called AE titles with a newline, ESC and NUL
            for calling, called in [("X\n" + FORGED[:12], "DERMAI"), ("A\x1b[31mB\x00", "DERMAI"),
                                    ("PACS", "Z\n2026-12-07 1")]:
                ae = AE(calling)
                ae.acse_timeout = ae.network_timeout = 10
                ae.add_requested_context(VL_PHOTO, [JPEGBaseline8Bit, ExplicitVRLittleEndian])
                assoc = ae.associate("127.0.0.1", node.port, ae_title=called)
                if assoc.is_established:
                    assoc.release()
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = saved[0]
            _config.VALIDATORS.update(saved[1])
        time.sleep(0.5)
        audit = node.cli("audit", "export", "--format", "json").stdout
        events = json.loads(audit)
        assert len([e for e in events if e["event"] == "rejected"
                    and e["details"]["reason"] == "association request not understood (see the log)"]) == 3
        assert node.echo()  # still serving
    log = node.log_path.read_bytes()
    assert b"\x1b" not in log and b"\x00" not in log
    for line in log.decode().splitlines():
        assert RECORD.match(line) or line.startswith("    | ") or line.startswith("=====") or not line, line
    assert FORGED not in [line[:len(FORGED)] for line in log.decode().splitlines()]
    assert "\\n2026-12-07 11:11:11,111" in log.decode()  # it is there, escaped
    for forbidden in ("\\u001b", "\\u0000", "\\n2026"):  # JSON escapes of raw control characters
        assert forbidden not in audit.replace("\\\\", ""), forbidden


# -- what is accepted is what is routed is what is documented ------------------------------------
CONFORMANCE = Path(__file__).resolve().parents[1] / "deploy" / "conformance-statement.md"
UID_IN_ROW = re.compile(r"\b1\.2\.840\.10008\.5\.1\.4\.1\.1\.[0-9.]+\b")


def _documented_scp_classes() -> tuple[set[str], set[str]]:
    """Storage classes the conformance statement says dermpacs accepts: table 1.1 and table 4.2.3."""
    text = CONFORMANCE.read_text()
    overview = text[text.index("### 1.1"):text.index("### 1.2")]
    table_11 = {uid for line in overview.splitlines() if line.startswith("|")
                for uid in UID_IN_ROW.findall(line) if re.search(r"\|\s*Yes\s*\|\s*$", line)}  # SCP column
    contexts = text[text.index("#### 4.2.3"):text.index("#### 4.2.4")]
    table_423 = {uid for line in contexts.splitlines() if line.startswith("|") and "| SCP |" in line
                 for uid in UID_IN_ROW.findall(line.split("|")[1])}
    return table_11, table_423


def test_negotiation_routes_and_conformance_statement_agree(node_factory):
    from dicom.reader import SUPPORTED_SOP_CLASSES
    from dicom.service.config import ConfigError, load_config
    from dicom.service.router import Router

    config = load_config()
    accepted = set(config.accepted_sop_classes)  # the one source of truth
    # 1. negotiation: propose every photograph class the reader knows, one context each
    node = node_factory(accepted_sop_classes=config.accepted_sop_classes)
    assoc = associate(node.port, contexts=[(uid, [ExplicitVRLittleEndian]) for uid in SUPPORTED_SOP_CLASSES])
    assert assoc.is_established
    assert {str(cx.abstract_syntax) for cx in assoc.accepted_contexts} == accepted
    assoc.release()
    # 2. routes: any instance of an accepted class, whatever else it says, reaches an app
    router = Router(config.rules)
    for uid in accepted:
        for modality, body_part in [("", ""), ("XC", "ARM"), ("OT", ""), ("ES", "KNEE")]:
            header = {"SOPClassUID": uid, "Modality": modality, "BodyPartExamined": body_part,
                      "AnatomicRegion": [], "SeriesDescription": ""}
            assert router.route(header, "DERMAI") is not None, (uid, modality, body_part)
    # ... and accepting a class no rule takes is a configuration error
    with pytest.raises(ConfigError, match="unrouted"):
        load_config(accepted_sop_classes=[*config.accepted_sop_classes, "1.2.840.10008.5.1.4.1.1.77.1.7"])
    # 3. the conformance statement's tables
    table_11, table_423 = _documented_scp_classes()
    assert table_11 == accepted and table_423 == accepted


@pytest.mark.skipif(not HAVE_DCMTK, reason="dcmtk not installed")
@pytest.mark.parametrize("sop_class", ["1.2.840.10008.5.1.4.1.1.77.1.7", "1.2.840.10008.5.1.4.1.1.7.4"])
def test_dermoscopic_and_multiframe_sc_are_refused_at_negotiation(node_factory, tmp_path, sop_class):
    node = node_factory()
    ds = make_photo()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    src = write_dataset(ds, tmp_path / "photo.dcm")
    result = subprocess.run(["storescu", "-xy", "-aec", "DERMAI", "127.0.0.1", str(node.port), str(src)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert node.spooled() == [] and node.events("received") == []


def test_an_apps_log_of_peer_text_is_escaped_too(tmp_path):
    """Values inside the photograph reach the app's log records (worker process): escaped as well."""
    from dicom.service.local_pacs import send_instances
    from tests.pacs.netns import free_port

    rules = [{"name": "all", "app": "log", "sop_class_uid": [VL_PHOTO, "1.2.840.10008.5.1.4.1.1.7"]}]
    apps = {"log": {"module": "tests.service_apps.log_app", "timeout_s": 60}}
    with DermpacsProcess(tmp_path / "node", destination=f"PACS@127.0.0.1:{free_port()}", stable_seconds=0.2,
                         rules=rules, apps=apps) as node:
        ds = make_photo(series_description="x")
        ds.SeriesDescription = f"cheek\n{FORGED}\x1b[2J"
        path = write_dataset(ds, tmp_path / "photo.dcm")
        assert send_instances([path], f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY") == [0]
        wait_until_logged = time.monotonic() + 30
        while "odd series description" not in node.log_tail() and time.monotonic() < wait_until_logged:
            time.sleep(0.2)
    log = node.log_path.read_text()
    assert "analysing series cheek\\n2026-12-07 11:11:11,111" in log and "odd series description" in log
    assert "\x1b" not in log
    for line in log.splitlines():
        assert RECORD.match(line) or line.startswith("    | ") or line.startswith("=====") or not line, line
