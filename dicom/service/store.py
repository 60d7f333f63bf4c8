"""The durable job store: instances, jobs, the results outbox and the audit trail, in SQLite.

One file under the data dir, WAL journal with ``synchronous=FULL``: a row committed before
the C-STORE response is on disk. All state transitions happen in single transactions, so a
crash at any instant leaves either the old or the new state, never half of both.
The audit table refuses UPDATE and DELETE (triggers): it is append-only by construction.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    calling_ae TEXT, called_ae TEXT, peer TEXT,
    header TEXT NOT NULL,              -- JSON: the attributes routing rules look at
    received_at REAL NOT NULL,
    state TEXT NOT NULL,               -- received | queued | unrouted
    job_id INTEGER
);
CREATE INDEX IF NOT EXISTS instances_waiting ON instances(state, series_instance_uid);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    app TEXT NOT NULL,
    rule TEXT NOT NULL,
    state TEXT NOT NULL,               -- queued | running | sending | done | failed | superseded
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    path TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL,               -- pending | sent | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_at);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,                  -- ISO 8601 UTC
    event TEXT NOT NULL,               -- received | duplicate | rejected | routed | unrouted | started
                                       -- | analysed | analysis_failed | sent | send_failed | retried
    job_id INTEGER,
    sop_instance_uid TEXT,
    details TEXT NOT NULL              -- JSON; UIDs and technical facts only, never patient data
);
CREATE TABLE IF NOT EXISTS superseded_instances (  -- earlier versions of a changed instance, kept
    sop_instance_uid TEXT NOT NULL,
    version INTEGER NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    received_at REAL NOT NULL,
    job_id INTEGER,                    -- the job that analysed it (now superseded)
    superseded_at REAL NOT NULL,
    PRIMARY KEY (sop_instance_uid, version)
);
CREATE TRIGGER IF NOT EXISTS audit_is_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_is_append_only_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""


@dataclass(frozen=True)
class ReceivedInstance:
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    path: Path
    sha256: str
    size: int
    calling_ae: str
    called_ae: str
    peer: str
    header: dict[str, Any]


@dataclass(frozen=True)
class Job:
    id: int
    study_instance_uid: str
    series_instance_uid: str
    app: str
    rule: str
    state: str
    attempts: int
    error: str | None
    # The routing rule's app_options as they were when the job was routed: a retry or a
    # restart runs it the same way, whatever the configuration says by then.
    app_options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxItem:
    id: int
    job_id: int
    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    destination: str
    attempts: int


def utc_now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class JobStore:
    """Thread-safe access to the service's SQLite database (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._migrate()
        self._lock = threading.RLock()

    def _migrate(self) -> None:
        """Columns added after the first release, added to an existing database in place."""
        added = {"instances": [("version", "INTEGER NOT NULL DEFAULT 1")],
                 "jobs": [("superseded_at", "REAL"), ("purged_at", "REAL"),
                          ("app_options", "TEXT NOT NULL DEFAULT '{}'")]}  # JSON: the rule's app_options
        for table, columns in added.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, decl in columns:
                if name not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _audit(db: sqlite3.Connection, event: str, job_id: int | None = None, sop: str | None = None, **details: Any) -> None:
        db.execute(
            "INSERT INTO audit(at, event, job_id, sop_instance_uid, details) VALUES (?,?,?,?,?)",
            (utc_now_iso(), event, job_id, sop, json.dumps(details, sort_keys=True, default=str)),
        )

    def audit(self, event: str, job_id: int | None = None, sop: str | None = None, **details: Any) -> None:
        with self._transaction() as db:
            self._audit(db, event, job_id, sop, **details)

    # -- receiving ------------------------------------------------------------------------
    def add_instance(self, item: ReceivedInstance, event: str = "received") -> str:
        """Record a spooled instance: ``added``; ``duplicate`` (same UID, same bytes: nothing
        changes); or ``new_version`` (same UID, other bytes: ``item`` becomes the current version,
        the earlier one is kept in superseded_instances, and its series is analysed again)."""
        now = time.time()
        with self._transaction() as db:
            seen = db.execute("SELECT * FROM instances WHERE sop_instance_uid=?", (item.sop_instance_uid,)).fetchone()
            if seen is not None and seen["sha256"] == item.sha256:
                self._audit(db, "duplicate", sop=item.sop_instance_uid, calling_ae=item.calling_ae,
                            sha256=item.sha256, same_content=True)
                return "duplicate"
            if seen is not None:
                self._new_version(db, seen, item, now)
                return "new_version"
            db.execute(
                "INSERT INTO instances(sop_instance_uid, sop_class_uid, study_instance_uid, series_instance_uid, path, "
                "sha256, size, calling_ae, called_ae, peer, header, received_at, state, job_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (item.sop_instance_uid, item.sop_class_uid, item.study_instance_uid, item.series_instance_uid,
                 str(item.path), item.sha256, item.size, item.calling_ae, item.called_ae, item.peer,
                 json.dumps(item.header), now, "received", None),
            )
            self._audit(db, event, sop=item.sop_instance_uid, calling_ae=item.calling_ae, peer=item.peer,
                        called_ae=item.called_ae, sop_class_uid=item.sop_class_uid,
                        series_instance_uid=item.series_instance_uid, sha256=item.sha256, size=item.size)
            return "added"

    def _new_version(self, db: sqlite3.Connection, seen: sqlite3.Row, item: ReceivedInstance, now: float) -> None:
        version = int(seen["version"]) + 1
        db.execute("INSERT INTO superseded_instances VALUES (?,?,?,?,?,?,?,?)",
                   (seen["sop_instance_uid"], seen["version"], seen["path"], seen["sha256"], seen["size"],
                    seen["received_at"], seen["job_id"], now))
        old_job = seen["job_id"]
        if old_job is not None:  # what that job analysed goes round again, with the new version
            db.execute("UPDATE instances SET state='received', job_id=NULL, received_at=? WHERE job_id=?",
                       (now, old_job))
            self._supersede_job(db, old_job, now)
        db.execute(
            "UPDATE instances SET sop_class_uid=?, study_instance_uid=?, series_instance_uid=?, path=?, sha256=?, "
            "size=?, calling_ae=?, called_ae=?, peer=?, header=?, received_at=?, state='received', job_id=NULL, "
            "version=? WHERE sop_instance_uid=?",
            (item.sop_class_uid, item.study_instance_uid, item.series_instance_uid, str(item.path), item.sha256,
             item.size, item.calling_ae, item.called_ae, item.peer, json.dumps(item.header), now, version,
             item.sop_instance_uid))
        self._audit(db, "new_version", sop=item.sop_instance_uid, calling_ae=item.calling_ae, peer=item.peer,
                    version=version, sha256=item.sha256, previous_sha256=seen["sha256"], superseded_job=old_job,
                    series_instance_uid=item.series_instance_uid, size=item.size)

    def _supersede_job(self, db: sqlite3.Connection, job_id: int, now: float) -> None:
        """Its results describe an earlier version: undelivered ones are not sent; a running job
        finishes as superseded."""
        row = db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            return
        state = "running" if row["state"] == "running" else "superseded"
        db.execute("UPDATE jobs SET state=?, superseded_at=?, updated_at=? WHERE id=?", (state, now, now, job_id))
        cancelled = db.execute("UPDATE outbox SET state='superseded' WHERE job_id=? AND state IN ('pending','failed')",
                               (job_id,)).rowcount
        self._audit(db, "superseded", job_id=job_id, undelivered_results_cancelled=cancelled)

    def current_digest(self, sop_instance_uid: str) -> tuple[str, int] | None:
        """(sha256, version) of the instance's current version, or None if unknown."""
        with self._lock:
            row = self._db.execute("SELECT sha256, version FROM instances WHERE sop_instance_uid=?",
                                   (sop_instance_uid,)).fetchone()
        return None if row is None else (row[0], int(row[1]))

    def instance_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM instances").fetchone()[0])

    def restore_job(self, job_id: int, sop_uids: list[str], app: str, attempts: int,
                    outputs: list[tuple[Path, str, str]], destination: str) -> None:
        """Rebuild: a job whose analysis had finished, under its old id, its results queued again."""
        now = time.time()
        with self._transaction() as db:
            marks = ",".join("?" * len(sop_uids))
            first = db.execute(f"SELECT study_instance_uid, series_instance_uid FROM instances "
                               f"WHERE sop_instance_uid IN ({marks})", sop_uids).fetchone()
            db.execute(
                "INSERT INTO jobs(id, study_instance_uid, series_instance_uid, app, rule, state, attempts, created_at, "
                "updated_at) VALUES (?,?,?,?, 'rebuilt', ?, ?, ?, ?)",
                (job_id, first[0], first[1], app, "sending" if outputs else "done", attempts, now, now))
            db.executemany("UPDATE instances SET state='queued', job_id=? WHERE sop_instance_uid=?",
                           [(job_id, uid) for uid in sop_uids])
            for path, sop_uid, sop_class in outputs:
                db.execute(
                    "INSERT INTO outbox(job_id, path, sop_instance_uid, sop_class_uid, destination, state, "
                    "next_attempt_at) VALUES (?,?,?,?,?, 'pending', ?)",
                    (job_id, str(path), sop_uid, sop_class, destination, now))
            self._audit(db, "restored_job", job_id=job_id, app=app, sop_instance_uids=sop_uids,
                        result_sop_instance_uids=[o[1] for o in outputs])

    def reserve_job_ids(self, highest: int) -> None:
        """New jobs get ids above ``highest`` (their folders must not be an old job's)."""
        with self._transaction() as db:
            if not db.execute("UPDATE sqlite_sequence SET seq=MAX(seq, ?) WHERE name='jobs'", (highest,)).rowcount:
                db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('jobs', ?)", (highest,))

    def known_instance(self, sop_instance_uid: str) -> bool:
        with self._lock:
            return self._db.execute(
                "SELECT 1 FROM instances WHERE sop_instance_uid=?", (sop_instance_uid,)
            ).fetchone() is not None

    # -- grouping and routing -------------------------------------------------------------
    def settled_series(self, stable_seconds: float, now: float | None = None) -> list[str]:
        """Series with waiting instances and no new arrival for ``stable_seconds``."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT series_instance_uid FROM instances WHERE state='received' "
                "GROUP BY series_instance_uid HAVING MAX(received_at) <= ?",
                (now - stable_seconds,),
            ).fetchall()
        return [r[0] for r in rows]

    def next_settle_time(self, stable_seconds: float) -> float | None:
        """When the earliest still-collecting series will have been quiet for ``stable_seconds``."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(last) FROM (SELECT MAX(received_at) AS last FROM instances "
                "WHERE state='received' GROUP BY series_instance_uid)"
            ).fetchone()
        return None if row[0] is None else row[0] + stable_seconds

    def waiting_instances(self, series_instance_uid: str) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(
                "SELECT * FROM instances WHERE state='received' AND series_instance_uid=? ORDER BY received_at",
                (series_instance_uid,),
            ).fetchall()

    def create_job(self, study_uid: str, series_uid: str, app: str, rule: str, sop_uids: list[str],
                   app_options: Mapping[str, str] | None = None) -> int:
        """A queued job; ``app_options`` (the rule's) are kept with it and audited with the routing."""
        now = time.time()
        options = dict(app_options or {})
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO jobs(study_instance_uid, series_instance_uid, app, rule, state, created_at, updated_at, "
                "app_options) VALUES (?,?,?,?, 'queued', ?, ?, ?)",
                (study_uid, series_uid, app, rule, now, now, json.dumps(options, sort_keys=True)),
            )
            job_id = int(cursor.lastrowid)
            db.executemany(
                "UPDATE instances SET state='queued', job_id=? WHERE sop_instance_uid=?",
                [(job_id, uid) for uid in sop_uids],
            )
            self._audit(db, "routed", job_id=job_id, app=app, rule=rule, series_instance_uid=series_uid,
                        sop_instance_uids=sop_uids, **({"app_options": options} if options else {}))
        return job_id

    def mark_unrouted(self, sop_uids: list[str], reason: str) -> None:
        with self._transaction() as db:
            for uid in sop_uids:
                db.execute("UPDATE instances SET state='unrouted' WHERE sop_instance_uid=?", (uid,))
                self._audit(db, "unrouted", sop=uid, reason=reason)

    # -- running --------------------------------------------------------------------------
    def claim_next_job(self) -> Job | None:
        """The oldest queued job, now marked running (its attempt counted)."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE state='queued' ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state='running', attempts=attempts+1, updated_at=? WHERE id=?", (time.time(), row["id"])
            )
            self._audit(db, "started", job_id=row["id"], app=row["app"], attempt=row["attempts"] + 1)
        return self.job(row["id"])

    def job(self, job_id: int) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            return None
        return Job(row["id"], row["study_instance_uid"], row["series_instance_uid"], row["app"], row["rule"],
                   row["state"], row["attempts"], row["error"], json.loads(row["app_options"] or "{}"))

    def unfinished_jobs(self, app: str, before_id: int) -> list[int]:
        """Earlier jobs of ``app`` whose results are not yet delivered (queued, running, sending)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE app=? AND id<? AND state IN ('queued','running','sending') ORDER BY id",
                (app, before_id),
            ).fetchall()
        return [r[0] for r in rows]

    def job_states(self, job_ids: list[int]) -> dict[int, str]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, state FROM jobs WHERE id IN ({','.join('?' * len(job_ids))})", job_ids
            ).fetchall() if job_ids else []
        return {r[0]: r[1] for r in rows}

    def job_instances(self, job_id: int) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(
                "SELECT * FROM instances WHERE job_id=? ORDER BY received_at", (job_id,)
            ).fetchall()

    def finish_analysis(self, job_id: int, outputs: list[tuple[Path, str, str]], destination: str,
                        analysis: dict[str, Any]) -> None:
        """Atomically: audit the analysis and queue every result file in the outbox."""
        now = time.time()
        with self._transaction() as db:
            superseded = self._is_superseded(db, job_id)
            for path, sop_uid, sop_class in outputs:
                db.execute(
                    "INSERT INTO outbox(job_id, path, sop_instance_uid, sop_class_uid, destination, state, "
                    "next_attempt_at) VALUES (?,?,?,?,?, ?, ?)",
                    (job_id, str(path), sop_uid, sop_class, destination, "superseded" if superseded else "pending",
                     now),
                )
            state = "superseded" if superseded else "sending" if outputs else "done"
            db.execute("UPDATE jobs SET state=?, error=?, updated_at=? WHERE id=?",
                       (state, analysis.get("error"), now, job_id))
            self._audit(db, "analysed", job_id=job_id, result_sop_instance_uids=[o[1] for o in outputs], **analysis)

    @staticmethod
    def _is_superseded(db: sqlite3.Connection, job_id: int) -> bool:
        row = db.execute("SELECT superseded_at FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row is not None and row[0] is not None

    def fail_job(self, job_id: int, error: str, **details: Any) -> None:
        with self._transaction() as db:
            state = "superseded" if self._is_superseded(db, job_id) else "failed"
            db.execute("UPDATE jobs SET state=?, error=?, updated_at=? WHERE id=?", (state, error, time.time(), job_id))
            self._audit(db, "analysis_failed", job_id=job_id, error=error, **details)

    def requeue(self, job_id: int, reason: str) -> None:
        """A running job goes back to the queue without using up an attempt (the node stopped it, or
        could not start it); audited as ``retried``."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state=CASE WHEN superseded_at IS NULL THEN 'queued' ELSE 'superseded' END, "
                       "attempts=MAX(attempts-1, 0), updated_at=? WHERE id=? AND state='running'", (time.time(), job_id))
            self._audit(db, "retried", job_id=job_id, reason=reason, attempt_refunded=True)

    def requeue_as(self, job_id: int, attempt: int) -> None:
        """The running job is recorded as its earlier ``attempt`` (which had finished)."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET attempts=? WHERE id=? AND state='running'", (attempt, job_id))
            self._audit(db, "retried", job_id=job_id, reason=f"attempt {attempt} had finished; its results used")

    def recover_interrupted(self, max_attempts: int) -> list[int]:
        """After a crash: jobs left 'running' run again (or fail once out of attempts)."""
        with self._transaction() as db:
            rows = db.execute("SELECT id, attempts, superseded_at FROM jobs WHERE state='running'").fetchall()
            for row in rows:
                if row["superseded_at"] is not None:
                    db.execute("UPDATE jobs SET state='superseded', updated_at=? WHERE id=?", (time.time(), row["id"]))
                elif row["attempts"] >= max_attempts:
                    db.execute("UPDATE jobs SET state='failed', error=?, updated_at=? WHERE id=?",
                               (f"interrupted {row['attempts']} times", time.time(), row["id"]))
                    self._audit(db, "analysis_failed", job_id=row["id"], error="interrupted too often")
                else:
                    db.execute("UPDATE jobs SET state='queued', updated_at=? WHERE id=?", (time.time(), row["id"]))
                    self._audit(db, "retried", job_id=row["id"], reason="service restarted during analysis")
        return [r["id"] for r in rows]

    # -- sending --------------------------------------------------------------------------
    def due_outbox(self, now: float | None = None, limit: int = 50) -> list[OutboxItem]:
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM outbox WHERE state='pending' AND next_attempt_at <= ? ORDER BY id LIMIT ?", (now, limit)
            ).fetchall()
        return [OutboxItem(r["id"], r["job_id"], Path(r["path"]), r["sop_instance_uid"], r["sop_class_uid"],
                           r["destination"], r["attempts"]) for r in rows]

    def next_outbox_time(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(next_attempt_at) FROM outbox WHERE state='pending'").fetchone()
        return row[0]

    def mark_sent(self, item: OutboxItem, status: str = "0x0000") -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute("UPDATE outbox SET state='sent', attempts=attempts+1, sent_at=?, last_error=NULL WHERE id=?",
                       (now, item.id))
            self._audit(db, "sent", job_id=item.job_id, sop=item.sop_instance_uid, destination=item.destination,
                        status=status, attempt=item.attempts + 1)
            left = db.execute("SELECT COUNT(*) FROM outbox WHERE job_id=? AND state!='sent'", (item.job_id,)).fetchone()[0]
            if left == 0:
                db.execute("UPDATE jobs SET state='done', updated_at=? WHERE id=? AND state='sending'", (now, item.job_id))

    def mark_send_failed(self, item: OutboxItem, error: str, retry_at: float | None) -> None:
        """A failed C-STORE/STOW: retry at ``retry_at``, or give up (None) and fail the job."""
        now = time.time()
        with self._transaction() as db:
            if retry_at is None:
                db.execute("UPDATE outbox SET state='failed', attempts=attempts+1, last_error=? WHERE id=?", (error, item.id))
                db.execute("UPDATE jobs SET state='failed', error=?, updated_at=? WHERE id=?",
                           (f"results not delivered to {item.destination}: {error}", now, item.job_id))
            else:
                db.execute("UPDATE outbox SET attempts=attempts+1, last_error=?, next_attempt_at=? WHERE id=?",
                           (error, retry_at, item.id))
            self._audit(db, "send_failed", job_id=item.job_id, sop=item.sop_instance_uid, destination=item.destination,
                        error=error, attempt=item.attempts + 1, gave_up=retry_at is None)

    # -- operations -----------------------------------------------------------------------
    def retry(self, job_id: int | None = None) -> list[int]:
        """Failed jobs (one, or all when None) go again: undelivered results resend, else re-analyse."""
        now = time.time()
        with self._transaction() as db:
            if job_id is None:
                ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE state='failed'")]
            else:
                row = db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
                if row is None:
                    raise KeyError(f"no job {job_id}")
                ids = [job_id] if row["state"] == "failed" else []
            for jid in ids:
                undelivered = db.execute(
                    "UPDATE outbox SET state='pending', attempts=0, next_attempt_at=? WHERE job_id=? AND state='failed'",
                    (now, jid),
                ).rowcount
                if undelivered:
                    db.execute("UPDATE jobs SET state='sending', updated_at=? WHERE id=?", (now, jid))
                else:
                    db.execute("DELETE FROM outbox WHERE job_id=? AND state='pending'", (jid,))
                    db.execute("UPDATE jobs SET state='queued', attempts=0, error=NULL, updated_at=? WHERE id=?", (now, jid))
                self._audit(db, "retried", job_id=jid, resend=bool(undelivered))
        return ids

    # -- retention ------------------------------------------------------------------------
    def purgeable_jobs(self, before: float) -> list[tuple[int, list[str]]]:
        """Delivered (done) or superseded jobs last changed before ``before``, with their photographs' files."""
        with self._lock:
            ids = [r[0] for r in self._db.execute(
                "SELECT id FROM jobs WHERE state IN ('done','superseded') AND purged_at IS NULL AND updated_at <= ? "
                "ORDER BY id", (before,))]
            return [(jid, [r[0] for r in self._db.execute(
                "SELECT path FROM instances WHERE job_id=? AND path != ''", (jid,))]) for jid in ids]

    def mark_purged(self, job_id: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET purged_at=? WHERE id=?", (time.time(), job_id))
            db.execute("UPDATE instances SET state='purged', path='' WHERE job_id=?", (job_id,))

    def superseded_files(self, before: float) -> list[tuple[str, int, str]]:
        with self._lock:
            return [(r[0], int(r[1]), r[2]) for r in self._db.execute(
                "SELECT sop_instance_uid, version, path FROM superseded_instances WHERE superseded_at <= ? "
                "AND path != ''", (before,))]

    def mark_version_purged(self, sop_instance_uid: str, version: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE superseded_instances SET path='' WHERE sop_instance_uid=? AND version=?",
                       (sop_instance_uid, version))

    def current_attempts(self) -> dict[int, int]:
        with self._lock:
            return {int(r[0]): int(r[1]) for r in self._db.execute("SELECT id, attempts FROM jobs")}

    def reroute_unrouted(self) -> list[str]:
        """Instances no rule matched go through routing again (after the rules were changed)."""
        now = time.time()
        with self._transaction() as db:
            uids = [r[0] for r in db.execute("SELECT sop_instance_uid FROM instances WHERE state='unrouted'")]
            db.execute("UPDATE instances SET state='received', received_at=? WHERE state='unrouted'", (now,))
            for uid in uids:
                self._audit(db, "retried", sop=uid, reason="routed again")
        return uids

    def status(self, recent_errors: int = 10) -> dict[str, Any]:
        with self._lock:
            jobs = {r[0]: r[1] for r in self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}
            instances = {r[0]: r[1] for r in self._db.execute("SELECT state, COUNT(*) FROM instances GROUP BY state")}
            outbox = {r[0]: r[1] for r in self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state")}
            failed = [dict(r) for r in self._db.execute(
                "SELECT id, app, series_instance_uid, attempts, error, updated_at FROM jobs WHERE state='failed' "
                "ORDER BY updated_at DESC LIMIT ?", (recent_errors,))]
            unrouted = [dict(r) for r in self._db.execute(
                "SELECT sop_instance_uid, sop_class_uid, series_instance_uid, received_at FROM instances "
                "WHERE state='unrouted' ORDER BY received_at DESC LIMIT ?", (recent_errors,))]
            changed = [dict(r) for r in self._db.execute(
                "SELECT sop_instance_uid, version, series_instance_uid, state, job_id, received_at FROM instances "
                "WHERE version > 1 ORDER BY received_at DESC LIMIT ?", (recent_errors,))]
            errors = [dict(r) for r in self._db.execute(
                "SELECT at, event, job_id, sop_instance_uid, details FROM audit "
                "WHERE event IN ('analysis_failed','send_failed','rejected') ORDER BY id DESC LIMIT ?", (recent_errors,))]
        return {"jobs": jobs, "instances": instances, "outbox": outbox, "failed_jobs": failed,
                "unrouted_instances": unrouted, "changed_instances": changed, "last_errors": errors}

    def audit_rows(self, since: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            query, args = "SELECT * FROM audit", ()
            if since:
                query, args = query + " WHERE at >= ?", (since,)
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [{**dict(r), "details": json.loads(r["details"])} for r in rows]

    # -- corrections (clinicians' SEGs of analysed photographs) ---------------------------
    def analysed_photographs(self, sop_instance_uids: list[str]) -> list[sqlite3.Row]:
        """Instances among these UIDs that a job analysed (results queued or sent), with the job's app."""
        if not sop_instance_uids:
            return []
        marks = ",".join("?" * len(sop_instance_uids))
        with self._lock:
            return self._db.execute(
                "SELECT i.*, j.app AS app FROM instances i JOIN jobs j ON j.id = i.job_id "
                f"WHERE i.sop_instance_uid IN ({marks}) AND j.state IN ('sending', 'done')",
                list(sop_instance_uids),
            ).fetchall()

    def analysed_studies(self) -> list[str]:
        """Study UIDs with at least one analysed photograph (where corrections may be found)."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT DISTINCT study_instance_uid FROM jobs WHERE state IN ('sending', 'done') ORDER BY id")]

    def job_results(self, job_id: int, sop_class_uid: str) -> list[Path]:
        """Files of one SOP class a job produced (e.g. its own SEG)."""
        with self._lock:
            return [Path(r[0]) for r in self._db.execute(
                "SELECT path FROM outbox WHERE job_id=? AND sop_class_uid=? ORDER BY id", (job_id, sop_class_uid))]

    def set_instance_state(self, sop_instance_uid: str, state: str) -> None:
        """A received instance that is not analysed (a correction: 'correction_filed' / 'correction_refused')."""
        with self._transaction() as db:
            db.execute("UPDATE instances SET state=? WHERE sop_instance_uid=?", (state, sop_instance_uid))
