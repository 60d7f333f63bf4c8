"""The switch between local analysis and the Celery queue, and the shared folder both sides use.

The scheduler talks to a *runner*: ``start``, ``stop``, ``poll`` (collect finished jobs,
start queued ones; returns how many finished), ``result_pipes`` and ``busy``.
``AppRunner`` (runner.py) runs jobs in local processes; ``CeleryQueue`` (celery_queue.py)
hands them to ``dermpacs worker`` processes on other hosts. The job store stays the record
of truth either way.

With Celery, only job ids go through the broker. Everything else goes through the shared
folder (NFS in production), laid out so that every write is a rename of a finished file
or folder, and so that no two runs of one job ever write the same path::

    SHARED/jobs/00000042/job.json            what to run (app, input SOP Instance UIDs, app options)
    SHARED/jobs/00000042/in/*.dcm            the inputs, written by the listener
    SHARED/jobs/00000042/runs/RUN/           one run's results, published by a worker
    SHARED/jobs/00000042/accepted            the run the listener took (later runs are dropped)
    SHARED/completions/00000042-RUN.json     a worker's report: "run RUN of job 42 ended"
    SHARED/workers/NAME.json                 a worker's heartbeat: host, apps, GPU, jobs
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from .config import ServiceConfig
from .spool import Spool, atomic_write, fsync_directory
from .store import JobStore


def make_runner(config: ServiceConfig, store: JobStore, spool: Spool):
    """The runner the ``queue`` section selects (local processes unless ``backend: celery``)."""
    if config.queue.celery:
        from .celery_queue import CeleryQueue

        return CeleryQueue(config, store, spool)
    from .runner import AppRunner

    return AppRunner(config, store, spool)


def idempotency_key(sop_instance_uids: Iterable[str], app: str, model_version: str | None) -> str:
    """Names one analysis: the same photographs, app and model give the same results.

    Two completions with one key are the same work done twice (a redelivered job): the
    first is kept and the second recorded and dropped.
    """
    text = "\n".join([app, str(model_version or ""), *sorted(sop_instance_uids)])
    return hashlib.sha256(text.encode()).hexdigest()


def write_json(path: Path, data: dict[str, Any]) -> Path:
    return atomic_write(path, json.dumps(data, sort_keys=True, default=str).encode())


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def publish_folder(source: Path, target: Path) -> Path:
    """Copy ``source`` to ``target`` so that ``target`` appears complete or not at all."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return commit_folder(tmp, target)


def commit_folder(tmp: Path, target: Path) -> Path:
    """Make a filled temporary folder (beside ``target``) durable, then rename it into place."""
    try:
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_directory(target.parent)
    return target


class SharedDir:
    """The layout of the shared folder (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.jobs = self.root / "jobs"
        self.completions = self.root / "completions"
        self.workers = self.root / "workers"

    def create(self) -> "SharedDir":
        for folder in (self.jobs, self.completions, self.workers):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def job_dir(self, job_id: int) -> Path:
        return self.jobs / f"{int(job_id):08d}"

    def inputs(self, job_id: int) -> Path:
        return self.job_dir(job_id) / "in"

    def run_dir(self, job_id: int, run_id: str) -> Path:
        return self.job_dir(job_id) / "runs" / run_id

    # -- listener side ----------------------------------------------------------------------
    def publish_model(self, app: str, active: Path) -> Path | None:
        """A locally promoted model version (``models/active/<app>``), copied once for the workers."""
        if not active.exists():
            return None
        version = active.resolve()
        target = self.root / "models" / app / version.name
        if not target.exists():
            publish_folder(version, target)
        return target

    def prepare(self, job_id: int, app: str, sop_instance_uids: list[str], files: list[Path],
                model_dir: Path | None = None, app_options: dict[str, str] | None = None) -> None:
        """Inputs and job.json of a queued job: new, or put back by `dermpacs retry` (then the
        earlier accepted run no longer stands and its inputs were removed). ``app_options``:
        the job's (its routing rule's), passed by the worker as ``--option KEY=VALUE``."""
        (self.job_dir(job_id) / "accepted").unlink(missing_ok=True)
        inputs = self.inputs(job_id)
        if not inputs.exists():
            inputs.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=inputs.parent, prefix=".in-"))
            try:
                for path in files:
                    shutil.copyfile(path, staging / Path(path).name)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            commit_folder(staging, inputs)
        if not (self.job_dir(job_id) / "job.json").exists():  # last: its presence says the inputs are complete
            write_json(self.job_dir(job_id) / "job.json", {"job_id": job_id, "app": app,
                                                           "sop_instance_uids": sop_instance_uids,
                                                           "model_dir": str(model_dir) if model_dir else None,
                                                           "app_options": dict(app_options or {}),
                                                           "created_at": time.time()})

    def accept(self, job_id: int, run_id: str) -> None:
        """Mark ``run_id`` as the job's result; its inputs and other runs are no longer needed."""
        write_json(self.job_dir(job_id) / "accepted", {"run_id": run_id, "at": time.time()})
        shutil.rmtree(self.inputs(job_id), ignore_errors=True)
        shutil.rmtree(self.job_dir(job_id) / "runs", ignore_errors=True)

    def remove_jobs(self, job_ids: Iterable[int]) -> None:
        """Forget purged jobs (`dermpacs purge`): a late redelivery then finds no job.json and fails."""
        for job_id in job_ids:
            shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def pending_completions(self) -> list[Path]:
        return sorted(self.completions.glob("*.json"), key=lambda p: p.name)

    def heartbeats(self) -> list[dict[str, Any]]:
        beats = []
        for path in sorted(self.workers.glob("*.json")):
            beat = read_json(path)
            if beat:
                beats.append(beat)
        return beats

    # -- worker side ------------------------------------------------------------------------
    def job(self, job_id: int) -> dict[str, Any] | None:
        return read_json(self.job_dir(job_id) / "job.json")

    def accepted(self, job_id: int) -> dict[str, Any] | None:
        return read_json(self.job_dir(job_id) / "accepted")

    def complete(self, job_id: int, run_id: str, report: dict[str, Any]) -> Path:
        """The worker's last word on a run; the listener picks it up on its next round."""
        return write_json(self.completions / f"{int(job_id):08d}-{run_id}.json",
                          {**report, "job_id": job_id, "run_id": run_id})

    def beat(self, name: str, state: dict[str, Any]) -> None:
        """Replace the worker's heartbeat file (rename, no fsync: a beat lost in a crash is replaced by the next)."""
        path = self.workers / f"{_safe_name(name)}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**state, "name": name, "last_seen": time.time()}, sort_keys=True, default=str))
        os.replace(tmp, path)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in name)[:120]
