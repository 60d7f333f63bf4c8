"""`dermpacs`: run the DICOM node and operate it.

    dermpacs serve  [--config FILE] [--ae-title AE] [--port N] [--data-dir DIR] [--destination AE@HOST:PORT|URL]
                    [--queue local|celery] [--broker redis://HOST:PORT/0] [--shared-dir DIR]
    dermpacs worker [--config FILE] --broker redis://HOST:PORT/0 --shared-dir DIR [--apps A,B] [--gpu|--no-gpu]
                    [--concurrency N] [--name NAME] [--work-dir DIR]
    dermpacs status [--config FILE] [--data-dir DIR] [--json]
    dermpacs retry  (JOB | --failed | --unrouted) [--config FILE] [--data-dir DIR]
    dermpacs purge  [--dry-run] [--keep-days N] [--config FILE] [--data-dir DIR]
    dermpacs audit export [--since DATE] [--format csv|json] [--output FILE] [--config FILE] [--data-dir DIR]
    dermpacs learn (collect | train --app APP | status)   [--config FILE] [--data-dir DIR]
    dermpacs models (list | promote ID | rollback)        [--config FILE] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import sys
from pathlib import Path

from dicom.service.config import ConfigError, load_config


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML configuration (defaults are embedded)")
    parser.add_argument("--data-dir", type=Path, help="folder of the job store, spool and results")


def _queue_args(parser: argparse.ArgumentParser, choose: bool = True) -> None:
    if choose:
        parser.add_argument("--queue", choices=("local", "celery"), help="where analyses run (config: queue.backend)")
    parser.add_argument("--broker", help="Celery broker, redis://HOST:PORT/0 (config: queue.broker)")
    parser.add_argument("--shared-dir", type=Path, help="folder every node mounts (config: queue.shared_dir)")


def _queue_overrides(args, backend: str | None = None) -> dict:
    return {"backend": backend or getattr(args, "queue", None), "broker": args.broker,
            "shared_dir": str(args.shared_dir) if args.shared_dir else None}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dermpacs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the DICOM node until SIGTERM/SIGINT")
    _config_args(serve)
    serve.add_argument("--ae-title")
    serve.add_argument("--port", type=int)
    serve.add_argument("--destination", help="AE@HOST:PORT (C-STORE) or http(s)://.../dicom-web (STOW-RS)")
    serve.add_argument("--log-level", default="INFO")
    _queue_args(serve)

    worker = sub.add_parser("worker", help="run analysis jobs from the Celery queue (queue backend celery)")
    _config_args(worker)
    _queue_args(worker, choose=False)
    worker.add_argument("--apps", help="comma-separated apps this worker runs (default: every configured app "
                                       "installed here)")
    worker.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None,
                        help="declare a GPU (default: detected); apps with needs_gpu go only to such workers")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once (one app process each)")
    worker.add_argument("--name", help="worker name (default dermpacs-PID@HOST); unique per worker")
    worker.add_argument("--work-dir", type=Path, help="local scratch folder for results before they are published")
    worker.add_argument("--log-level", default="INFO")

    status = sub.add_parser("status", help="queue by state, failures, last errors")
    _config_args(status)
    status.add_argument("--json", action="store_true")
    _queue_args(status)

    retry = sub.add_parser("retry", help="run a failed job again (resend its results, or re-analyse)")
    _config_args(retry)
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("job", nargs="?", type=int)
    which.add_argument("--failed", action="store_true", help="every failed job")
    which.add_argument("--unrouted", action="store_true", help="route unrouted instances again (after a rule change)")

    purge = sub.add_parser("purge", help="remove delivered work older than retention.keep_days")
    _config_args(purge)
    purge.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    purge.add_argument("--keep-days", type=float, help="override retention.keep_days")

    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    export = audit_sub.add_parser("export", help="write audit events as CSV or JSON")
    _config_args(export)
    export.add_argument("--since", help="ISO date or date-time (UTC), e.g. 2026-11-01")
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    export.add_argument("--output", type=Path, help="file to write (default: standard output)")

    from models.learning.cli import add_parsers as add_learning_parsers

    add_learning_parsers(sub, _config_args)
    return parser


def _since(text: str | None) -> str | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--since: {text!r} is not an ISO date") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")


def _store(args):
    from dicom.service.store import JobStore

    config = load_config(args.config, data_dir=args.data_dir)
    if not config.database.exists():
        raise ConfigError(f"no job store at {config.database} (has `dermpacs serve` run with this data dir?)")
    return config, JobStore(config.database)


def _print_health(health: dict | None) -> None:
    if health is None:
        return
    if not health.get("running"):
        print("service:   not running")
        return
    parts = []
    for name, state in sorted(health.get("components", {}).items()):
        if state.get("state") == "failing":
            since = dt.datetime.fromtimestamp(state.get("failing_since") or state["since"], dt.timezone.utc)
            parts.append(f"{name} FAILING since {since:%Y-%m-%d %H:%M:%S}Z ({state.get('failures')} tries, "
                         f"next in {state.get('next_try_s')} s): {state.get('error')}")
    print("service:   running" + ("" if parts else ", all ok"))
    for part in parts:
        print(f"  {part}")


def _print_status(status: dict) -> None:
    _print_health(status.get("health"))
    print("jobs:      " + (", ".join(f"{k} {v}" for k, v in sorted(status["jobs"].items())) or "none"))
    print("instances: " + (", ".join(f"{k} {v}" for k, v in sorted(status["instances"].items())) or "none"))
    print("outbox:    " + (", ".join(f"{k} {v}" for k, v in sorted(status["outbox"].items())) or "empty"))
    if status.get("queue"):
        _print_queue(status["queue"])
    if status["failed_jobs"]:
        print("\nfailed jobs:")
        for job in status["failed_jobs"]:
            print(f"  job {job['id']} ({job['app']}, series {job['series_instance_uid']}): {job['error']}")
    if status["unrouted_instances"]:
        print("\ninstances no routing rule matches (kept in the spool):")
        for item in status["unrouted_instances"]:
            print(f"  {item['sop_instance_uid']} (SOP class {item['sop_class_uid']})")
    if status.get("changed_instances"):
        print("\nchanged instances (same UID, other content: kept as a new version, analysed again, "
              "earlier results superseded):")
        for item in status["changed_instances"]:
            print(f"  {item['sop_instance_uid']} version {item['version']} ({item['state']}"
                  + (f", job {item['job_id']}" if item["job_id"] else "") + ")")
    if status["last_errors"]:
        print("\nlast errors:")
        for event in status["last_errors"]:
            details = json.loads(event["details"])
            print(f"  {event['at']} {event['event']} job={event['job_id']} {details.get('error') or details.get('reason', '')}")


def _worker(args) -> int:
    from dicom.service.logsafe import configure_logging
    from dicom.service.worker import run_worker

    configure_logging(args.log_level)

    config = load_config(args.config, queue=_queue_overrides(args, backend="celery"))
    if args.concurrency < 1:
        raise ConfigError("--concurrency: at least 1")
    apps = [a.strip() for a in args.apps.split(",") if a.strip()] if args.apps else None
    try:
        return run_worker(config, apps=apps, name=args.name, work_dir=args.work_dir, concurrency=args.concurrency,
                          gpu=args.gpu, log_level=args.log_level.upper())
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _print_queue(queue: dict) -> None:
    reach = "reachable" if queue["broker_reachable"] else f"UNREACHABLE ({queue.get('broker_error')})"
    print(f"queue:     celery, broker {queue['broker']} {reach}; shared folder {queue['shared_dir']}")
    waiting = queue["waiting_for_broker"]
    print("  waiting for a broker: " + (", ".join(f"{k} {v}" for k, v in sorted(waiting.items())) or "none"))
    for app, depth in queue["queues"].items():
        print(f"  queue {app}: {depth['waiting']} waiting, {depth['taken']} taken by workers")
    if queue["apps_without_worker"]:
        print("  apps no live worker serves: " + ", ".join(queue["apps_without_worker"]))
    print("workers:" + ("" if queue["workers"] else "   none has reported"))
    for w in queue["workers"]:
        print(f"  {w['name']} on {w['host']}: {w['state']}, apps {','.join(w['apps'])}, GPU {'yes' if w['gpu'] else 'no'}, "
              f"{w['jobs_done']} done, {w['jobs_failed']} failed, running {w['running'] or 'nothing'}, "
              f"last seen {w['last_seen_s_ago']:.0f} s ago")


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside the try: a closed pipe must not fail later, at interpreter exit
        return code
    except BrokenPipeError:  # `dermpacs status | head`: the reader left; not an error worth a traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush goes nowhere, quietly
        return 0


def _main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            from dicom.service.logsafe import configure_logging
            from dicom.service.service import DermpacsService

            configure_logging(args.log_level)  # every record escaped: a peer cannot write a log line

            config = load_config(args.config, ae_title=args.ae_title, port=args.port, data_dir=args.data_dir,
                                 destination=args.destination, queue=_queue_overrides(args))
            from dicom.service.recovery import StoreUnusable

            try:
                service = DermpacsService(config)
            except StoreUnusable as exc:
                print(f"dermpacs: refusing to start: {exc}", file=sys.stderr)
                return 3
            service.serve_forever()
            return 0
        if args.command == "worker":
            return _worker(args)
        if args.command in ("learn", "models"):
            from models.learning.cli import run as run_learning

            return run_learning(args, load_config(args.config, data_dir=args.data_dir))
        config, store = _store(args)
        if args.command == "status":
            from dicom.service.health import read_health

            status = {**store.status(), "health": read_health(config.data_dir)}
            config = load_config(args.config, data_dir=args.data_dir, queue=_queue_overrides(args))
            if config.queue.celery:
                from dicom.service.celery_queue import queue_status

                status["queue"] = queue_status(config, store)
            print(json.dumps(status, indent=2, default=str)) if args.json else _print_status(status)
            return 1 if status["failed_jobs"] else 0
        if args.command == "retry" and args.unrouted:
            uids = store.reroute_unrouted()
            print(f"routing again: {len(uids)} instance(s)" if uids else "nothing unrouted")
            return 0
        if args.command == "purge":
            from dicom.service.retention import purge
            from dicom.service.spool import Spool

            keep = config.retention.keep_days if args.keep_days is None else args.keep_days
            report = purge(store, Spool(config.data_dir), keep, dry_run=args.dry_run)
            if config.queue.celery and not args.dry_run:  # their folders in the shared folder go too
                from dicom.service.queue import SharedDir

                SharedDir(config.queue.shared_dir).remove_jobs(report["jobs"])
            verb = "would remove" if args.dry_run else "removed"
            print(f"{verb}: {len(report['jobs'])} delivered job(s) older than {keep:g} days "
                  f"({report['photographs']} photograph(s)), {report['earlier_versions']} earlier version(s), "
                  f"{report['orphaned_folders']} orphaned folder(s)")
            return 0
        if args.command == "retry":
            try:
                ids = store.retry(None if args.failed else args.job)
            except KeyError as exc:
                print(f"dermpacs: {exc.args[0]}", file=sys.stderr)
                return 2
            print(f"re-queued job(s): {ids}" if ids else "nothing to retry")
            return 0
        if args.command == "audit":
            rows = store.audit_rows(_since(args.since))
            out = io.StringIO()
            if args.format == "json":
                json.dump(rows, out, indent=2)
            else:
                writer = csv.writer(out)
                writer.writerow(["id", "at", "event", "job_id", "sop_instance_uid", "details"])
                for r in rows:
                    writer.writerow([r["id"], r["at"], r["event"], r["job_id"], r["sop_instance_uid"],
                                     json.dumps(r["details"], sort_keys=True)])
            if args.output:
                args.output.write_text(out.getvalue())
            else:
                sys.stdout.write(out.getvalue())
            return 0
    except ConfigError as exc:
        print(f"dermpacs: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
