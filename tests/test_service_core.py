"""The service's durable core: configuration, routing, spool, job store, app runner."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom.encode import photograph_dataset, write_dataset
from dicom.service.config import (PHOTOGRAPH_SOP_CLASSES, AppConfig, ConfigError, Destination, RoutingRule,
                                  ServiceConfig, load_config)
from dicom.service.router import Router, routing_header
from dicom.service.runner import AppRunner
from dicom.service.spool import Spool, atomic_write, is_valid_uid
from dicom.service.store import JobStore, ReceivedInstance

VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"


# -- configuration --------------------------------------------------------------------------
def test_embedded_defaults_then_file_then_flags(tmp_path):
    default = load_config()
    assert default.ae_title == "DERMAI" and default.port == 11112 and default.rules
    file = tmp_path / "c.yaml"
    file.write_text("port: 4000\nstable_seconds: 2\ndestination: PACS@10.0.0.5:104\n")
    config = load_config(file, port=5000)
    assert config.port == 5000 and config.stable_seconds == 2
    assert config.destination == Destination("PACS", "10.0.0.5", 104)
    assert load_config(destination="https://pacs/dicom-web/").destination.stow_url == "https://pacs/dicom-web"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("ae_title: THIS_AE_TITLE_IS_TOO_LONG\n", "ae_title"),
        ("colour: blue\n", "unknown setting"),
        ("rules: [{name: x, app: nowhere}]\n", "not defined under apps"),
        ("destination: nonsense\n", "AE@HOST:PORT"),
        ("rules: [{name: x, app: facial_vitiligo, series_description_regex: '('}]\n", "bad regex"),
        ("rules: [{name: x, app: skin_prick, app_options: {panel: 3}}]\n", r"rules\[x\]\.app_options\.panel: 3 is not a string"),
        ("rules: [{name: x, app: skin_prick, app_options: {2panel: a}}]\n", "option name '2panel' is not a name"),
        ("rules: [{name: x, app: skin_prick, app_options: [panel]}]\n", "expected a mapping of option names"),
        ("rules: [{name: x, app: skin_prick, app_options: {panel: \"a\\nb\"}}]\n", "control characters"),
        ("rules: [{name: x, app: skin_prick, options: {panel: a}}]\n", "unknown setting"),
    ],
)
def test_bad_configuration_is_explained(tmp_path, yaml_text, message):
    file = tmp_path / "c.yaml"
    file.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_config(file)


# -- routing --------------------------------------------------------------------------------
def _header(**overrides):
    ds = photograph_dataset(np.zeros((64, 64, 3), np.uint8), transfer_syntax=ExplicitVRLittleEndian, body_part="FACE")
    for key, value in overrides.items():
        setattr(ds, key, value)
    return routing_header(ds)


def test_default_rules_send_each_kind_of_photograph_to_its_app():
    router = Router(load_config().rules)
    assert router.route(_header(), "DERMAI").app == "facial_vitiligo"
    assert router.route(_header(BodyPartExamined="SCALP"), "DERMAI").app == "scalp"
    assert router.route(_header(SeriesDescription="Skin prick test, left forearm"), "DERMAI").app == "skin_prick"
    assert router.route(_header(), "DERMAI-SPT").app == "skin_prick"
    arm = _header(BodyPartExamined="ARM", SeriesDescription="forearm")
    arm["AnatomicRegion"] = []
    assert router.route(arm, "DERMAI").app == "vitiligo_lesion"
    arm["SOPClassUID"] = "1.2.840.10008.5.1.4.1.1.2"  # a CT slice sent by mistake
    assert router.route(arm, "DERMAI") is None


def test_rules_are_ordered_and_every_condition_counts():
    rules = [
        RoutingRule(name="scalp-by-called-ae", app="b", called_ae_title="SCALPAI"),
        RoutingRule(name="prick", app="c", series_description_regex=r"prick\s+test", modality=["XC"]),
        RoutingRule(name="region", app="a", anatomic_region_code=["SCT:89545001"]),
    ]
    router = Router(rules)
    assert router.route(_header(), "SCALPAI").name == "scalp-by-called-ae"
    assert router.route(_header(SeriesDescription="Skin PRICK  test, forearm"), "DERMAI").name == "prick"
    assert router.route(_header(SeriesDescription="Skin prick test", Modality="OT"), "DERMAI").name == "region"


def test_the_example_rule_with_app_options_loads_and_routes_with_them(tmp_path):
    """Issue 13: the skin prick panel chosen per routing rule, as deploy/dermpacs.example.yaml
    shows it (commented out there: it needs a panel of that name)."""
    text = Path("deploy/dermpacs.example.yaml").read_text()
    commented = "  # - name: food-panel-by-called-ae\n"
    start = text.index(commented)
    block = text[start:].split("\n")[:4]
    assert all(line.startswith("  # ") for line in block)
    file = tmp_path / "c.yaml"
    file.write_text(text.replace("\n".join(block), "\n".join("  " + line[4:] for line in block)))
    rules = load_config(file).rules
    assert rules[0] == RoutingRule(name="food-panel-by-called-ae", app="skin_prick", called_ae_title="DERMAI-FOOD",
                                   app_options={"panel": "Food panel"})
    router = Router(rules)
    assert router.route(_header(), "DERMAI-FOOD").app_options == {"panel": "Food panel"}
    assert router.route(_header(), "DERMAI-SPT").app_options == {}


# -- spool ----------------------------------------------------------------------------------
@pytest.mark.parametrize("uid", ["../../etc/passwd", "1.2.3/../../x", "1." * 40 + "1", "", "1.02.3"])
def test_crafted_uids_are_not_valid_and_never_choose_a_path(tmp_path, uid):
    assert not is_valid_uid(uid)
    spool = Spool(tmp_path)
    path = spool.instance_path(uid)
    assert path.resolve().is_relative_to(spool.instances.resolve())
    assert not uid or uid not in str(path)


def test_atomic_write_leaves_all_or_nothing(tmp_path):
    target = tmp_path / "a" / "b.dcm"
    atomic_write(target, b"x" * 1000)
    assert target.read_bytes() == b"x" * 1000
    assert not list(target.parent.glob(".incoming-*"))
    (target.parent / ".incoming-left.part").write_bytes(b"half")
    spool = Spool(tmp_path)
    (spool.instances / "ab").mkdir()
    (spool.instances / "ab" / ".incoming-crash.part").write_bytes(b"half")
    assert spool.clean_partial_writes() == 1


# -- job store ------------------------------------------------------------------------------
def _received(store: JobStore, spool: Spool, series: str, n: int = 1) -> list[str]:
    uids = []
    for _ in range(n):
        uid = generate_uid()
        path = spool.store(uid, b"data")
        assert store.add_instance(ReceivedInstance(uid, VL_PHOTO, "1.2.3", series, path, "0" * 64, 4, "MOD", "DERMAI",
                                                   "127.0.0.1", {"SOPClassUID": VL_PHOTO}))
        uids.append(uid)
    return uids


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "db.sqlite3")
    yield s
    s.close()


def test_job_lifecycle_outbox_and_audit(store, tmp_path):
    spool = Spool(tmp_path)
    uids = _received(store, spool, "1.2.3.4", 3)
    item = store.waiting_instances("1.2.3.4")[0]
    assert store.add_instance(ReceivedInstance(item["sop_instance_uid"], VL_PHOTO, "1.2.3", "1.2.3.4", Path("x"),
                                               "0" * 64, 4, "MOD", "DERMAI", "", {})) == "duplicate"
    assert store.settled_series(stable_seconds=60) == []
    assert store.settled_series(stable_seconds=0, now=time.time() + 1) == ["1.2.3.4"]
    job_id = store.create_job("1.2.3", "1.2.3.4", "facial_vitiligo", "face", uids)
    assert store.settled_series(0, now=time.time() + 1) == []
    job = store.claim_next_job()
    assert job.id == job_id and job.state == "running" and job.attempts == 1
    assert store.claim_next_job() is None
    store.finish_analysis(job_id, [(tmp_path / "r1.dcm", "9.1", "seg"), (tmp_path / "r2.dcm", "9.2", "sr")],
                          "PACS@h:1", {"app": "facial_vitiligo", "duration_s": 1.0})
    assert store.job(job_id).state == "sending"
    due = store.due_outbox()
    assert [d.sop_instance_uid for d in due] == ["9.1", "9.2"]
    store.mark_sent(due[0])
    store.mark_send_failed(due[1], "connection refused", retry_at=time.time() + 30)
    assert store.due_outbox() == [] and store.job(job_id).state == "sending"
    late = store.due_outbox(now=time.time() + 31)
    store.mark_sent(late[0])
    assert store.job(job_id).state == "done"
    events = [row["event"] for row in store.audit_rows()]
    assert events.count("received") == 3 and "duplicate" in events and events[-1] == "sent"
    assert {"routed", "started", "analysed", "send_failed"} <= set(events)


def test_a_job_keeps_its_rules_app_options_across_restarts_and_an_older_store_gains_the_column(tmp_path):
    """The job runs with the options it was routed with, whatever the rules say by then."""
    path, spool = tmp_path / "db.sqlite3", Spool(tmp_path)
    store = JobStore(path)
    plain = store.create_job("1.2.3", "1.1", "skin_prick", "spt", _received(store, spool, "1.1"))
    food = store.create_job("1.2.3", "1.2", "skin_prick", "food", _received(store, spool, "1.2"), {"panel": "Food"})
    store.close()
    store = JobStore(path)  # a restart
    assert store.job(food).app_options == {"panel": "Food"} and store.job(plain).app_options == {}
    routed = {r["job_id"]: r["details"] for r in store.audit_rows() if r["event"] == "routed"}
    assert routed[food]["app_options"] == {"panel": "Food"} and "app_options" not in routed[plain]
    store._db.execute("ALTER TABLE jobs DROP COLUMN app_options")  # a job store from before the column
    store.close()
    store = JobStore(path)
    try:
        assert store.job(food).app_options == {} and store.claim_next_job().app_options == {}
    finally:
        store.close()


def test_audit_trail_is_append_only(store):
    store.audit("received", sop="1.2")
    for statement in ("UPDATE audit SET event='x'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            store._db.execute(statement)
    assert len(store.audit_rows()) == 1


def test_undeliverable_results_fail_the_job_visibly_and_retry_resends(store, tmp_path):
    spool = Spool(tmp_path)
    uids = _received(store, spool, "5.6")
    job_id = store.create_job("1.2.3", "5.6", "facial_vitiligo", "face", uids)
    store.claim_next_job()
    store.finish_analysis(job_id, [(tmp_path / "r.dcm", "9.9", "seg")], "PACS@h:1", {})
    store.mark_send_failed(store.due_outbox()[0], "association rejected", retry_at=None)
    status = store.status()
    assert store.job(job_id).state == "failed" and status["failed_jobs"][0]["id"] == job_id
    assert "association rejected" in status["failed_jobs"][0]["error"]
    assert store.retry() == [job_id]
    assert store.job(job_id).state == "sending" and len(store.due_outbox()) == 1


def test_interrupted_jobs_resume_then_give_up(store, tmp_path):
    spool = Spool(tmp_path)
    job_id = store.create_job("1.2.3", "7.8", "facial_vitiligo", "face", _received(store, spool, "7.8"))
    assert store.claim_next_job().attempts == 1
    assert store.recover_interrupted(max_attempts=2) == [job_id]
    assert store.job(job_id).state == "queued"
    assert store.claim_next_job().attempts == 2
    store.recover_interrupted(max_attempts=2)
    assert store.job(job_id).state == "failed" and "interrupted" in store.job(job_id).error


# -- runner ---------------------------------------------------------------------------------
def _runner_config(tmp_path, **apps) -> ServiceConfig:
    return ServiceConfig(data_dir=tmp_path, workers=2,
                         apps={name: AppConfig(module=f"tests.service_apps.{module}", timeout_s=timeout)
                               for name, (module, timeout) in apps.items()})


def _queue(store, spool, tmp_path, app, app_options=None):
    ds = photograph_dataset(np.zeros((64, 64, 3), np.uint8), transfer_syntax=ExplicitVRLittleEndian)
    path = spool.instance_path(ds.SOPInstanceUID)
    write_dataset(ds, path)
    store.add_instance(ReceivedInstance(ds.SOPInstanceUID, VL_PHOTO, ds.StudyInstanceUID, ds.SeriesInstanceUID, path,
                                        "0" * 64, path.stat().st_size, "MOD", "DERMAI", "", {}))
    return store.create_job(ds.StudyInstanceUID, ds.SeriesInstanceUID, app, "test", [ds.SOPInstanceUID], app_options)


def _echo_argv(folder: Path) -> list[str]:
    """What the echo app was given after ``-i IN -o OUT`` (it records its argv in results.json)."""
    (results,) = folder.rglob("results.json")
    argv = json.loads(results.read_text())["argv"]
    assert argv[0] == "-i" and argv[2] == "-o"
    return argv[4:]


@contextmanager
def _running_runner(tmp_path, **apps) -> Iterator[tuple[JobStore, Spool, AppRunner]]:
    """A started AppRunner (two workers) for ``apps`` on a fresh store, stopped and closed after."""
    config = _runner_config(tmp_path, **apps)
    store, spool = JobStore(config.database), Spool(config.data_dir)
    runner = AppRunner(config, store, spool)
    runner.start()
    try:
        yield store, spool, runner
    finally:
        runner.stop()
        store.close()


def _run_until_settled(runner, store, job_ids, limit_s=60):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        runner.poll()
        if all(store.job(j).state not in ("queued", "running") for j in job_ids):
            return
        time.sleep(0.1)
    raise AssertionError("jobs did not settle")


def test_runner_times_out_a_hanging_app_survives_a_crash_and_keeps_working(tmp_path):
    with _running_runner(tmp_path, echo=("echo_app", 60), hang=("hang_app", 2), crash=("crash_app", 60),
                         missing=("no_such_app", 60)) as (store, spool, runner):
        hang, crash = _queue(store, spool, tmp_path, "hang"), _queue(store, spool, tmp_path, "crash")
        _run_until_settled(runner, store, [hang, crash])
        assert store.job(hang).state == "failed" and "timed out after 2 s" in store.job(hang).error
        assert store.job(crash).state == "failed" and "died" in store.job(crash).error
        missing = _queue(store, spool, tmp_path, "missing")
        _run_until_settled(runner, store, [missing])
        assert "not installed" in store.job(missing).error
        echo = _queue(store, spool, tmp_path, "echo")
        _run_until_settled(runner, store, [echo])
        assert store.job(echo).state == "sending"
        assert len(store.due_outbox()) == 1
        analysed = [r for r in store.audit_rows() if r["event"] == "analysed"]
        assert analysed[-1]["details"]["model"] == "echo"


def test_partly_failed_analysis_is_a_failed_job_that_retry_redoes(tmp_path):
    """A SEG written, then the overlay hits a full disk: nothing is sent, the job fails, retry works."""
    with _running_runner(tmp_path, partial=("partial_app", 60)) as (store, spool, runner):
        job = _queue(store, spool, tmp_path, "partial")
        (spool.jobs / f"{job:08d}").mkdir(parents=True)
        (spool.jobs / f"{job:08d}" / "fail-once").touch()
        _run_until_settled(runner, store, [job])
        assert store.job(job).state == "failed"
        assert "partly failed" in store.job(job).error and "overlay writer" in store.job(job).error
        assert store.due_outbox() == []  # the SEG of a photograph "not analysed" is not sent
        assert store.retry(job) == [job]
        _run_until_settled(runner, store, [job])
        assert store.job(job).state == "sending" and len(store.due_outbox()) == 1
        assert store.due_outbox()[0].path.parent.name == "out"
        assert len(list(spool.jobs.rglob("out/*.dcm"))) == 1  # the failed run's SEG did not stay beside it


def test_an_analysis_that_finished_before_a_crash_is_recorded_not_run_again(tmp_path):
    """Its results keep their SOP Instance UIDs: a PACS never gets two results for one photograph."""
    import pydicom

    from tests.service_apps import echo_app

    config = _runner_config(tmp_path, echo=("echo_app", 60))
    store, spool = JobStore(config.database), Spool(config.data_dir)
    job = _queue(store, spool, tmp_path, "echo")
    claimed = store.claim_next_job()  # attempt 1 ran to the end, then the node was SIGKILLed
    inputs, outputs = spool.job_folder(job, claimed.attempts)
    for row in store.job_instances(job):
        (inputs / Path(row["path"]).name).write_bytes(Path(row["path"]).read_bytes())
    echo_app.main(["echo", "-i", str(inputs), "-o", str(outputs)])
    (result,) = outputs.glob("*.dcm")
    uid = pydicom.dcmread(result).SOPInstanceUID
    assert store.recover_interrupted(max_attempts=3) == [job]
    runner = AppRunner(config, store, spool)
    runner.start()
    try:
        _run_until_settled(runner, store, [job])
    finally:
        runner.stop()
    try:
        assert store.job(job).state == "sending" and store.job(job).attempts == 1
        (item,) = store.due_outbox()
        assert item.sop_instance_uid == uid and item.path == result
        assert not (spool.jobs / f"{job:08d}" / "attempt-2").exists()
    finally:
        store.close()


def test_the_runner_passes_the_options_a_job_was_routed_with_as_option_arguments(tmp_path):
    """No rule in this configuration has options: the job's own (stored when routed) are passed."""
    with _running_runner(tmp_path, echo=("echo_app", 60)) as (store, spool, runner):
        food = _queue(store, spool, tmp_path, "echo", {"panel": "Food panel", "mode": "a=b"})
        plain = _queue(store, spool, tmp_path, "echo")
        _run_until_settled(runner, store, [food, plain])
        assert store.job(food).state == store.job(plain).state == "sending"
        assert _echo_argv(spool.jobs / f"{food:08d}") == ["--option", "mode=a=b", "--option", "panel=Food panel"]
        assert _echo_argv(spool.jobs / f"{plain:08d}") == []


def test_the_service_routes_each_photograph_with_its_rules_app_options_to_the_app(tmp_path):
    """End to end through `dermpacs serve` (local runner): one series, one photograph sent to the
    rule's called AE title, one to the node's own. The same app, different options: two jobs."""
    from dicom.service.local_pacs import send_instances
    from tests.pacs.dcmtk import wait_until
    from tests.pacs.dermpacs import DermpacsProcess
    from tests.pacs.netns import free_port

    node = DermpacsProcess(
        tmp_path / "node", destination=f"PACS@127.0.0.1:{free_port()}",  # no PACS: results wait in the outbox
        apps={"echo": {"module": "tests.service_apps.echo_app", "timeout_s": 60}},
        rules=[{"name": "food", "app": "echo", "called_ae_title": "DERMAI-FOOD", "app_options": {"panel": "Food panel"}},
               {"name": "all", "app": "echo", "sop_class_uid": list(PHOTOGRAPH_SOP_CLASSES)}]).start()
    try:
        study, series = generate_uid(), generate_uid()
        food, plain = (photograph_dataset(np.full((64, 64, 3), i, np.uint8), transfer_syntax=ExplicitVRLittleEndian,
                                          study_uid=study, series_uid=series, instance_number=i + 1) for i in range(2))
        assert send_instances([food], f"DERMAI-FOOD@127.0.0.1:{node.port}") == [0]
        assert send_instances([plain], f"DERMAI@127.0.0.1:{node.port}") == [0]
        jobs = node.data_dir / "jobs"
        wait_until(lambda: len(list(jobs.rglob("results.json"))) == 2, 60, what=f"2 analyses\n{node.log_tail()}")
        argv = {}
        for folder in jobs.iterdir():
            (results,) = folder.rglob("results.json")
            (case,) = json.loads(results.read_text())["cases"]
            argv[case["sop_instance_uid"]] = _echo_argv(folder)
        assert argv == {food.SOPInstanceUID: ["--option", "panel=Food panel"], plain.SOPInstanceUID: []}
        routed = [r["details"] for r in json.loads(node.cli("audit", "export", "--format", "json").stdout)
                  if r["event"] == "routed"]
        assert sorted((r["rule"], r.get("app_options")) for r in routed) == [("all", None),
                                                                              ("food", {"panel": "Food panel"})]
    finally:
        node.stop()
