"""The Celery queue with the real thing: redis-server, two `dermpacs worker` processes, a listener.

Each test runs Debian's redis-server on a free loopback port, `dermpacs serve --queue
celery` as a process, `dermpacs worker` processes with separate working folders, and the
embedded storage SCP as the PACS; inside a private network namespace when the runner may
make one. The app (tests/service_apps/pair_app.py) writes two results per photograph
(stand-ins for its SEG and SR) naming their source, with fresh UIDs on every run, so a
job analysed twice *and* sent twice would show as an extra pair at the PACS.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom.encode import photograph_dataset
from dicom.service.config import ConfigError, load_config
from dicom.service.local_pacs import LocalStorageSCP, send_instances
from dicom.service.queue import idempotency_key
from dicom.service.store import JobStore
from tests.pacs.dermpacs import DermpacsProcess
from tests.pacs.netns import isolated_network, isolation_unavailable_reason
from tests.pacs.redis import RedisServer
from tests.pacs.worker import WorkerProcess

APP = "tests.service_apps.pair_app"
DELAY_S = 3.0  # per photograph: long enough to kill a worker mid-job


@pytest.fixture
def network():
    """A private loopback-only namespace when possible; every server binds 127.0.0.1 anyway."""
    if isolation_unavailable_reason() is None:
        with isolated_network():
            yield
    else:
        yield


class Cluster:
    """redis + listener + workers + PACS, all on loopback, stopped in reverse order."""

    def __init__(self, tmp_path: Path, apps: dict | None = None, rules: list | None = None, **queue) -> None:
        self.tmp = tmp_path
        self.redis = RedisServer(tmp_path / "redis").start()
        self.shared = tmp_path / "shared"
        self.pacs = LocalStorageSCP(tmp_path / "pacs", ae_title="PACS").start()
        apps = apps or {"pair": {"module": APP, "timeout_s": 30}}
        self.node = DermpacsProcess(
            tmp_path / "node", destination=self.pacs.address(), apps=apps,
            rules=rules or [{"name": "all", "app": "pair"}],
            queue={"backend": "celery", "broker": self.redis.url, "shared_dir": str(self.shared),
                   # Test scale: a lost worker is noticed in 3 s; visibility timeout above the 30 s job timeout.
                   "visibility_timeout_s": 45, "heartbeat_s": 0.5, "worker_lost_after_s": 3,
                   "reconcile_interval_s": 2, "restore_interval_s": 1, **queue})
        self.workers: list[WorkerProcess] = []

    def worker(self, name: str, apps: str | None = None, delay_s: float = DELAY_S) -> WorkerProcess:
        w = WorkerProcess(self.tmp / name, name, self.node.config, self.redis.url, self.shared, apps,
                          {"DERMPACS_TEST_APP_DELAY_S": str(delay_s)}).start()
        self.workers.append(w)
        return w

    def node_address(self) -> str:
        return f"DERMAI@127.0.0.1:{self.node.port}"

    def heartbeat(self, name: str) -> dict:
        try:
            return json.loads((self.shared / "workers" / f"{name}.json").read_text())
        except (OSError, ValueError):
            return {}

    def status(self) -> dict:
        return self.node.status()

    def settled(self, jobs: int) -> bool:
        """Every job done and every result sent."""
        status = self.status()
        return status["jobs"].get("done", 0) == jobs and set(status["outbox"]) == {"sent"}

    def audit(self) -> list[dict]:
        store = JobStore(self.node.data_dir / "dermpacs.sqlite3")
        try:
            return store.audit_rows()
        finally:
            store.close()

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.node.stop()
        self.pacs.stop()
        self.redis.stop()

    def logs(self) -> str:
        parts = [f"--- listener\n{self.node.log_tail(4000)}"]
        parts += [f"--- {w.name}\n{w.log_path.read_text()[-3000:]}" for w in self.workers if w.log_path.exists()]
        return "\n".join(parts)


@pytest.fixture
def cluster(network, tmp_path):
    made: list[Cluster] = []

    def make(**kwargs) -> Cluster:
        made.append(Cluster(tmp_path, **kwargs))
        return made[-1]

    yield make
    for c in made:
        c.close()


def storm(count: int, description: str = "Skin") -> list[pydicom.Dataset]:
    """``count`` small photographs, one series each (a job each), in one study."""
    study = generate_uid()
    return [photograph_dataset(np.full((64, 64, 3), i, np.uint8), transfer_syntax=ExplicitVRLittleEndian,
                               study_uid=study, series_uid=generate_uid(), series_description=description)
            for i in range(count)]


def results_by_source(pacs: LocalStorageSCP) -> dict[str, Counter]:
    """source SOP Instance UID -> Counter of result kinds the PACS holds for it."""
    found: dict[str, Counter] = {}
    for path in pacs.snapshot().values():
        comment = dict(part.split("=", 1) for part in str(pydicom.dcmread(path).ImageComments).split())
        found.setdefault(comment["source"], Counter())[comment["kind"]] += 1
    return found


def assert_exactly_once(c: Cluster, photos: list[pydicom.Dataset]) -> None:
    results = results_by_source(c.pacs)
    assert set(results) == {str(ds.SOPInstanceUID) for ds in photos}
    assert all(kinds == Counter({"SEG": 1, "SR": 1}) for kinds in results.values()), results
    assert c.pacs.store_count == 2 * len(photos)  # no C-STORE repeated either


def _wait(condition, timeout_s: float, c: Cluster, what: str, interval_s: float = 0.3) -> None:
    """Poll ``condition`` (some run `dermpacs status`, a process) until true; fail with the logs."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout_s:g} s\n{c.logs()}")
        time.sleep(interval_s)


# -- the bar of issue 14 ---------------------------------------------------------------------
def test_storm_with_a_worker_sigkilled_mid_job_reaches_the_pacs_exactly_once(cluster):
    c = cluster()
    first, second = c.worker("w1"), c.worker("w2")
    c.node.start()
    _wait(lambda: first.ready() and second.ready(), 60, c, "workers ready")
    photos = storm(12)
    assert send_instances(photos, c.node_address()) == [0] * 12

    # Kill whichever worker is first seen in the middle of a job.
    victim, lost_jobs = None, []

    def someone_busy() -> bool:
        nonlocal victim, lost_jobs
        for w in (first, second):
            lost_jobs = c.heartbeat(w.name).get("running")
            if lost_jobs:
                victim = w
                return True
        return False

    _wait(someone_busy, 60, c, "a worker running a job")
    victim.kill()
    survivor = second if victim is first else first

    _wait(lambda: c.settled(12), 180, c, "all 12 jobs done and sent")
    assert_exactly_once(c, photos)
    audit = c.audit()
    for job_id in lost_jobs:
        events = [r for r in audit if r["job_id"] == job_id]
        assert any(r["event"] == "redispatched" and victim.name in r["details"]["reason"] for r in events), \
            (job_id, victim.name, [(r["at"], r["event"], r["details"]) for r in events], c.logs())
        analysed = [r for r in events if r["event"] == "analysed"]
        assert len(analysed) == 1 and analysed[0]["details"]["worker"] == survivor.name
    status = c.status()["queue"]
    states = {w["name"]: w["state"] for w in status["workers"]}
    assert states[survivor.name] == "alive" and states[victim.name] == "lost"


def test_a_worker_killed_and_restarted_under_its_name_hands_its_job_on(cluster):
    """systemd restarts a crashed worker within seconds, under the same name: the job its
    previous life was running must not wait for the broker's visibility timeout."""
    c = cluster()
    w = c.worker("w1")
    c.node.start()
    _wait(w.ready, 60, c, "worker ready")
    photos = storm(2)
    assert send_instances(photos, c.node_address()) == [0] * 2
    _wait(lambda: bool(c.heartbeat("w1").get("running")), 60, c, "w1 running a job")
    lost = c.heartbeat("w1")["running"]
    w.kill()
    w.start()  # same name, at once: its new heartbeat replaces the one naming the lost job
    _wait(lambda: c.settled(2), 120, c, "both jobs done")
    assert_exactly_once(c, photos)
    reasons = [r["details"]["reason"] for r in c.audit() if r["event"] == "redispatched" and r["job_id"] in lost]
    assert reasons and "restarted" in reasons[0]


def test_with_the_listener_down_celery_alone_redelivers_a_killed_workers_job(cluster):
    """The backstop that needs no listener: late acknowledgement plus the visibility timeout.
    The listener is down (so no heartbeat fail-over) when a worker dies mid-job; another
    worker runs the job once the visibility timeout has passed; the restarted listener
    applies that run."""
    c = cluster(apps={"pair": {"module": APP, "timeout_s": 8}}, visibility_timeout_s=10, worker_lost_after_s=600)
    victim = c.worker("w1")
    c.node.start()
    _wait(victim.ready, 60, c, "w1 ready")
    photos = storm(1)
    assert send_instances(photos, c.node_address()) == [0]
    _wait(lambda: bool(c.heartbeat("w1").get("running")), 60, c, "w1 running the job")
    c.node.kill()
    victim.kill()
    other = c.worker("w2")
    _wait(lambda: c.heartbeat("w2").get("jobs_done") == 1, 90, c, "w2 running the job after the visibility timeout")
    c.node.start()
    _wait(lambda: c.settled(1), 60, c, "the job applied after the listener's restart")
    assert_exactly_once(c, photos)
    analysed = [r for r in c.audit() if r["event"] == "analysed"]
    assert [r["details"]["worker"] for r in analysed] == [other.name]
    assert not any(r["event"] == "redispatched" for r in c.audit())


# -- the broker away or restarted --------------------------------------------------------------
def test_jobs_wait_in_sqlite_while_the_broker_is_down_and_go_when_it_returns(cluster):
    c = cluster()
    c.worker("w1", delay_s=0)
    c.node.start()
    _wait(lambda: c.workers[0].ready(), 60, c, "worker ready")
    c.redis.stop()
    photos = storm(4)
    assert send_instances(photos, c.node_address()) == [0] * 4  # receiving does not need the broker

    _wait(lambda: c.status()["queue"]["waiting_for_broker"].get("pair") == 4, 60, c, "4 jobs waiting for the broker")
    status = c.status()
    assert status["queue"]["broker_reachable"] is False and status["jobs"] == {"queued": 4}
    time.sleep(5)  # the broker stays away a while: nothing is lost or failed meanwhile
    assert c.status()["jobs"] == {"queued": 4}

    c.redis.start()  # same port, empty: the worker reconnects, the listener dispatches
    _wait(lambda: c.settled(4), 120, c, "jobs done once the broker is back")
    assert_exactly_once(c, photos)
    events = [r["event"] for r in c.audit()]
    assert "broker_unreachable" in events and "broker_reachable" in events


def test_jobs_the_broker_lost_in_a_restart_are_dispatched_again(cluster):
    c = cluster()
    c.node.start()  # no worker yet: dispatched jobs wait in the broker
    photos = storm(3)
    assert send_instances(photos, c.node_address()) == [0] * 3
    _wait(lambda: c.status()["queue"]["queues"].get("pair", {}).get("waiting") == 3, 60, c, "3 jobs in the broker")

    c.redis.stop()
    c.redis.start()  # no persistence: the 3 messages are gone
    _wait(lambda: c.status()["queue"]["queues"]["pair"]["waiting"] == 3, 60, c, "3 jobs published again")
    c.worker("w1", delay_s=0)
    _wait(lambda: c.settled(3), 120, c, "jobs done")
    assert_exactly_once(c, photos)
    assert sum(r["event"] == "redispatched" for r in c.audit()) == 3


# -- the listener restarted, and a job run twice -----------------------------------------------
def test_listener_killed_mid_storm_reconciles_on_start_and_delivers_once(cluster):
    c = cluster()
    c.worker("w1"), c.worker("w2")
    c.node.start()
    _wait(lambda: all(w.ready() for w in c.workers), 60, c, "workers ready")
    photos = storm(6)
    assert send_instances(photos, c.node_address()) == [0] * 6
    _wait(lambda: any(c.heartbeat(w.name).get("running") for w in c.workers), 60, c, "a job running")
    c.node.kill()  # SIGKILL: workers go on; their reports wait in the shared folder
    _wait(lambda: sum(c.heartbeat(w.name).get("jobs_done", 0) for w in c.workers) >= 3, 60, c,
          "workers reporting while the listener is down")
    c.node.start()
    _wait(lambda: c.settled(6), 120, c, "all jobs done after the restart")
    assert_exactly_once(c, photos)
    assert not any(r["event"] == "analysis_failed" for r in c.audit())


def test_a_second_completion_of_a_job_is_recorded_and_dropped(cluster):
    """A worker frozen mid-job (SIGSTOP: a partition, a stalled NFS) is taken for lost; its job
    runs elsewhere; then it thaws and completes the same job a second time."""
    c = cluster()
    slow = c.worker("w1", delay_s=4)
    c.node.start()
    _wait(slow.ready, 60, c, "w1 ready")
    photos = storm(1)
    assert send_instances(photos, c.node_address()) == [0]
    _wait(lambda: bool(c.heartbeat("w1").get("running")), 60, c, "w1 running the job")
    os.killpg(slow.process.pid, signal.SIGSTOP)
    try:
        c.worker("w2", delay_s=0)
        _wait(lambda: c.settled(1), 90, c, "the job done by w2")
    finally:
        os.killpg(slow.process.pid, signal.SIGCONT)
    _wait(lambda: any(r["event"] == "duplicate_completion" for r in c.audit()), 60, c, "w1's late completion")
    assert_exactly_once(c, photos)
    audit = c.audit()
    analysed = [r for r in audit if r["event"] == "analysed"]
    duplicate = next(r for r in audit if r["event"] == "duplicate_completion")
    assert len(analysed) == 1 and analysed[0]["details"]["worker"] == "w2"
    assert duplicate["details"]["worker"] == "w1" and duplicate["details"]["accepted_run"] == analysed[0]["details"]["run_id"]
    assert duplicate["details"]["idempotency_key"] == analysed[0]["details"]["idempotency_key"]


# -- routing by what a worker has --------------------------------------------------------------
def test_jobs_go_only_to_workers_that_have_the_app(cluster):
    c = cluster(apps={"pair": {"module": APP, "timeout_s": 30}, "other": {"module": APP, "timeout_s": 30}},
                rules=[{"name": "other", "app": "other", "series_description_regex": "other"},
                       {"name": "all", "app": "pair"}])
    c.worker("w-pair", apps="pair", delay_s=0), c.worker("w-other", apps="other", delay_s=0)
    c.node.start()
    photos = storm(3, "Skin") + storm(3, "other site")
    assert send_instances(photos, c.node_address()) == [0] * 6
    _wait(lambda: c.settled(6), 120, c, "6 jobs done")
    assert_exactly_once(c, photos)
    workers = {r["details"]["app"]: set() for r in c.audit() if r["event"] == "analysed"}
    for r in c.audit():
        if r["event"] == "analysed":
            workers[r["details"]["app"]].add(r["details"]["worker"])
    assert workers == {"pair": {"w-pair"}, "other": {"w-other"}}
    status = c.status()["queue"]
    assert {w["name"]: w["apps"] for w in status["workers"]} == {"w-pair": ["pair"], "w-other": ["other"]}
    text = c.node.cli("status").stdout  # what an operator reads
    assert "broker redis://127.0.0.1" in text and "reachable" in text and "waiting for a broker: none" in text
    assert "queue pair: 0 waiting, 0 taken by workers" in text
    assert "w-pair on " in text and "alive, apps pair, GPU no, 3 done" in text


def test_a_rules_app_options_reach_the_app_in_a_worker(cluster):
    """The listener writes the job's options into job.json; the worker passes them as --option."""
    c = cluster(rules=[{"name": "food", "app": "pair", "series_description_regex": "food",
                        "app_options": {"panel": "food-panel"}},  # no space: ImageComments is split on them
                       {"name": "all", "app": "pair"}])
    c.worker("w1", delay_s=0)
    c.node.start()
    food, plain = storm(1, "Skin prick test, food") + storm(1, "Skin")
    assert send_instances([food, plain], c.node_address()) == [0] * 2
    _wait(lambda: c.settled(2), 120, c, "both jobs done")
    assert_exactly_once(c, [food, plain])
    options = {}
    for path in c.pacs.snapshot().values():
        comment = str(pydicom.dcmread(path).ImageComments)
        source = comment.split()[0].removeprefix("source=")
        options.setdefault(source, set()).add(comment.partition(" option:")[2])
    assert options == {food.SOPInstanceUID: {"panel=food-panel"}, plain.SOPInstanceUID: {""}}


def test_a_worker_serves_only_apps_installed_on_it_and_gpu_apps_only_with_a_gpu():
    from dicom.service.worker import worker_apps

    config = load_config(apps={"pair": {"module": APP}, "gpu_pair": {"module": APP, "needs_gpu": True},
                               "absent": {"module": "no_such_module_here"}},
                         rules=[{"name": "all", "app": "pair"}])
    assert set(worker_apps(config, None, gpu=False)) == {"pair"}
    assert set(worker_apps(config, None, gpu=True)) == {"pair", "gpu_pair"}
    assert set(worker_apps(config, ["gpu_pair"], gpu=True)) == {"gpu_pair"}
    with pytest.raises(ValueError, match="not configured"):
        worker_apps(config, ["scalp"], gpu=True)


def test_priors_are_looked_up_by_the_listener_before_the_job_is_published(cluster):
    """An app with priors_model_name gets IN/priors/ as in local mode; the lookup (C-FIND to
    the PACS) runs on the listener node, and its queries are audited."""
    c = cluster(apps={"pair": {"module": APP, "timeout_s": 30, "priors_model_name": "pair"}})
    c.worker("w1", delay_s=0)
    c.node.start()
    photos = storm(2)
    assert send_instances(photos, c.node_address()) == [0] * 2
    _wait(lambda: c.settled(2), 120, c, "both jobs done")
    assert_exactly_once(c, photos)
    audit = c.audit()
    for job_id in {r["job_id"] for r in audit if r["event"] == "analysed"}:
        events = [r["event"] for r in audit if r["job_id"] == job_id]
        assert "priors" in events and events.index("priors") < events.index("analysed")
        priors = next(r for r in audit if r["job_id"] == job_id and r["event"] == "priors")
        assert priors["details"]["status"] in ("none", "found", "skipped", "failed"), priors


# -- a real app -------------------------------------------------------------------------------
def test_a_real_app_runs_in_a_worker_and_its_seg_and_sr_reach_the_pacs(cluster, tmp_path):
    """The shipped facial vitiligo app in a `dermpacs worker` (imports, Holoscan stack, models)."""
    from apps.demo_study import make_demo_study

    c = cluster(apps={"facial_vitiligo": {"module": "apps.facial_vitiligo", "timeout_s": 300}},
                rules=[{"name": "all", "app": "facial_vitiligo"}], visibility_timeout_s=400)
    worker = c.worker("w1", apps="facial_vitiligo")
    c.node.start()
    _wait(worker.ready, 60, c, "worker ready")
    study = make_demo_study(tmp_path / "study", seed=5, size=(354, 530))
    assert send_instances([p.path for p in study], c.node_address()) == [0] * len(study)
    _wait(lambda: c.settled(1), 240, c, "the study analysed and its results sent")
    modalities = Counter(pydicom.dcmread(p, stop_before_pixels=True).Modality for p in c.pacs.snapshot().values())
    assert modalities == Counter({"SEG": len(study), "SR": 1})
    analysed = next(r for r in c.audit() if r["event"] == "analysed")
    assert analysed["details"]["worker"] == "w1" and analysed["details"]["model_version"]


# -- configuration -----------------------------------------------------------------------------
def test_queue_switch_in_yaml_and_flags(tmp_path):
    assert load_config().queue.backend == "local"
    file = tmp_path / "c.yaml"
    file.write_text("queue: {backend: celery, broker: 'redis://q:6379/0', shared_dir: /mnt/s}\n")
    assert load_config(file).queue.shared_dir == Path("/mnt/s")
    flags = load_config(queue={"backend": "celery", "broker": "redis://h:1/0", "shared_dir": "/x"}).queue
    assert (flags.backend, flags.broker, flags.shared_dir) == ("celery", "redis://h:1/0", Path("/x"))
    with pytest.raises(ConfigError, match="queue.broker"):
        load_config(queue={"backend": "celery", "shared_dir": "/x"})
    with pytest.raises(ConfigError, match="must exceed the longest app timeout"):
        load_config(queue={"backend": "celery", "broker": "redis://h:1/0", "shared_dir": "/x", "visibility_timeout_s": 60})


def test_idempotency_key_names_inputs_app_and_model_version():
    key = idempotency_key(["1.2", "1.3"], "scalp", "1.0")
    assert key == idempotency_key(["1.3", "1.2"], "scalp", "1.0")
    assert len({key, idempotency_key(["1.2"], "scalp", "1.0"), idempotency_key(["1.2", "1.3"], "skin_prick", "1.0"),
                idempotency_key(["1.2", "1.3"], "scalp", "1.1")}) == 4


# -- what an administrator installs ------------------------------------------------------------
WORKER_UNIT = Path(__file__).resolve().parents[1] / "deploy" / "dermpacs-worker.service"


def test_worker_unit_runs_a_command_the_cli_accepts():
    import re
    import shlex

    from dicom.cli import _parser

    command = re.search(r"^ExecStart=(.+)$", WORKER_UNIT.read_text(), re.M)[1]
    argv = shlex.split(command.replace("%H", "host"))
    assert argv[0].endswith("/dermpacs")
    args = _parser().parse_args(argv[1:])
    assert args.command == "worker" and args.config == Path("/etc/dermpacs/dermpacs.yaml")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_worker_unit_parses(tmp_path):
    import re

    unit = tmp_path / "dermpacs-worker.service"
    unit.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", WORKER_UNIT.read_text(), flags=re.M))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if str(unit) in line]
    assert result.returncode == 0 and complaints == [], result.stdout + result.stderr
