"""The dermpacs node: listener + scheduler (grouping, routing, runner) + sender, on one store."""

from __future__ import annotations

import json
import logging
import multiprocessing.connection
import os
import resource
import signal
import threading
import time
from collections import defaultdict

from .config import ServiceConfig
from .corrections import CorrectionFiler, is_correction_candidate
from .health import ComponentHealth, HealthBoard
from .router import Router
from .queue import make_runner
from .spool import Spool

log = logging.getLogger("dermpacs.service")

PURGE_INTERVAL_S = 86400.0
HOLOSCAN_STACK_BYTES = 32 * 2**20  # Holoscan wants a 32 MB stack (ulimit -s 32768); workers inherit it


class DermpacsService:
    """Start, run until stopped, stop. Everything durable lives in ``config.data_dir``."""

    def __init__(self, config: ServiceConfig) -> None:
        from .listener import DicomListener
        from .sender import ResultSender

        from .recovery import open_job_store

        make_private(config.data_dir)
        self.config = config
        self.spool = Spool(config.data_dir)
        self.store = open_job_store(config, self.spool)  # checked; rebuilt from the spool if lost
        self.router = Router(config.rules)
        self.corrections = CorrectionFiler(config, self.store)
        self._wake_scheduler = threading.Event()
        self._wake_sender = threading.Event()
        self._stop = threading.Event()
        self.health = HealthBoard(config.data_dir)
        self.scheduler_health = ComponentHealth("scheduler", config.fault_backoff_initial_s, config.fault_backoff_max_s,
                                                self.health)
        self.listener = DicomListener(config, self.store, self.spool, on_received=lambda _series: self._wake_scheduler.set(),
                                      health=self.health)
        self.runner = make_runner(config, self.store, self.spool)  # local processes or the Celery queue
        self.sender = ResultSender(config, self.store, health=self.health)
        self._threads: list[threading.Thread] = []
        self._next_purge = 0.0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        _raise_stack_limit()
        # Celery jobs run on other hosts and are not interrupted by this restart: the queue
        # reconciles them with the broker on its first round instead.
        recovered = [] if self.config.queue.celery else self.store.recover_interrupted(self.config.job_max_attempts)
        if recovered:
            log.warning("resuming %d job(s) interrupted by the last shutdown: %s", len(recovered), recovered)
        self.runner.start()
        self.listener.start()
        self._threads = [
            threading.Thread(target=self._schedule_loop, name="dermpacs-scheduler", daemon=True),
            threading.Thread(target=self.sender.run, args=(self._stop, self._wake_sender), name="dermpacs-sender", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info("dermpacs %s listening on port %d; results to %s", self.config.ae_title, self.listener.port,
                 self.config.destination.describe())

    def stop(self) -> None:
        self._stop.set()
        self._wake_scheduler.set()
        self._wake_sender.set()
        self.listener.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        self.runner.stop()
        self.store.close()
        self.health.close()

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then stop cleanly."""
        done = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: done.set())
        self.start()
        try:
            done.wait()
        finally:
            log.info("stopping")
            self.stop()

    # -- scheduling ---------------------------------------------------------------------------
    def _schedule_loop(self) -> None:
        """Route, supervise, start jobs; a failing round (disk full, DB locked) backs off."""
        while not self._stop.is_set():
            try:
                self.route_settled_series()
                if self.runner.poll():
                    self._wake_sender.set()
                self._purge_daily()
                self.scheduler_health.ok()
            except Exception as exc:  # noqa: BLE001 - keep scheduling, but never in a hot loop
                delay = self.scheduler_health.failed(exc)
                self._stop.wait(delay)
                continue
            self._wait_for_work()

    def _purge_daily(self) -> None:
        """Apply the retention policy once a day (and at start-up) while the node runs."""
        if time.monotonic() < self._next_purge:
            return
        from .retention import purge

        self._next_purge = time.monotonic() + PURGE_INTERVAL_S
        try:
            purge(self.store, self.spool, self.config.retention.keep_days)
            self.corrections.training_set.apply_retention(self.config.learning.retention_days)
        except Exception:  # noqa: BLE001 - retention must never hold up analysis; try again in an hour
            log.exception("retention purge failed; next try in an hour")
            self._next_purge = time.monotonic() + PURGE_INTERVAL_S / 24

    def _wait_for_work(self) -> None:
        """Sleep until a job finishes, a series settles, an instance arrives or the poll interval ends."""
        timeout = self.config.poll_interval_s
        settle = self.store.next_settle_time(self.config.stable_seconds)
        if settle is not None:
            due_in = settle - time.time()
            # Wake 1 ms after a series settles; one already due (it settled during this round,
            # or routing it failed) is retried 10 ms on, not in a spin.
            timeout = min(timeout, due_in + 0.001 if due_in > 0 else 0.01)
        pipes = self.runner.result_pipes()
        if pipes and not self._wake_scheduler.is_set():
            multiprocessing.connection.wait(pipes, timeout)
        else:
            self._wake_scheduler.wait(timeout)
        self._wake_scheduler.clear()

    def route_settled_series(self) -> list[int]:
        """Hand every series quiet for ``stable_seconds`` to its app(s); report what matches nothing."""
        jobs = []
        for series_uid in self.store.settled_series(self.config.stable_seconds):
            rows = self.store.waiting_instances(series_uid)
            segs = [row for row in rows if is_correction_candidate(json.loads(row["header"]))]
            if segs:  # clinicians' corrections are filed for learning, never analysed
                self.corrections.file_received(segs)
                rows = [row for row in rows if row not in segs]
            # One job per app and option set: photographs of a series that rules send to the same
            # app with different app_options are analysed apart, each with its rule's options.
            by_app: dict[tuple[str, str], list] = defaultdict(list)
            unrouted = []
            for row in rows:
                rule = self.router.route(json.loads(row["header"]), row["called_ae"] or self.config.ae_title)
                if rule is None:
                    unrouted.append(row["sop_instance_uid"])
                else:
                    by_app[rule.app, json.dumps(rule.app_options, sort_keys=True)].append((rule, row))
            if unrouted:
                self.store.mark_unrouted(unrouted, "no routing rule matches")
                log.warning("series %s: %d instance(s) match no routing rule; kept, see `dermpacs status`",
                            series_uid, len(unrouted))
            for (app, _options), matched in by_app.items():
                rule = matched[0][0]
                study_uid = matched[0][1]["study_instance_uid"]
                jobs.append(self.store.create_job(study_uid, series_uid, app, rule.name,
                                                  [row["sop_instance_uid"] for _, row in matched], rule.app_options))
        return jobs


def make_private(data_dir) -> None:
    """Everything the node and its app workers create is 0600/0700, whatever the umask it was
    started with: photographs, overlays and results are patient data."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)  # also closes a folder an earlier version created 0755


def _raise_stack_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    wanted = HOLOSCAN_STACK_BYTES if hard == resource.RLIM_INFINITY else min(HOLOSCAN_STACK_BYTES, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_STACK, (wanted, hard))
