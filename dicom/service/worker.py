"""`dermpacs worker`: runs analysis jobs from the Celery queue, on any host that mounts the shared folder.

A worker consumes the queues of the apps it has (``dermpacs.<app>``; an app that needs a
GPU only where the worker has one), so a job only reaches a worker that can run it. For
each job id it takes: read ``job.json`` and the inputs from the shared folder, run the app
in one of its app processes (imports paid once per process, as in the local runner) with
the app's timeout, publish the results under ``runs/<run id>`` and drop a completion
report. The listener decides what counts; the worker never talks to the PACS or the job
store. A job already accepted (a redelivery after the listener took another run) is
acknowledged without running.

App processes die with the worker (PR_SET_PDEATHSIG), so a SIGKILLed worker leaves no
orphan finishing a job nobody will report; the job goes to another worker.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import queue as queue_module
import shutil
import signal
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from .config import AppConfig, ServiceConfig
from .queue import SharedDir, _safe_name as _file_name, idempotency_key, publish_folder, read_json
from .runner import _module_exists, _worker_loop, option_args, stop_child

log = logging.getLogger("dermpacs.worker")

PR_SET_PDEATHSIG = 1


def _app_process(conn) -> None:
    """An app process: dies with its worker, then runs jobs like a local runner's worker.

    Linux ties PR_SET_PDEATHSIG to the thread that started the process: replacements are
    started from Celery's pool threads, which live as long as the worker.
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: orphans finish their job and exit on the closed pipe
        pass
    _worker_loop(conn)


class AppProcess:
    """One long-lived process that runs one app call at a time."""

    def __init__(self, context: mp.context.BaseContext, index: int) -> None:
        self.context, self.index = context, index
        self._spawn()

    def _spawn(self) -> None:
        parent, child = self.context.Pipe()
        self.conn = parent
        self.process = self.context.Process(target=_app_process, args=(child,), name=f"dermpacs-app-{self.index}",
                                            daemon=True)
        self.process.start()
        child.close()

    def run(self, module: str, inputs: Path, outputs: Path, timeout_s: float,
            args: list[str] | None = None) -> tuple[int, str | None]:
        """(exit code, error): the app's own answer, or why there is none (crash, timeout)."""
        self.conn.send((module, str(inputs), str(outputs), args or [], None))
        deadline = time.monotonic() + timeout_s
        while True:
            if self.conn.poll(min(1.0, max(deadline - time.monotonic(), 0.0))):
                try:
                    _kind, code, error = self.conn.recv()
                    return int(code), error
                except (EOFError, OSError):
                    self.restart()
                    return -1, "the app process died"
            if not self.process.is_alive():
                code = self.process.exitcode
                self.restart()
                return -1, f"the app process died (exit code {code})"
            if time.monotonic() >= deadline:
                self.restart()
                return -1, f"timed out after {timeout_s:g} s"

    def restart(self) -> None:
        self.stop(kill=True)
        self._spawn()

    def stop(self, kill: bool = False) -> None:
        stop_child(self.process, self.conn, kill)


def has_gpu() -> bool:
    """An NVIDIA device node: enough to declare a GPU without importing torch."""
    return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()


def worker_apps(config: ServiceConfig, names: list[str] | None, gpu: bool) -> dict[str, AppConfig]:
    """The apps this worker serves: those asked for (default all configured) that are installed here."""
    chosen = {}
    for name in names or list(config.apps):
        app = config.apps.get(name)
        if app is None:
            raise ValueError(f"app {name!r} is not configured (apps: {', '.join(config.apps)})")
        if app.needs_gpu and not gpu:
            log.warning("app %s needs a GPU; this worker has none and does not take its jobs", name)
            continue
        if not _module_exists(app.module):
            log.warning("app %s (module %s) is not installed here; this worker does not take its jobs", name,
                        app.module)
            continue
        chosen[name] = app
    return chosen


class Worker:
    """The state behind one ``dermpacs worker``: its apps, app processes, heartbeat."""

    def __init__(self, config: ServiceConfig, apps: dict[str, AppConfig], name: str, work_dir: Path,
                 concurrency: int, gpu: bool) -> None:
        self.config, self.apps, self.name, self.gpu = config, apps, name, gpu
        self.work_dir = Path(work_dir)
        self.shared = SharedDir(config.queue.shared_dir).create()
        self.concurrency = concurrency
        self._slots: queue_module.Queue[AppProcess] = queue_module.Queue()
        self._lock = threading.Lock()
        self._beat_lock = threading.Lock()
        self._redis = None
        self.running: set[int] = set()
        self.jobs_done = self.jobs_failed = self.jobs_skipped = 0
        self.started_at = time.time()
        self._stop = threading.Event()
        self._beat_thread: threading.Thread | None = None
        # A worker restarted under the same name (systemd's Restart=) overwrites the heartbeat
        # that named the jobs its previous life was running: hand those on to the listener.
        previous = read_json(self.shared.workers / f"{_file_name(name)}.json") or {}
        self.orphaned = [] if previous.get("stopped") else sorted(set(previous.get("running", []))
                                                                   | set(previous.get("orphaned", [])))
        self.orphaned_at = float(previous.get("last_seen", 0.0)) if self.orphaned else None

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        context = mp.get_context("spawn")
        for i in range(self.concurrency):
            self._slots.put(AppProcess(context, i))
        self.beat()
        self._beat_thread = threading.Thread(target=self._beat_loop, name="dermpacs-heartbeat", daemon=True)
        self._beat_thread.start()

    def stop(self) -> None:
        self._stop.set()
        while not self._slots.empty():
            self._slots.get_nowait().stop()
        self.beat(stopped=True)

    # -- heartbeat --------------------------------------------------------------------------
    def beat(self, stopped: bool = False) -> None:
        # One writer at a time, state read inside: the heartbeat thread and a job thread
        # beating together must not let an older state (running: []) land last.
        with self._beat_lock:
            with self._lock:
                state = {"host": socket.gethostname(), "pid": os.getpid(), "apps": sorted(self.apps), "gpu": self.gpu,
                         "concurrency": self.concurrency, "jobs_done": self.jobs_done,
                         "jobs_failed": self.jobs_failed, "jobs_skipped": self.jobs_skipped,
                         "running": sorted(self.running), "started_at": self.started_at, "stopped": stopped,
                         "orphaned": self.orphaned, "orphaned_at": self.orphaned_at}
            try:
                self.shared.beat(self.name, state)
            except OSError as exc:  # the shared folder is away: the listener will notice the silence
                log.error("heartbeat not written: %s", exc)

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.config.queue.heartbeat_s):
            self.beat()

    def _announce(self, job_id: int) -> None:
        """Wake the listener (it would find the report within a poll interval anyway)."""
        from .celery_queue import COMPLETED_CHANNEL, redis_client

        try:
            if self._redis is None:
                self._redis = redis_client(self.config)
            self._redis.publish(COMPLETED_CHANNEL, str(job_id))
        except Exception as exc:  # noqa: BLE001 - a wake-up only
            log.debug("completion notice not sent: %s", exc)
            self._redis = None

    # -- one job ----------------------------------------------------------------------------
    def analyse(self, job_id: int) -> str:
        """Run one job; the answer says what happened (for the worker's log)."""
        job = self.shared.job(job_id)
        if job is None:
            # No job.json: a job of another deployment, or the shared folder is not mounted here.
            raise RuntimeError(f"job {job_id}: no job.json under {self.shared.job_dir(job_id)}")
        if self.shared.accepted(job_id) is not None:
            with self._lock:
                self.jobs_skipped += 1
            return "already accepted: not run again"
        app_name = job["app"]
        app = self.apps.get(app_name)
        run_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        report: dict[str, Any] = {"worker": self.name, "host": socket.gethostname(), "app": app_name,
                                  "started_at": time.time()}
        local = self.work_dir / "runs" / f"{job_id:08d}-{run_id}"
        outputs = local / "out"
        outputs.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self.running.add(job_id)
        self.beat()
        started = time.monotonic()
        try:
            if app is None:
                code, error = -1, f"app {app_name!r} is not served by worker {self.name}"
            else:
                slot = self._slots.get()
                try:
                    # The listener's promoted model version, if any (else the app's shipped one),
                    # and the options of the rule that routed the job.
                    args = ["-m", job["model_dir"]] if job.get("model_dir") else []
                    args += option_args(job.get("app_options") or {})
                    code, error = slot.run(app.module, self.shared.inputs(job_id), outputs, app.timeout_s, args)
                finally:
                    self._slots.put(slot)
            results = read_json(outputs / "results.json") or {}
            version = (results.get("algorithm") or {}).get("version")
            report.update(exit_code=code, error=error, duration_s=round(time.monotonic() - started, 3),
                          model_version=version,
                          idempotency_key=idempotency_key(job.get("sop_instance_uids", []), app_name, version))
            if self.shared.accepted(job_id) is None:
                publish_folder(outputs, self.shared.run_dir(job_id, run_id) / "out")
            else:  # another run was taken meanwhile: this report is only for the record
                report["already_accepted"] = True
            self.shared.complete(job_id, run_id, report)
            self._announce(job_id)
        finally:
            shutil.rmtree(local, ignore_errors=True)
            with self._lock:
                self.running.discard(job_id)
                if report.get("exit_code") == 0 and not report.get("error"):
                    self.jobs_done += 1
                else:
                    self.jobs_failed += 1
            self.beat()
        return f"run {run_id}: exit code {code}" + (f", {error}" if error else "")


def run_worker(config: ServiceConfig, apps: list[str] | None = None, name: str | None = None,
               work_dir: Path | None = None, concurrency: int = 1, gpu: bool | None = None,
               log_level: str = "INFO") -> int:
    """Consume the queues of this host's apps until SIGTERM (Celery's warm shutdown)."""
    from .celery_queue import TASK_NAME, celery_app, queue_name, redact

    from .service import _raise_stack_limit

    _raise_stack_limit()  # as `dermpacs serve` does: Holoscan (MONAI Deploy) apps want a 32 MiB stack
    gpu = has_gpu() if gpu is None else gpu
    served = worker_apps(config, apps, gpu)
    if not served:
        log.error("no app to serve: none of %s is installed here (or usable without a GPU)", apps or list(config.apps))
        return 2
    name = name or f"dermpacs-{os.getpid()}@{socket.gethostname()}"
    worker = Worker(config, served, name, work_dir or Path("dermpacs-work") / name, concurrency, gpu)
    app = celery_app(config)

    @app.task(name=TASK_NAME, bind=True)
    def analyse(task, job_id: int) -> str:
        return worker.analyse(int(job_id))

    worker.start()
    log.info("worker %s: apps %s (GPU: %s) from %s; shared folder %s", name, ", ".join(sorted(served)),
             "yes" if gpu else "no", redact(config.queue.broker), config.queue.shared_dir)
    try:
        app.worker_main([
            "worker", "--pool=threads", f"--concurrency={concurrency}", f"--hostname={name}",
            f"--queues={','.join(queue_name(a) for a in sorted(served))}", f"--loglevel={log_level}",
            "--without-gossip", "--without-mingle",
        ])
    finally:
        worker.stop()
    return 0
