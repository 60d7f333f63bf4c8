"""Retention: photographs and results are patient data, kept only as long as they are needed.

``purge`` removes, ``retention.keep_days`` after the fact:

* jobs whose results were all delivered (``done``) or that were superseded: their job
  folder (inputs, results, overlays, results.json) and the spool files of their
  photographs. The rows stay (state ``purged``, no path), so the audit trail stays whole
  and a photograph sent again is still recognised as a duplicate;
* earlier versions of changed instances;
* orphaned folders: attempt folders other than a job's current one, and job folders no
  job refers to (left by a crash or a lost job store).

Nothing that is not yet delivered is touched: waiting, running, sending, failed and
unrouted work stays until it is done or a person decides. Run by ``dermpacs purge`` and
daily by the running node.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from .spool import Spool
from .store import JobStore

log = logging.getLogger("dermpacs.retention")


def _remove(path: Path, dry_run: bool) -> bool:
    if not path.exists():
        return False
    if not dry_run:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return True


def purge(store: JobStore, spool: Spool, keep_days: float, now: float | None = None,
          dry_run: bool = False) -> dict[str, Any]:
    """Remove what the retention policy no longer keeps; returns what was (or would be) removed."""
    now = time.time() if now is None else now
    before = now - keep_days * 86400
    report: dict[str, Any] = {"jobs": [], "photographs": 0, "earlier_versions": 0, "orphaned_folders": 0,
                              "dry_run": dry_run, "keep_days": keep_days}
    for job_id, paths in store.purgeable_jobs(before):
        _remove(spool.jobs / f"{job_id:08d}", dry_run)
        report["photographs"] += sum(_remove(Path(p), dry_run) for p in paths if p)
        if not dry_run:
            store.mark_purged(job_id)
        report["jobs"].append(job_id)
    for uid, version, path in store.superseded_files(before):
        if _remove(Path(path), dry_run):
            report["earlier_versions"] += 1
        if not dry_run:
            store.mark_version_purged(uid, version)
    current = store.current_attempts()  # job id -> attempt folder in use
    for job_dir in sorted(spool.jobs.iterdir()) if spool.jobs.is_dir() else []:
        if not job_dir.name.isdigit() or job_dir.stat().st_mtime > before:
            continue
        job_id = int(job_dir.name)
        if job_id not in current:
            report["orphaned_folders"] += _remove(job_dir, dry_run)
            continue
        for attempt in job_dir.glob("attempt-*"):
            if attempt.name != f"attempt-{current[job_id]}" and attempt.stat().st_mtime <= before:
                report["orphaned_folders"] += _remove(attempt, dry_run)
    if not dry_run and (report["jobs"] or report["earlier_versions"] or report["orphaned_folders"]):
        store.audit("purged", jobs=report["jobs"], photographs=report["photographs"],
                    earlier_versions=report["earlier_versions"], orphaned_folders=report["orphaned_folders"],
                    keep_days=keep_days)
        log.info("purged %d delivered job(s), %d photograph(s), %d earlier version(s), %d orphaned folder(s)",
                 len(report["jobs"]), report["photographs"], report["earlier_versions"], report["orphaned_folders"])
    return report


__all__ = ["purge"]
