"""Acknowledged work survives a lost or damaged job store, faults and restarts (issue 11).

Real `dermpacs serve` processes on loopback, a real pynetdicom storage SCP as the PACS, and
the echo app (tests/service_apps) instead of a model, so each analysis takes milliseconds.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom.encode import pattern_image, photograph_dataset, write_dataset
from dicom.service.config import ServiceConfig
from dicom.service.local_pacs import LocalStorageSCP, send_instances
from dicom.service.recovery import integrity_problem, open_job_store
from dicom.service.spool import Spool
from dicom.service.store import JobStore, ReceivedInstance
from tests.pacs.dcmtk import wait_until
from tests.pacs.dermpacs import DermpacsProcess
from tests.pacs.netns import free_port

VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
ECHO = {"apps": {"echo": {"module": "tests.service_apps.echo_app", "timeout_s": 60}},
        "rules": [{"name": "all", "app": "echo", "sop_class_uid": [VL_PHOTO, "1.2.840.10008.5.1.4.1.1.7"]}]}


def _series(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    return [write_dataset(photograph_dataset(pattern_image(64, 96, seed=seed + i), study_uid=study, series_uid=series,
                                             instance_number=i + 1), folder / f"{seed}_{i}.dcm") for i in range(n)]


def _node(tmp_path: Path, pacs_port: int, **settings) -> DermpacsProcess:
    return DermpacsProcess(tmp_path / "node", destination=f"PACS@127.0.0.1:{pacs_port}", **{**ECHO, **settings})


def _result_uids(node: DermpacsProcess) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in (node.data_dir / "jobs").rglob("out/*.dcm")}


def _audit(node: DermpacsProcess) -> list[dict]:
    return json.loads(node.cli("audit", "export", "--format", "json").stdout)


def test_deleted_job_store_is_rebuilt_from_the_spool(tmp_path):
    """Undelivered results are delivered under their own UIDs; an unanalysed instance is analysed."""
    pacs_port = free_port()
    node = _node(tmp_path, pacs_port, stable_seconds=2).start()
    try:
        first = _series(tmp_path / "a", 2)
        send_instances(first, f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY")
        wait_until(lambda: node.status()["outbox"].get("pending", 0) == 2, 60, what="2 undelivered results")
        undelivered = _result_uids(node)
        second = _series(tmp_path / "b", 1, seed=10)
        send_instances(second, f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY")  # acked, not analysed
        node.kill()
        for suffix in ("", "-wal", "-shm"):
            Path(str(node.data_dir / "dermpacs.sqlite3") + suffix).unlink(missing_ok=True)
        with LocalStorageSCP(tmp_path / "pacs", ae_title="PACS", port=pacs_port) as pacs:
            node.start()
            wait_until(lambda: len(pacs.received) == 3, 60, what=f"3 results\n{node.log_tail()}")
            time.sleep(1)
            assert undelivered <= set(pacs.received)  # the same UIDs as before the loss
            assert pacs.store_count == 3
        assert "the job store is missing but the spool holds 3 acknowledged instance(s)" in node.log_tail()
        rebuilt = [e for e in _audit(node) if e["event"] == "store_rebuilt"]
        assert rebuilt and rebuilt[0]["details"]["jobs"] == 1 and rebuilt[0]["details"]["to_analyse"] == 1
        assert node.status()["jobs"] == {"done": 2}
    finally:
        node.stop()


def _store_with_one_instance(data_dir: Path) -> tuple[ServiceConfig, str]:
    config = ServiceConfig(data_dir=data_dir, rules=[], apps={})
    spool = Spool(data_dir)
    ds = photograph_dataset(pattern_image(64, 96, seed=3))
    path = write_dataset(ds, spool.instance_path(ds.SOPInstanceUID))
    store = JobStore(config.database)
    store.add_instance(ReceivedInstance(ds.SOPInstanceUID, VL_PHOTO, ds.StudyInstanceUID, ds.SeriesInstanceUID, path,
                                        "0" * 64, path.stat().st_size, "MOD", "DERMAI", "", {}))
    for i in range(200):  # enough pages that damage in the middle is found by the check, not by opening
        store.audit("received", sop=f"1.2.{i}", filler="x" * 200)
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return config, str(ds.SOPInstanceUID)


def test_damaged_job_store_is_detected_moved_aside_and_rebuilt(tmp_path):
    config, uid = _store_with_one_instance(tmp_path / "data")
    assert integrity_problem(config.database) is None
    with open(config.database, "r+b") as f:  # scribble over a page in the middle
        f.seek(4096 * 5)
        f.write(os.urandom(4096))
    assert integrity_problem(config.database) is not None
    store = open_job_store(config, Spool(config.data_dir))
    try:
        assert [r["sop_instance_uid"] for r in store.waiting_instances(
            store._db.execute("SELECT series_instance_uid FROM instances").fetchone()[0])] == [uid]
        assert store.audit_rows()[-1]["event"] == "store_rebuilt"
    finally:
        store.close()
    assert list(config.data_dir.glob("dermpacs.sqlite3.damaged-*"))


def test_files_are_private_whatever_the_umask(tmp_path):
    pacs_port = free_port()
    old = os.umask(0o022)
    try:
        with LocalStorageSCP(tmp_path / "pacs", ae_title="PACS", port=pacs_port) as pacs:
            node = _node(tmp_path, pacs_port, stable_seconds=0.5).start()
            try:
                send_instances(_series(tmp_path / "a", 1), f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY")
                wait_until(lambda: len(pacs.received) == 1, 60, what="a result")
            finally:
                node.stop()
    finally:
        os.umask(old)
    everything = [node.data_dir, *node.data_dir.rglob("*")]
    assert len(everything) > 8
    for path in everything:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.relative_to(node.data_dir.parent)} is {oct(mode)}"


def test_a_failing_scheduler_backs_off_says_so_once_and_recovers(tmp_path):
    """The job folders cannot be created (as on a full disk): no hot loop, one line, visible state."""
    pacs_port = free_port()
    with LocalStorageSCP(tmp_path / "pacs", ae_title="PACS", port=pacs_port) as pacs:
        node = _node(tmp_path, pacs_port, stable_seconds=0.3, fault_backoff_initial_s=0.2,
                     fault_backoff_max_s=1.0).start()
        try:
            jobs = node.data_dir / "jobs"
            jobs.rmdir()
            jobs.write_text("in the way")  # every attempt to make a job folder fails
            send_instances(_series(tmp_path / "a", 1), f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY")
            wait_until(lambda: "scheduler failing" in node.log_tail(), 30, what="the failure")
            time.sleep(4)
            log = node.log_tail(10**7)
            assert log.count("scheduler failing") == 1 and log.count("Traceback") == 1
            text = node.cli("status").stdout
            assert "scheduler FAILING since" in text and "NotADirectoryError" in text, text
            health = node.status()["health"]["components"]["scheduler"]
            assert health["state"] == "failing" and 4 <= health["failures"] <= 12  # 0.2, 0.4, 0.8, 1, 1, ...
            jobs.unlink()
            jobs.mkdir(mode=0o700)
            wait_until(lambda: len(pacs.received) == 1, 30, what=f"the result\n{node.log_tail()}")
            assert node.log_tail().count("scheduler recovered") == 1
            assert node.status()["health"]["components"]["scheduler"]["state"] == "ok"
            started = [e["details"]["attempt"] for e in _audit(node) if e["event"] == "started"]
            assert started[-1] == 1  # the failed starts did not use up the job's attempts
        finally:
            node.stop()


def test_status_and_export_into_a_closed_pipe_print_no_traceback(tmp_path):
    store = JobStore(tmp_path / "dermpacs.sqlite3")
    for i in range(3000):
        store.audit("received", sop=f"1.2.{i}", calling_ae="MODALITY", peer="127.0.0.1:1")
    store.close()
    repo = Path(__file__).resolve().parents[1]
    for command in ("status", "status --json", "audit export"):
        for reader in ("head -c 20", "true"):  # `true` has closed the pipe before dermpacs writes at all
            result = subprocess.run(f"{sys.executable} -m dicom.cli {command} --data-dir {tmp_path} | {reader}",
                                    shell=True, capture_output=True, text=True, timeout=60, cwd=repo)
            assert result.stderr == "", (command, reader, result.stderr)


def test_a_changed_instance_is_analysed_again_and_the_old_results_superseded(tmp_path):
    pacs_port = free_port()
    with LocalStorageSCP(tmp_path / "pacs", ae_title="PACS", port=pacs_port) as pacs:
        node = _node(tmp_path, pacs_port, stable_seconds=0.3).start()
        try:
            (path,) = _series(tmp_path / "a", 1)
            send_instances([path], f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY")
            wait_until(lambda: len(pacs.received) == 1, 30, what="the first result")
            ds = pydicom.dcmread(path)
            fixed = photograph_dataset(pattern_image(64, 96, seed=999), study_uid=ds.StudyInstanceUID,
                                       series_uid=ds.SeriesInstanceUID)  # the corrected photograph: other pixels,
            fixed.SOPInstanceUID = fixed.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID  # the same UID
            corrected = write_dataset(fixed, tmp_path / "corrected.dcm")
            assert send_instances([corrected], f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY") == [0]
            wait_until(lambda: len(pacs.received) == 2, 30, what=f"a second result\n{node.log_tail()}")
            status = node.status()
            assert status["jobs"] == {"done": 1, "superseded": 1}
            (changed,) = status["changed_instances"]
            assert changed["sop_instance_uid"] == ds.SOPInstanceUID and changed["version"] == 2
            assert "changed instance" in node.cli("status").stdout
            analysed = [e for e in _audit(node) if e["event"] == "analysed"]
            assert len(analysed) == 2
        finally:
            node.stop()


def test_sigterm_during_analysis_does_not_use_up_an_attempt(tmp_path):
    rules = [{"name": "all", "app": "hang", "sop_class_uid": [VL_PHOTO, "1.2.840.10008.5.1.4.1.1.7"]}]
    node = DermpacsProcess(tmp_path / "node", destination=f"PACS@127.0.0.1:{free_port()}", stable_seconds=0.3,
                           job_max_attempts=1, rules=rules,
                           apps={"hang": {"module": "tests.service_apps.hang_app", "timeout_s": 600}}).start()
    try:
        send_instances(_series(tmp_path / "a", 1), f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY")
        wait_until(lambda: node.status()["jobs"].get("running", 0) == 1, 30, what="a running job")
        node.stop()  # SIGTERM: a graceful stop
        node.start()
        wait_until(lambda: node.status()["jobs"].get("running", 0) == 1, 30, what="the job running again")
        assert "failed" not in node.status()["jobs"]  # with job_max_attempts 1, a counted stop would fail it
    finally:
        node.kill()


def test_purge_removes_delivered_work_after_the_retention_time_and_nothing_undelivered(tmp_path):
    pacs_port = free_port()
    with LocalStorageSCP(tmp_path / "pacs", ae_title="PACS", port=pacs_port) as pacs:
        node = _node(tmp_path, pacs_port, stable_seconds=0.3).start()
        try:
            (delivered,) = _series(tmp_path / "a", 1)
            send_instances([delivered], f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY")
            wait_until(lambda: node.status()["jobs"] == {"done": 1}, 30, what="a delivered job")
        finally:
            node.stop()
    waiting = _series(tmp_path / "b", 1, seed=5)  # acknowledged, not analysed (the node is stopped at once)
    node.start()
    send_instances(waiting, f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY")
    node.kill()
    orphan = node.data_dir / "jobs" / "00000099" / "attempt-1"
    orphan.mkdir(parents=True)
    os.utime(orphan.parent, (time.time() - 40 * 86400,) * 2)
    spool = sorted((node.data_dir / "spool").rglob("*.dcm"))
    assert len(spool) == 2

    kept = node.cli("purge")  # default retention: 30 days; only the 40-day-old orphan goes
    assert kept.returncode == 0 and "removed: 0 delivered job(s)" in kept.stdout and "1 orphaned" in kept.stdout
    dry = node.cli("purge", "--keep-days", "0", "--dry-run")
    assert "would remove: 1 delivered job(s) older than 0 days (1 photograph(s))" in dry.stdout
    assert sorted((node.data_dir / "spool").rglob("*.dcm")) == spool
    done = node.cli("purge", "--keep-days", "0")
    assert "removed: 1 delivered job(s)" in done.stdout, done.stdout + done.stderr
    left = sorted((node.data_dir / "spool").rglob("*.dcm"))
    assert len(left) == 1 and pydicom.dcmread(left[0]).SOPInstanceUID == pydicom.dcmread(waiting[0]).SOPInstanceUID
    assert not (node.data_dir / "jobs" / "00000001").exists()
    status = node.status()
    assert status["instances"]["purged"] == 1 and sum(status["instances"].values()) == 2
    assert status["jobs"].get("done") == 1 and "purged" not in status["jobs"]
    assert any(e["event"] == "purged" for e in _audit(node))


def test_a_destination_outage_is_one_state_change_each_way_and_shown_by_status(tmp_path):
    pacs_port = free_port()
    node = _node(tmp_path, pacs_port, stable_seconds=0.3).start()
    try:
        send_instances(_series(tmp_path / "a", 2), f"DERMAI@127.0.0.1:{node.port}", calling_ae="MODALITY")
        wait_until(lambda: len([e for e in _audit(node) if e["event"] == "send_failed"]) >= 6, 60,
                   what="several failed deliveries")
        log = node.log_tail(10**7)
        assert log.count(f"destination PACS@127.0.0.1:{pacs_port} failing") == 1
        assert "WARNING dermpacs.sender: result" not in log  # per-item retries are INFO, not alarms
        assert f"destination PACS@127.0.0.1:{pacs_port} FAILING since" in node.cli("status").stdout
        with LocalStorageSCP(tmp_path / "pacs", ae_title="PACS", port=pacs_port) as pacs:
            wait_until(lambda: len(pacs.received) == 2, 60, what="delivery after the outage")
        assert node.log_tail(10**7).count(f"destination PACS@127.0.0.1:{pacs_port} recovered") == 1
        assert "all ok" in node.cli("status").stdout
    finally:
        node.stop()


def test_a_failed_rebuild_refuses_to_start_and_is_repeated_next_time(tmp_path, monkeypatch):
    from dicom.service import recovery

    config, uid = _store_with_one_instance(tmp_path / "data")
    config.database.unlink()
    real = recovery.rebuild_from_spool

    def fails_halfway(store, spool, cfg):  # fault injection: the disk fills up during the rebuild
        store.audit("restored", sop="1.2.3")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recovery, "rebuild_from_spool", fails_halfway)
    with pytest.raises(recovery.StoreUnusable, match="rebuilding it from .* failed .*No space left.*start again"):
        open_job_store(config, Spool(config.data_dir))
    assert not config.database.exists() and list(config.data_dir.glob("dermpacs.sqlite3.incomplete-*"))
    monkeypatch.setattr(recovery, "rebuild_from_spool", real)
    store = open_job_store(config, Spool(config.data_dir))  # the cause fixed: the rebuild runs again, whole
    try:
        assert store.current_digest(uid) is not None and store.audit_rows()[-1]["event"] == "store_rebuilt"
    finally:
        store.close()



def test_concurrent_successes_log_one_recovery():
    """The sender's two associations report to one destination's health: when both succeed
    after an outage, "recovered" is one state change, logged once (it was logged twice).
    A log handler that takes its time on that line holds the window open between the check
    and the reset, so the race happens every round, not once in a while."""
    import logging
    import threading

    from dicom.service.health import ComponentHealth

    recoveries = []

    class SlowHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "recovered" in record.getMessage():
                recoveries.append(record.getMessage())
                time.sleep(0.05)

    logger = logging.getLogger("dermpacs.health")
    handler = SlowHandler(logging.WARNING)
    logger.addHandler(handler)
    try:
        health = ComponentHealth("destination PACS", 1.0, 60.0)
        for _ in range(3):
            health.failed("connection refused")
            lanes = [threading.Thread(target=health.ok) for _ in range(2)]
            for t in lanes:
                t.start()
            for t in lanes:
                t.join()
    finally:
        logger.removeHandler(handler)
    assert len(recoveries) == 3
    assert not health.failing
