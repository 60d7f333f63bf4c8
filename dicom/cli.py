"""`dermpacs`: run the DICOM node and operate it.

    dermpacs serve  [--config FILE] [--ae-title AE] [--port N] [--data-dir DIR] [--destination AE@HOST:PORT|URL]
    dermpacs status [--config FILE] [--data-dir DIR] [--json]
    dermpacs retry  (JOB | --failed | --unrouted) [--config FILE] [--data-dir DIR]
    dermpacs purge  [--dry-run] [--keep-days N] [--config FILE] [--data-dir DIR]
    dermpacs audit export [--since DATE] [--format csv|json] [--output FILE] [--config FILE] [--data-dir DIR]
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dermpacs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the DICOM node until SIGTERM/SIGINT")
    _config_args(serve)
    serve.add_argument("--ae-title")
    serve.add_argument("--port", type=int)
    serve.add_argument("--destination", help="AE@HOST:PORT (C-STORE) or http(s)://.../dicom-web (STOW-RS)")
    serve.add_argument("--log-level", default="INFO")

    status = sub.add_parser("status", help="queue by state, failures, last errors")
    _config_args(status)
    status.add_argument("--json", action="store_true")

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
                                 destination=args.destination)
            from dicom.service.recovery import StoreUnusable

            try:
                service = DermpacsService(config)
            except StoreUnusable as exc:
                print(f"dermpacs: refusing to start: {exc}", file=sys.stderr)
                return 3
            service.serve_forever()
            return 0
        config, store = _store(args)
        if args.command == "status":
            from dicom.service.health import read_health

            status = {**store.status(), "health": read_health(config.data_dir)}
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
