"""Runs analysis apps for jobs in a bounded pool of worker processes, each job with a timeout.

A worker is a child process that imports apps once and runs one job at a time by calling
the app's ``main(["-i", IN, "-o", OUT, ...])`` — exactly what ``python -m apps.<name>`` runs
(``-m`` for a promoted model, ``--option KEY=VALUE`` per app option of the job's rule) — so
apps are unchanged while imports and start-up are paid once per worker, not per job. A job
that raises, crashes the worker or outlives its timeout is marked failed with the reason;
the worker is replaced and the service keeps answering.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Mapping

from dicom.reader import read_file_identity

from .config import AppConfig, ServiceConfig
from .spool import Spool
from .store import Job, JobStore

log = logging.getLogger("dermpacs.runner")


def app_entry_point(module: str):
    """The ``main(argv)`` of an app: ``MODULE.main`` or ``MODULE.app.main``."""
    mod = importlib.import_module(module)
    main = getattr(mod, "main", None)
    if main is None:
        main = importlib.import_module(f"{module}.app").main
    return main


def option_args(app_options: Mapping[str, str]) -> list[str]:
    """A job's app options as the app's argv (``--option KEY=VALUE``, parsed by apps.runtime)."""
    return [arg for key, value in sorted(app_options.items()) for arg in ("--option", f"{key}={value}")]


def _worker_loop(conn: Connection) -> None:
    """Child process: receive (module, input, output), run the app, answer its exit code."""
    from .logsafe import configure_logging

    os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "WARN")
    # The app logs (and pydicom warns about) values from the peer's files: escaped here too.
    # An app's own logging.basicConfig then finds this handler and adds none.
    configure_logging(os.environ.get("DERMPACS_LOG_LEVEL", "INFO"))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        module, input_folder, output_folder, *extra = message
        try:
            priors = extra[1] if len(extra) > 1 else None
            if priors is not None:  # earlier results into IN/priors/ first; never raises
                from .priors import fetch_priors

                fetch_priors(priors, Path(input_folder))
            argv = [module, "-i", input_folder, "-o", output_folder, *(extra[0] if extra else [])]
            code = int(app_entry_point(module)(argv) or 0)
            conn.send(("exit", code, None))
        except BaseException as exc:  # reported to the supervisor as the job's error
            conn.send(("error", 1, f"{type(exc).__name__}: {exc}"))


@dataclass
class _Running:
    job: Job
    app: AppConfig
    started: float
    inputs: Path
    outputs: Path


def stop_child(process, conn: Connection, kill: bool = False) -> None:
    """End a worker process: ask it to leave (None on its pipe), or kill it; never wait > 10 s."""
    if kill:
        process.kill()
    else:
        try:
            conn.send(None)
        except (BrokenPipeError, OSError):
            pass
    process.join(timeout=5)
    if process.is_alive():
        process.kill()
        process.join(timeout=5)


class _Worker:
    def __init__(self, context: mp.context.BaseContext, index: int) -> None:
        self.index = index
        parent, child = context.Pipe()
        self.conn = parent
        self.process = context.Process(target=_worker_loop, args=(child,), name=f"dermpacs-worker-{index}", daemon=True)
        self.process.start()
        child.close()
        self.running: _Running | None = None

    def stop(self, kill: bool = False) -> None:
        stop_child(self.process, self.conn, kill)


class AppRunner:
    """Claims queued jobs, runs them in workers, and records outcomes in the store."""

    def __init__(self, config: ServiceConfig, store: JobStore, spool: Spool) -> None:
        self.config, self.store, self.spool = config, store, spool
        self._context = mp.get_context("spawn")  # no inherited threads or sockets from the service
        self._workers: list[_Worker] = []

    def start(self) -> None:
        self._workers = [_Worker(self._context, i) for i in range(self.config.workers)]

    def stop(self) -> None:
        for worker in self._workers:
            running = worker.running
            worker.stop(kill=running is not None)
            if running is not None:  # a graceful stop is not the job's fault: it does not use an attempt
                log.warning("job %d interrupted by shutdown; queued again", running.job.id)
                try:
                    self.store.requeue(running.job.id, "service stopped during analysis")
                except Exception:  # noqa: BLE001 - then recover_interrupted re-queues it at the next start
                    log.exception("could not re-queue job %d", running.job.id)
        self._workers = []

    def result_pipes(self) -> list[Connection]:
        """Pipes of busy workers: readable as soon as a job finishes (to wait on, not poll)."""
        return [w.conn for w in self._workers if w.running is not None]

    @property
    def busy(self) -> int:
        return sum(w.running is not None for w in self._workers)

    def poll(self) -> int:
        """One supervision round: collect finished jobs, enforce timeouts, start queued ones.

        Returns how many jobs finished (so the caller can wake the sender).
        """
        finished = 0
        for worker in list(self._workers):
            if worker.running is not None:
                finished += self._check(worker)
        for worker in self._workers:
            if worker.running is None:
                job = self.store.claim_next_job()
                if job is None:
                    break
                self._start(worker, job)
        return finished

    # -- internals ----------------------------------------------------------------------
    def _start(self, worker: _Worker, job: Job) -> None:
        app = self.config.apps.get(job.app)
        if app is None:
            self.store.fail_job(job.id, f"app {job.app!r} is not configured")
            return
        if not _module_exists(app.module):
            self.store.fail_job(job.id, f"app {job.app!r} (module {app.module}) is not installed in this release")
            return
        if job.attempts > 1 and self._adopt_finished_attempt(job, app):
            return
        try:
            inputs, outputs = self.spool.job_folder(job.id, job.attempts)
            for row in self.store.job_instances(job.id):
                target = inputs / Path(row["path"]).name
                if not target.exists():
                    try:
                        os.link(row["path"], target)  # same file system: no copy
                    except OSError:
                        shutil.copy2(row["path"], target)
        except OSError as exc:  # disk full, permissions: not the job's fault; it waits, its attempt refunded
            self.store.requeue(job.id, f"cannot prepare the job folder: {type(exc).__name__}: {exc}")
            raise
        priors = None
        if app.priors_model_name:
            from .priors import priors_request

            priors = priors_request(self.config, app.priors_model_name, self.store, job.id, job.app)
        worker.running = _Running(job, app, time.monotonic(), inputs, outputs)
        args = self._model_args(job.app) + option_args(job.app_options)
        worker.conn.send((app.module, str(inputs), str(outputs), args, priors))
        log.info("job %d: %s started on series %s (attempt %d)", job.id, job.app, job.series_instance_uid, job.attempts)

    def _model_args(self, app: str) -> list[str]:
        """``-m <models_dir>/active/<app>`` once a local model version is promoted (else the shipped one).

        Resolved per job, so a promotion or rollback (``dermpacs models``) applies to the next
        job without a restart; the app reloads only when the weights file changes.
        """
        active = self.config.models_dir / "active" / app
        return ["-m", str(active)] if active.exists() else []

    def _adopt_finished_attempt(self, job: Job, app: AppConfig) -> bool:
        """The previous attempt finished (results.json is the app's last write) but the node died
        before recording it: record that attempt instead of analysing again, so its results keep
        their SOP Instance UIDs and a PACS never gets two different results for one photograph."""
        previous = self.spool.jobs / f"{job.id:08d}" / f"attempt-{job.attempts - 1}"
        if not (previous / "out" / "results.json").is_file():
            return False
        self.store.requeue_as(job.id, job.attempts - 1)
        log.warning("job %d: attempt %d had finished before the restart; its results are used", job.id,
                    job.attempts - 1)
        self._record(_Running(job, app, time.monotonic(), previous / "in", previous / "out"), 0, None, 0.0)
        return True

    def _replace(self, worker: _Worker) -> None:
        worker.stop(kill=True)
        index = self._workers.index(worker)
        self._workers[index] = _Worker(self._context, worker.index)

    def _check(self, worker: _Worker) -> bool:
        running = worker.running
        assert running is not None
        elapsed = time.monotonic() - running.started
        if worker.conn.poll():
            try:
                kind, code, error = worker.conn.recv()
            except (EOFError, OSError):
                kind, code, error = "crash", -1, "the worker process died"
            worker.running = None
            if kind == "crash":
                self._replace(worker)
            self._record(running, code, error, elapsed)
            return True
        if not worker.process.is_alive():
            worker.running = None
            self._replace(worker)
            self._record(running, -1, f"the app process died (exit code {worker.process.exitcode})", elapsed)
            return True
        if elapsed > running.app.timeout_s:
            worker.running = None
            self._replace(worker)
            self._record(running, -1, f"timed out after {running.app.timeout_s:g} s", elapsed)
            return True
        return False

    def _record(self, running: _Running, code: int, error: str | None, elapsed: float,
                extra: dict[str, Any] | None = None) -> None:
        job = running.job
        _audit_priors(self.store, job.id, running.inputs)
        results = _read_results(running.outputs)
        details: dict[str, Any] = {"app": job.app, "duration_s": round(elapsed, 3), "exit_code": code, **(extra or {})}
        if results:
            details.update(
                model=results.get("algorithm", {}).get("name"),
                model_version=results.get("algorithm", {}).get("version"),
                weights_sha256=results.get("algorithm", {}).get("weights_sha256"),
            )
            for case in results.get("cases", []):
                if case.get("status") == "failed":
                    self.store.audit("analysis_failed", job_id=job.id, sop=case.get("sop_instance_uid"),
                                     source=case.get("source"), step=case.get("failed_step"), error=case.get("error"))
        outputs = _result_files(running.outputs)
        if error is None and outputs and results is None:
            error = "the app wrote results but no results.json (it did not finish)"
        partial = [c for c in (results or {}).get("cases", []) if c.get("status") == "failed" and c.get("outputs")]
        if error is None and partial:  # failed after writing part of its results (e.g. the overlay, disk full)
            case = partial[0]
            error = (f"partly failed: {case.get('source')} failed at {case.get('failed_step')} after writing "
                     f"{', '.join(case['outputs'])}: {case.get('error')}; nothing sent, `dermpacs retry` redoes it")
        if error is not None or (code != 0 and not outputs):
            reason = error or _first_error(results) or f"app exited with code {code}"
            log.error("job %d failed: %s", job.id, reason)
            self.store.fail_job(job.id, reason, **details)
            return
        failed = [c for c in (results or {}).get("cases", []) if c.get("status") == "failed"]
        if failed:
            details["error"] = f"{len(failed)} of {len(results['cases'])} photograph(s) not analysed: {failed[0]['error']}"
        self.store.finish_analysis(job.id, outputs, self.config.destination.describe(), details)
        log.info("job %d analysed in %.1f s: %d result file(s)", job.id, elapsed, len(outputs))


def _audit_priors(store: JobStore, job_id: int, inputs: Path) -> None:
    """One audit row per prior query the worker made (UIDs and counts, never patient data)."""
    from dicom.longitudinal import MANIFEST_NAME, PRIORS_FOLDER

    try:
        manifest = json.loads((inputs / PRIORS_FOLDER / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return
    for query in manifest.get("queries", []):
        store.audit("priors_query", job_id=job_id, source=manifest.get("source"), **query)
    store.audit("priors", job_id=job_id, status=manifest.get("status"), reason=manifest.get("reason"),
                waited_for_earlier_jobs=manifest.get("waited_for_earlier_jobs"),
                studies=[s["study_instance_uid"] for s in manifest.get("studies", [])],
                rejected=manifest.get("rejected"), seconds=manifest.get("seconds"))


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _read_results(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "results.json").read_text())
    except (OSError, ValueError):
        return None


def _first_error(results: dict[str, Any] | None) -> str | None:
    for case in (results or {}).get("cases", []):
        if case.get("error"):
            return f"{case.get('source')}: {case['error']}"
    return None


def _result_files(folder: Path) -> list[tuple[Path, str, str]]:
    """Every DICOM file the app wrote: (path, SOP Instance UID, SOP Class UID), from its meta group."""
    found = []
    for path in sorted(folder.rglob("*.dcm")):
        try:
            identity = read_file_identity(path)
            found.append((path, identity.sop_instance_uid, identity.sop_class_uid))
        except Exception as exc:  # an app that wrote a broken file: it is not sent
            log.error("result %s is not readable DICOM: %s", path.name, exc)
    return found
