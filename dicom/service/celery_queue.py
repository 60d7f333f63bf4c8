"""The Celery queue (``queue.backend: celery``): jobs run by ``dermpacs worker`` processes anywhere.

The listener node still receives, spools, routes, audits and sends; its SQLite job store
stays the record of truth. This runner only moves jobs between that store and the workers:

* **dispatch**: a queued job's inputs go to the shared folder, then its id is published to
  the Celery queue of its app (``dermpacs.<app>``; a worker consumes only the queues of
  the apps it has). Only then is the job marked running. If the broker is unreachable the
  job stays queued in SQLite and is published when the broker answers again.
* **collect**: workers drop a completion report in the shared folder; the first report of
  a running job is applied (results into the outbox, in one transaction, with the run id
  and idempotency key in the audit row); any later one is audited as
  ``duplicate_completion`` and dropped. So a job run twice sends its results once.
* **fail over**: a worker whose heartbeat stops has its running jobs published again
  (counted as attempts, bounded by ``job_max_attempts``).
* **reconcile** (at start-up, after the broker comes back, and every
  ``reconcile_interval_s``): a running job that is neither in the broker (waiting or taken),
  nor on a live worker, nor reported complete was lost (a broker restarted without its
  data) and is published again.

Celery's own guarantee underneath: late acknowledgement (the job is acknowledged when it
ended, not when taken) and prefetch 1, so a worker that dies leaves its job in the broker.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .config import ServiceConfig
from .queue import SharedDir, idempotency_key, publish_folder, read_json
from .runner import AppRunner, _Running
from .spool import Spool
from .store import JobStore

log = logging.getLogger("dermpacs.queue")

TASK_NAME = "dermpacs.analyse"
COMPLETED_CHANNEL = "dermpacs.completed"  # Redis pub/sub: a worker's "job N reported" wake-up (a job id only)
QUEUE_PREFIX = "dermpacs."
_TASK_ID = re.compile(r"^dermpacs-job-(\d+)-")
# kombu's Redis transport keeps priorities 0-9 in sub-queues taken lowest number first.
REDISPATCH_PRIORITY, DISPATCH_PRIORITY = 0, 5
MISSING_CONFIRM_S = 3.0  # a job missing from the broker is published again only if still missing this much later


def queue_name(app: str) -> str:
    return QUEUE_PREFIX + app


def visibility_timeout(config: ServiceConfig) -> float:
    """Seconds a job a worker has taken (and not yet acknowledged) stays hidden from other workers.

    Redis has no delivery acknowledgement of its own: kombu sets a taken message aside and
    gives it to another worker once this long has passed without an acknowledgement, and
    with late acknowledgement a job is acknowledged only when it has ended. If it were
    shorter than a job may run, a job still running normally would be handed to a second
    worker and analysed twice (Celery's default is one hour; an app's timeout may be
    longer). So it is the longest app timeout plus a margin for copying inputs and results;
    the worker's own timeout stops the app before it. A worker that dies is noticed sooner
    through its heartbeat; this timeout is the backstop that needs no listener.
    """
    if config.queue.visibility_timeout_s is not None:
        return float(config.queue.visibility_timeout_s)
    longest = max((app.timeout_s for app in config.apps.values()), default=600.0)
    return longest + max(300.0, 0.5 * longest)


def celery_app(config: ServiceConfig):
    """The Celery application of both sides (the listener publishes, workers consume)."""
    from celery import Celery

    queue = config.queue
    app = Celery("dermpacs", broker=queue.broker, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # acknowledged when the job ended: a worker that dies leaves it in the broker
        task_reject_on_worker_lost=True,  # a lost pool process puts its job back rather than dropping it
        worker_prefetch_multiplier=1,  # a worker holds no more jobs than it runs
        task_acks_on_failure_or_timeout=True,  # a job that ended badly has reported it (shared folder)
        task_ignore_result=True,  # results go through the shared folder, never the broker
        task_serializer="json", accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits for the broker however long it is away
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        broker_transport_options={
            "visibility_timeout": visibility_timeout(config),
            # How often workers look for taken jobs past the visibility timeout (kombu scans
            # every unacked_restore_interval * unacked_restore_throttle seconds).
            "unacked_restore_interval": queue.restore_interval_s,
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": 5,
        },
    )
    return app


def redis_client(config: ServiceConfig, timeout_s: float | None = 5.0):
    import redis

    return redis.Redis.from_url(config.queue.broker, socket_connect_timeout=timeout_s or 5.0, socket_timeout=timeout_s)


def _job_id_of(message: Any) -> int | None:
    try:
        match = _TASK_ID.match(message["headers"]["id"])
    except (KeyError, TypeError):
        return None
    return int(match[1]) if match else None


def broker_contents(client) -> dict[str, dict[str, Any]]:
    """Per queue: the job ids waiting in it and taken from it (unacknowledged). Raises if unreachable."""
    queues: dict[str, dict[str, Any]] = {}
    for raw_key in client.scan_iter(match=QUEUE_PREFIX + "*", _type="LIST"):
        key = raw_key.decode()
        name = key.split("\x06\x16")[0]  # kombu's priority sub-queues share the queue's name
        entry = queues.setdefault(name, {"waiting": [], "taken": []})
        for raw in client.lrange(raw_key, 0, -1):
            job_id = _job_id_of(json.loads(raw))
            if job_id is not None:
                entry["waiting"].append(job_id)
    for raw in client.hvals("unacked"):
        try:
            message, _exchange, routing_key = json.loads(raw)
        except ValueError:
            continue
        job_id = _job_id_of(message)
        if job_id is not None and str(routing_key).startswith(QUEUE_PREFIX):
            queues.setdefault(routing_key, {"waiting": [], "taken": []})["taken"].append(job_id)
    return queues


def _broker_errors() -> tuple[type[BaseException], ...]:
    import kombu.exceptions
    import redis

    return (kombu.exceptions.KombuError, redis.RedisError, OSError)


class CeleryQueue(AppRunner):
    """The scheduler's runner when analyses run on ``dermpacs worker`` processes (see module doc)."""

    def __init__(self, config: ServiceConfig, store: JobStore, spool: Spool) -> None:
        super().__init__(config, store, spool)
        assert config.queue.shared_dir is not None
        self.shared = SharedDir(config.queue.shared_dir)
        self._celery = None
        self._redis = None
        self._broker_ok = True
        self._broker_failures = 0
        self._broker_retry_at = 0.0
        self._next_reconcile = 0.0  # at start-up: reconcile on the first round
        self._missing: dict[int, float] = {}
        self._accepted: list[tuple[int, str]] = []  # marked in the shared folder next round, after the sender woke
        self._stopping = threading.Event()
        self._notices, self._notify = multiprocessing.Pipe(duplex=False)
        self._notify_lock = threading.Lock()
        # Priors are fetched here, on the node that talks to the PACS, before a job is published
        # (the worker's app finds them in IN/priors/ as in local mode); a slow PACS holds up
        # only that job, never the scheduler.
        self._priors_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dermpacs-priors")
        self._priors: dict[int, Future] = {}
        self._priors_done: set[int] = set()  # looked up, not yet published (the broker may be away)

    # -- runner interface -------------------------------------------------------------------
    def start(self) -> None:
        with self.store._lock:  # every completion looks up its job's audit rows (which runs were applied)
            self.store._db.execute("CREATE INDEX IF NOT EXISTS audit_job ON audit(job_id)")
        self.shared.create()
        self._celery = celery_app(self.config)
        self._redis = redis_client(self.config)
        threading.Thread(target=self._listen_for_completions, name="dermpacs-completions", daemon=True).start()
        log.info("analyses go to Celery workers through %s; shared folder %s", redact(self.config.queue.broker),
                 self.shared.root)

    def stop(self) -> None:
        self._stopping.set()
        self._priors_pool.shutdown(wait=False, cancel_futures=True)
        if self._redis is not None:
            self._redis.close()
        if self._celery is not None:
            self._celery.close()

    def result_pipes(self) -> list:
        """Readable when a worker announces a completion, so the scheduler need not wait a poll interval."""
        return [self._notices]

    def _wake(self, *_: Any) -> None:
        with self._notify_lock:
            self._notify.send_bytes(b"1")

    def _listen_for_completions(self) -> None:
        """Relay workers' completion notices (job ids on a Redis channel) to ``result_pipes``.

        Only a wake-up: the reports themselves are read from the shared folder every round,
        so a notice lost while the broker is away costs at most a poll interval.
        """
        while not self._stopping.is_set():
            try:
                client = redis_client(self.config, timeout_s=None)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(COMPLETED_CHANNEL)
                while not self._stopping.is_set():
                    if pubsub.get_message(timeout=1.0) is not None:
                        self._wake()
            except Exception as exc:  # noqa: BLE001 - the broker is away; the poll interval still finds reports
                log.debug("completion notices unavailable: %s", exc)
                self._stopping.wait(2.0)

    @property
    def busy(self) -> int:
        with self.store._lock:
            return self.store._db.execute("SELECT COUNT(*) FROM jobs WHERE state='running'").fetchone()[0]

    def poll(self) -> int:
        while self._notices.poll():
            self._notices.recv_bytes()
        for job_id, run_id in self._accepted:
            self.shared.accept(job_id, run_id)
        self._accepted = []
        finished = self._collect()
        beats = self.shared.heartbeats()
        self._fail_over(beats)
        if time.monotonic() >= self._next_reconcile or self._missing:
            self._reconcile(beats)
        self._dispatch()
        return finished

    # -- collect ----------------------------------------------------------------------------
    def _collect(self) -> int:
        finished = 0
        for path in self.shared.pending_completions():
            report = read_json(path)
            if report is None:
                log.error("completion report %s is unreadable; left in place", path.name)
                continue
            finished += self._apply(report)
            path.unlink(missing_ok=True)
        return finished

    def _applied_runs(self, job_id: int) -> list[str]:
        with self.store._lock:
            rows = self.store._db.execute(
                "SELECT json_extract(details, '$.run_id') FROM audit WHERE job_id=? "
                "AND event IN ('analysed', 'analysis_failed') AND json_extract(details, '$.run_id') IS NOT NULL "
                "ORDER BY id", (job_id,)).fetchall()
        return [r[0] for r in rows]

    def _apply(self, report: dict[str, Any]) -> int:
        job_id, run_id = int(report["job_id"]), str(report["run_id"])
        job = self.store.job(job_id)
        if job is None:
            log.error("completion of unknown job %d (run %s) dropped", job_id, run_id)
            return 0
        applied = self._applied_runs(job_id)
        if run_id in applied:  # applied before a crash removed the report
            return 0
        uids = [row["sop_instance_uid"] for row in self.store.job_instances(job_id)]
        facts = {"run_id": run_id, "worker": report.get("worker"), "host": report.get("host"),
                 "worker_started_at": report.get("started_at"),
                 "idempotency_key": idempotency_key(uids, job.app, report.get("model_version"))}
        if report.get("idempotency_key") not in (None, facts["idempotency_key"]):
            # The job's instances changed since dispatch (a new version superseded one): recorded;
            # the store's superseded handling decides what is sent.
            facts["worker_idempotency_key"] = report["idempotency_key"]
            log.warning("job %d: run %s analysed other inputs than the job now has", job_id, run_id)
        if job.state != "running":
            self.store.audit("duplicate_completion", job_id=job_id, state=job.state, exit_code=report.get("exit_code"),
                             accepted_run=applied[-1] if applied else None, **facts)
            log.warning("job %d: a second completion (run %s on %s) recorded and dropped", job_id, run_id,
                        report.get("worker"))
            return 0
        local_out = self.spool.jobs / f"{job_id:08d}" / f"run-{run_id}" / "out"
        shared_out = self.shared.run_dir(job_id, run_id) / "out"
        shutil.rmtree(local_out, ignore_errors=True)  # a copy a crash interrupted
        if shared_out.is_dir():
            publish_folder(shared_out, local_out)
        else:
            local_out.mkdir(parents=True, exist_ok=True)
        app = self.config.apps.get(job.app)
        running = _Running(job, app, 0.0, self.shared.inputs(job_id), local_out)
        self._record(running, int(report.get("exit_code", -1)), report.get("error"),
                     float(report.get("duration_s") or 0.0), extra=facts)
        self._accepted.append((job_id, run_id))
        return 1

    # -- dispatch ---------------------------------------------------------------------------
    def _publish(self, job_id: int, app: str, again: bool = False) -> tuple[str, float]:
        """Publish a job id; (task id, the time just before publishing).

        That time becomes the job's ``updated_at``: a worker may take the job and beat
        before this call returns, and fail-over compares the two. A job published again
        goes ahead of the queue (kombu's Redis priorities: 0 first), not behind a storm.
        """
        task_id = f"dermpacs-job-{job_id}-{uuid.uuid4().hex[:12]}"
        published_at = time.time()
        self._celery.send_task(TASK_NAME, args=[job_id], queue=queue_name(app), task_id=task_id, retry=False,
                               priority=REDISPATCH_PRIORITY if again else DISPATCH_PRIORITY)
        return task_id, published_at

    def _broker_failed(self, exc: BaseException, what: str) -> None:
        self._broker_failures += 1
        delay = min(2.0 * 2 ** min(self._broker_failures - 1, 3), 15.0)
        self._broker_retry_at = time.monotonic() + delay
        if self._broker_ok:
            waiting = self.waiting_for_broker()
            log.error("broker %s unreachable (%s: %s); %d job(s) wait in the job store until it answers",
                      redact(self.config.queue.broker), what, exc, waiting)
            self.store.audit("broker_unreachable", error=str(exc)[:300], waiting_jobs=waiting)
        self._broker_ok = False

    def _broker_back(self) -> None:
        if not self._broker_ok:
            log.warning("broker %s answers again; dispatching", redact(self.config.queue.broker))
            self.store.audit("broker_reachable", after_failures=self._broker_failures)
            self._next_reconcile = 0.0  # what did it keep of what it had?
        self._broker_ok, self._broker_failures = True, 0

    def waiting_for_broker(self) -> int:
        with self.store._lock:
            return self.store._db.execute("SELECT COUNT(*) FROM jobs WHERE state='queued'").fetchone()[0]

    def _dispatch(self) -> None:
        if time.monotonic() < self._broker_retry_at:
            return
        with self.store._lock:
            queued = self.store._db.execute("SELECT id, app FROM jobs WHERE state='queued' ORDER BY id").fetchall()
        for row in queued:
            job_id, app = row["id"], row["app"]
            if app not in self.config.apps:
                self.store.fail_job(job_id, f"app {app!r} is not configured")
                continue
            if job_id not in self._priors:
                instances = self.store.job_instances(job_id)
                model_dir = self.shared.publish_model(app, self.config.models_dir / "active" / app)
                self.shared.prepare(job_id, app, [r["sop_instance_uid"] for r in instances],
                                    [Path(r["path"]) for r in instances], model_dir, self.store.job(job_id).app_options)
            if not self._priors_ready(job_id, app):
                continue
            try:
                task_id, published_at = self._publish(job_id, app)
            except _broker_errors() as exc:
                self._broker_failed(exc, "publishing")
                return
            with self.store._transaction() as db:
                db.execute("UPDATE jobs SET state='running', attempts=attempts+1, updated_at=? WHERE id=? AND state='queued'",
                           (published_at, job_id))
                JobStore._audit(db, "dispatched", job_id=job_id, app=app, queue=queue_name(app), task_id=task_id)
            self._priors_done.discard(job_id)
            log.info("job %d: %s dispatched to queue %s", job_id, app, queue_name(app))
        if queued:
            self._broker_back()

    def _priors_ready(self, job_id: int, app: str) -> bool:
        """For an app with ``priors_model_name``: start the lookup, or say whether it has ended."""
        model_name = self.config.apps[app].priors_model_name
        if not model_name or job_id in self._priors_done:
            return True
        future = self._priors.get(job_id)
        if future is None:
            from .priors import fetch_priors, priors_request

            from dicom.longitudinal import PRIORS_FOLDER

            shutil.rmtree(self.shared.inputs(job_id) / PRIORS_FOLDER, ignore_errors=True)  # a crash's half lookup
            request = priors_request(self.config, model_name, self.store, job_id, app)
            future = self._priors[job_id] = self._priors_pool.submit(fetch_priors, request, self.shared.inputs(job_id))
            future.add_done_callback(self._wake)
            return False
        if not future.done():
            return False
        del self._priors[job_id]
        self._priors_done.add(job_id)
        return True

    def _redispatch(self, job_id: int, app: str, reason: str, count_attempt: bool) -> bool:
        job = self.store.job(job_id)
        if job is None or job.state != "running":
            return False
        if count_attempt and job.attempts >= self.config.job_max_attempts:
            self.store.fail_job(job_id, f"{reason}; gave up after {job.attempts} attempt(s)")
            return True
        try:
            task_id, published_at = self._publish(job_id, app, again=True)
        except _broker_errors() as exc:
            self._broker_failed(exc, "publishing again")
            return False
        with self.store._transaction() as db:
            db.execute("UPDATE jobs SET attempts=attempts+?, updated_at=? WHERE id=? AND state='running'",
                       (int(count_attempt), published_at, job_id))
            JobStore._audit(db, "redispatched", job_id=job_id, app=app, queue=queue_name(app), task_id=task_id,
                            reason=reason)
        log.warning("job %d published again: %s", job_id, reason)
        return True

    def _running_jobs(self) -> dict[int, tuple[str, float]]:
        with self.store._lock:
            rows = self.store._db.execute("SELECT id, app, updated_at FROM jobs WHERE state='running'").fetchall()
        return {r["id"]: (r["app"], r["updated_at"]) for r in rows}

    # -- fail over and reconcile ------------------------------------------------------------
    def _fail_over(self, beats: list[dict[str, Any]]) -> None:
        """Jobs of a worker that stopped beating, or died and came back under its name, go to another worker."""
        now, lost_after = time.time(), self.config.queue.worker_lost_after_s
        running = None
        for beat in beats:
            last_seen = float(beat.get("last_seen", 0))
            cases = []
            if beat.get("orphaned"):
                cases.append((beat["orphaned"], float(beat.get("orphaned_at") or 0), "restarted"))
            if not beat.get("stopped") and beat.get("running") and now - last_seen >= lost_after:
                cases.append((beat["running"], last_seen, f"lost (no heartbeat for {now - last_seen:.0f} s)"))
            for job_ids, seen, how in cases:
                running = self._running_jobs() if running is None else running
                for job_id in job_ids:
                    app, dispatched_at = running.get(int(job_id), (None, None))
                    # Published again after the worker's last sign of life: handled already.
                    if app is None or dispatched_at > seen:
                        continue
                    self._redispatch(int(job_id), app, f"worker {beat.get('name')} {how} mid-job", count_attempt=True)

    def _reconcile(self, beats: list[dict[str, Any]]) -> None:
        """Publish again what the broker lost; a job is lost when missing twice, seconds apart."""
        now = time.time()
        try:
            contents = broker_contents(self._redis)
        except _broker_errors() as exc:
            self._broker_failed(exc, "reconciling")
            self._next_reconcile = time.monotonic() + 5.0
            return
        self._next_reconcile = time.monotonic() + self.config.queue.reconcile_interval_s
        in_broker = {j for entry in contents.values() for j in entry["waiting"] + entry["taken"]}
        lost_after = self.config.queue.worker_lost_after_s
        on_workers = {int(j) for b in beats if not b.get("stopped") and now - float(b.get("last_seen", 0)) < lost_after
                      for j in b.get("running", [])}
        reported = {int(p.name[:8]) for p in self.shared.pending_completions() if p.name[:8].isdigit()}
        running = self._running_jobs()
        missing = {job_id for job_id in running if job_id not in in_broker | on_workers | reported}
        self._missing = {j: t for j, t in self._missing.items() if j in missing}
        for job_id in sorted(missing):
            first = self._missing.setdefault(job_id, now)
            if now - first >= MISSING_CONFIRM_S:
                del self._missing[job_id]
                # Counted: a job that keeps vanishing (a worker failing before it can report) stops.
                self._redispatch(job_id, running[job_id][0], "not in the broker, on a worker or reported "
                                 "(lost by a broker restart?)", count_attempt=True)
        if self._missing:
            self._next_reconcile = time.monotonic() + MISSING_CONFIRM_S
        else:
            self._broker_back()


def redact(url: str | None) -> str:
    """A broker URL without its password, for logs and status."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url or "")


def queue_status(config: ServiceConfig, store: JobStore) -> dict[str, Any]:
    """What `dermpacs status` shows of the Celery queue: broker, queue depth per app, workers."""
    now, lost_after = time.time(), config.queue.worker_lost_after_s
    with store._lock:
        waiting = store._db.execute("SELECT app, COUNT(*) FROM jobs WHERE state='queued' GROUP BY app").fetchall()
        running = store._db.execute("SELECT app, COUNT(*) FROM jobs WHERE state='running' GROUP BY app").fetchall()
    status: dict[str, Any] = {
        "backend": "celery", "broker": redact(config.queue.broker), "shared_dir": str(config.queue.shared_dir),
        "waiting_for_broker": {r[0]: r[1] for r in waiting}, "running": {r[0]: r[1] for r in running},
    }
    try:
        client = redis_client(config, timeout_s=3.0)
        contents = broker_contents(client)
        client.close()
        status["broker_reachable"] = True
        status["queues"] = {app: {"waiting": len(contents.get(queue_name(app), {}).get("waiting", [])),
                                  "taken": len(contents.get(queue_name(app), {}).get("taken", []))}
                            for app in sorted(set(config.apps) | {n[len(QUEUE_PREFIX):] for n in contents})}
    except _broker_errors() as exc:
        status["broker_reachable"], status["broker_error"], status["queues"] = False, str(exc)[:300], {}
    workers = []
    for beat in SharedDir(config.queue.shared_dir).heartbeats():
        age = max(now - float(beat.get("last_seen", 0)), 0.0)
        state = "stopped" if beat.get("stopped") else ("lost" if age >= lost_after else "alive")
        workers.append({"name": beat.get("name"), "host": beat.get("host"), "apps": beat.get("apps", []),
                        "gpu": beat.get("gpu", False), "jobs_done": beat.get("jobs_done", 0),
                        "jobs_failed": beat.get("jobs_failed", 0), "running": beat.get("running", []),
                        "last_seen_s_ago": round(age, 1), "state": state})
    status["workers"] = workers
    apps_served = {a for w in workers if w["state"] == "alive" for a in w["apps"]}
    status["apps_without_worker"] = sorted(set(config.apps) - apps_served)
    return status
