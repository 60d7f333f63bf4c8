"""Opening the job store safely: checked at start-up, rebuilt from the spool when lost.

The spool is the ground truth of what was acknowledged (a file is durable before its
C-STORE success) and the job folders hold what was analysed. If the database is missing
or damaged while the spool holds work, starting with an empty store would silently drop
acknowledged photographs and undelivered results, so instead:

* a damaged database (``PRAGMA integrity_check`` fails, or it is not a database) is moved
  aside (``dermpacs.sqlite3.damaged-<time>``, with its -wal/-shm), never deleted;
* a new store is rebuilt: every spooled instance is recorded again; a job folder whose
  latest attempt finished (``results.json`` written) becomes a job in state ``sending``
  with its result files in the outbox under their own SOP Instance UIDs (a PACS that
  already has them deduplicates: delivery is at-least-once by UID); every instance no
  finished job covers is queued for analysis.
* if the rebuild itself fails the node refuses to start, saying what to do.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from pathlib import Path

import pydicom

from .config import ServiceConfig
from .router import routing_header
from .spool import Spool, is_valid_uid
from .store import JobStore, ReceivedInstance

log = logging.getLogger("dermpacs.recovery")


class StoreUnusable(RuntimeError):
    """The job store cannot be opened or rebuilt; the message says what to do."""


def integrity_problem(database: Path) -> str | None:
    """None when ``database`` passes ``PRAGMA integrity_check``, else what is wrong."""
    try:
        db = sqlite3.connect(database, timeout=30)
        try:
            rows = [r[0] for r in db.execute("PRAGMA integrity_check(20)")]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if rows == ["ok"] else "; ".join(rows)[:500]


def _version_order(path: Path) -> tuple[str, int]:
    """``<hash>.dcm`` is version 1, ``<hash>.v<n>.dcm`` version n: replayed in that order."""
    stem, _, version = path.name[:-4].partition(".v")
    return stem, int(version) if version.isdigit() else 1


def _spool_files(spool: Spool) -> list[Path]:
    return sorted((p for p in spool.instances.rglob("*.dcm") if not p.name.startswith(".")), key=_version_order)


def _quarantine(database: Path, why: str = "damaged") -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = database.with_name(f"{database.name}.{why}-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(str(database) + suffix)
        if part.exists():
            part.rename(Path(str(moved) + suffix))
    return moved


def open_job_store(config: ServiceConfig, spool: Spool) -> JobStore:
    """The job store, checked; rebuilt from the spool when missing or damaged over unfinished work.

    Raises ``StoreUnusable`` (the node must not start) when it can be neither opened nor rebuilt.
    """
    try:
        return _open_job_store(config, spool)
    except StoreUnusable:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. the data folder is not writable
        raise StoreUnusable(
            f"the job store {config.database} cannot be opened or checked ({type(exc).__name__}: {exc}). Nothing "
            "was deleted. Fix the cause (permissions, free space, the file system), then start again."
        ) from exc


def _open_job_store(config: ServiceConfig, spool: Spool) -> JobStore:
    database = config.database
    work = _spool_files(spool)
    if database.exists():
        problem = integrity_problem(database)
        if problem is None:
            store = JobStore(database)
            if not work or store.instance_count() > 0:
                return store
            reason = "the job store is empty but the spool holds acknowledged instances"
            log.error("%s (%d): rebuilding from the spool", reason, len(work))
        else:
            moved = _quarantine(database)
            reason = f"the job store failed its integrity check ({problem}); moved to {moved.name}"
            log.error("%s: %s", reason, "rebuilding from the spool" if work else "starting a new one")
            store = JobStore(database)
            if not work:
                store.audit("store_rebuilt", reason=reason, instances=0, jobs=0)
                return store
    else:
        for suffix in ("-wal", "-shm"):  # a WAL without its database must not be replayed into a new one
            Path(str(database) + suffix).unlink(missing_ok=True)
        store = JobStore(database)
        if not work:
            return store
        reason = "the job store is missing"
        log.error("%s but the spool holds %d acknowledged instance(s): rebuilding from the spool", reason, len(work))
    try:
        report = rebuild_from_spool(store, spool, config)
    except Exception as exc:
        store.close()
        partial = _quarantine(database, "incomplete")  # the next start rebuilds from scratch, never from half
        raise StoreUnusable(
            f"{reason}, and rebuilding it from {spool.root} failed ({type(exc).__name__}: {exc}); the partial "
            f"rebuild was moved to {partial.name}. Nothing was deleted. Fix the cause and start again (the "
            "rebuild is repeated), or restore the database from a backup."
        ) from exc
    store.audit("store_rebuilt", reason=reason, **report)
    log.warning("job store rebuilt: %(instances)d instance(s), %(jobs)d finished job(s) with %(results)d result(s) "
                "to resend, %(to_analyse)d instance(s) to analyse, %(unreadable)d unreadable", report)
    return store


def _finished_attempts(spool: Spool) -> dict[int, Path]:
    """job id -> the output folder of its latest attempt that wrote results.json."""
    found: dict[int, Path] = {}
    for job_dir in sorted(spool.jobs.iterdir()) if spool.jobs.is_dir() else []:
        if not job_dir.name.isdigit():
            continue
        attempts = sorted((p for p in job_dir.glob("attempt-*") if p.name[8:].isdigit()),
                          key=lambda p: int(p.name[8:]))
        for attempt in reversed(attempts):
            if (attempt / "out" / "results.json").is_file():
                found[int(job_dir.name)] = attempt
                break
    return found


def _max_job_folder(spool: Spool) -> int:
    ids = [int(p.name) for p in spool.jobs.iterdir() if p.name.isdigit()] if spool.jobs.is_dir() else []
    return max(ids, default=0)


def rebuild_from_spool(store: JobStore, spool: Spool, config: ServiceConfig) -> dict[str, int]:
    """Record every spooled instance and every finished job again (see the module docstring)."""
    from .runner import _read_results, _result_files  # the runner's own reading of an output folder

    by_name: dict[str, str] = {}  # spool file name -> SOP Instance UID
    current: dict[str, str] = {}  # SOP Instance UID -> file name of its latest version
    unreadable = 0
    for path in _spool_files(spool):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            uids = {kw: str(ds.get(kw, "") or "") for kw in
                    ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")}
            if not all(is_valid_uid(v) for v in uids.values()):
                raise ValueError("invalid UIDs")
            header = routing_header(ds)
        except Exception as exc:  # noqa: BLE001 - reported, left in place for a person to look at
            unreadable += 1
            log.error("spool file %s cannot be read (%s); left in place", path.name, type(exc).__name__)
            continue
        data = path.read_bytes()
        store.add_instance(ReceivedInstance(
            sop_instance_uid=uids["SOPInstanceUID"], sop_class_uid=uids["SOPClassUID"],
            study_instance_uid=uids["StudyInstanceUID"], series_instance_uid=uids["SeriesInstanceUID"],
            path=path, sha256=hashlib.sha256(data).hexdigest(), size=len(data), calling_ae="",
            called_ae=config.ae_title, peer="", header=header), event="restored")
        by_name[path.name] = uids["SOPInstanceUID"]
        current[uids["SOPInstanceUID"]] = path.name  # a later version replaces an earlier one

    jobs = results = 0
    destination = config.destination.describe()
    for job_id, attempt in _finished_attempts(spool).items():
        # only jobs that analysed the current version of each of their photographs are restored
        names = [p.name for p in sorted((attempt / "in").glob("*.dcm"))]
        if not names or any(n not in by_name or current[by_name[n]] != n for n in names):
            continue
        members = [by_name[n] for n in names]
        report = _read_results(attempt / "out") or {}
        if any(c.get("status") == "failed" and c.get("outputs") for c in report.get("cases", [])):
            continue  # partly failed (see runner._record): analysed again, nothing of it sent
        outputs = _result_files(attempt / "out")
        store.restore_job(job_id, members, str(report.get("app") or "unknown"), int(attempt.name[8:]),
                          outputs, destination)
        jobs += 1
        results += len(outputs)
    store.reserve_job_ids(_max_job_folder(spool))  # new jobs never reuse an old job's folder
    waiting = store.status()["instances"].get("received", 0)
    return {"instances": len(current), "jobs": jobs, "results": results, "to_analyse": waiting,
            "unreadable": unreadable}


__all__ = ["StoreUnusable", "integrity_problem", "open_job_store", "rebuild_from_spool"]
