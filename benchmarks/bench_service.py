"""The DICOM node under load: study latency, the service's own overhead, sustained throughput.

Starts `dermpacs serve` on loopback (inside a private network namespace, as the tests do)
and measures against three destinations in turn: dcmtk ``storescp`` (a native node that only
writes files), Orthanc with the shipped configuration (the PACS of the tests and of the
install notes) and the embedded pynetdicom stand-in of `make demo`; DCMTK-based ones run
with TCP_NODELAY=1, as deploy/orthanc/tcp-nodelay.conf sets it.

1. latency: N demo studies (3 x 2832x4240 JPEG VL photographs each), sent one after
   another, each from its first C-STORE to its last result stored at the destination
   (median reported). The audit trail splits it into receive, grouping wait, hand-off,
   analysis (the app's own duration, in its worker) and send. The service's overhead is
   latency - stable_seconds - analysis: receiving and spooling, routing, the hand-off and
   sending, including the destination's time to take 9 MB of SEG. The CPU seconds the
   service process itself (listener, scheduler, sender; not its workers) spends per study
   are reported beside it.
2. throughput (stand-in destination): N photographs from 4 concurrent associations
   (series of 4), photographs/min.

    .venv/bin/python benchmarks/bench_service.py [--studies 7] [--photos 32] [--workers 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _audit_time(row: dict) -> float:
    return datetime.fromisoformat(row["at"]).timestamp()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process, its threads included, its children not."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def study_timeline(store, series_uid: str, started: float, acknowledged: float,
                   stable_seconds: float) -> dict[str, float]:
    """One study's latency split by the audit trail's timestamps (wall clock, ms resolution).

    The study ends when the destination answered the C-STORE of its last result: the
    'sent' audit row written right after that response (a PACS answers once it has stored).
    """
    rows = store.audit_rows()
    received = [_audit_time(r) for r in rows
                if r["event"] == "received" and r["details"].get("series_instance_uid") == series_uid]
    routed = next(r for r in rows if r["event"] == "routed" and r["details"].get("series_instance_uid") == series_uid)
    job = routed["job_id"]
    job_started = next(r for r in rows if r["event"] == "started" and r["job_id"] == job)
    analysed = next(r for r in rows if r["event"] == "analysed" and r["job_id"] == job)
    analysis = float(analysed["details"]["duration_s"])
    stored = max(_audit_time(r) for r in rows if r["event"] == "sent" and r["job_id"] == job)
    latency = stored - started
    return {
        "study_latency_s": round(latency, 3),
        "receive_s": round(acknowledged - started, 3),
        "grouping_wait_s": round(_audit_time(routed) - max(received), 3),
        "hand_off_s": round(_audit_time(job_started) - _audit_time(routed), 3),
        "analysis_s": analysis,
        "send_s": round(stored - _audit_time(analysed), 3),
        "service_overhead_s": round(latency - stable_seconds - analysis, 3),
    }


class _Destination:
    """A storage SCP the service sends to: started and stopped around one measurement."""

    name = ""
    server: Any  # has start() and stop()

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()


class StandInDestination(_Destination):
    """The embedded pynetdicom storage SCP (`make demo`'s PACS)."""

    name = "pynetdicom stand-in (make demo's PACS)"

    def __init__(self, folder: Path, dermpacs_port: int) -> None:
        from dicom.service.local_pacs import LocalStorageSCP

        self.server = LocalStorageSCP(folder, ae_title="BENCHPACS")

    def address(self) -> str:
        return self.server.address()

    def count(self) -> int:
        return len(self.server.snapshot())


class StoreScpDestination(_Destination):
    """dcmtk ``storescp``: a native storage SCP that only writes files (TCP_NODELAY=1)."""

    name = "dcmtk storescp"

    def __init__(self, folder: Path, dermpacs_port: int) -> None:
        from tests.pacs.dcmtk import StoreSCP

        self.folder = folder
        self.server = StoreSCP(folder, ae_title="BENCHPACS")

    def address(self) -> str:
        return f"BENCHPACS@127.0.0.1:{self.server.port}"

    def count(self) -> int:
        return len(list(self.folder.glob("*.dcm")))


class OrthancDestination(_Destination):
    """Orthanc with the shipped configuration and TCP_NODELAY=1 (deploy/orthanc), storing only."""

    name = "Orthanc (deploy/orthanc)"

    def __init__(self, folder: Path, dermpacs_port: int) -> None:
        from tests.pacs.orthanc import OrthancServer

        self.server = OrthancServer(folder, dermpacs_port, router=False)

    def address(self) -> str:
        return f"{self.server.aet}@127.0.0.1:{self.server.dicom_port}"

    def count(self) -> int:
        return int(self.server.get_json("/statistics")["CountInstances"])


def wait_for_count(destination, count: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while destination.count() < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def measure(destination_cls, work: Path, args, studies, load, warm_up) -> dict:
    """Start the service towards one destination, send the studies (and the load), stop it."""
    from dicom.service.local_pacs import free_port, send_instances, wait_for_echo
    from dicom.service.store import JobStore

    tag = destination_cls.__name__
    data = work / f"data-{tag}"
    port = free_port()
    config = work / f"dermpacs-{tag}.yaml"
    config.write_text(f"bind_address: 127.0.0.1\nstable_seconds: {args.stable_seconds}\n"
                      f"workers: {args.workers}\npoll_interval_s: 0.1\n")
    figures: dict = {}
    with destination_cls(work / f"pacs-{tag}", port) as pacs:
        service = subprocess.Popen(
            [sys.executable, "-m", "dicom.cli", "serve", "--config", str(config), "--port", str(port),
             "--data-dir", str(data), "--destination", pacs.address()],
            cwd=REPO, stdout=open(work / f"serve-{tag}.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        try:
            address = f"DERMAI@127.0.0.1:{port}"
            wait_for_echo(address, 120, alive=lambda: service.poll() is None)
            # Warm the worker (imports, model load) with one photograph, as a running service would be.
            send_instances(warm_up, address)
            wait_for_count(pacs, 2, 300)

            store = JobStore(data / "dermpacs.sqlite3")
            timelines = []
            for study in studies:
                expected = pacs.count() + len(study) + 1  # a SEG per photograph + the SR
                cpu_before = process_cpu_s(service.pid)
                started = time.time()
                send_instances(study, address)
                acknowledged = time.time()
                if not wait_for_count(pacs, expected, 300):
                    raise TimeoutError(f"{pacs.name}: the study's results did not all arrive")
                time.sleep(0.2)  # let the sender release its association before reading the CPU clock
                timeline = study_timeline(store, str(study[0].SeriesInstanceUID), started, acknowledged,
                                          args.stable_seconds)
                timeline["service_cpu_s"] = round(process_cpu_s(service.pid) - cpu_before, 3)
                timelines.append(timeline)
            figures["studies"] = timelines
            figures.update({key: round(statistics.median(t[key] for t in timelines), 3) for key in timelines[0]})
            figures["service_overhead_percent_of_analysis"] = round(
                100 * figures["service_overhead_s"] / figures["analysis_s"], 1)
            figures["service_cpu_percent_of_analysis"] = round(
                100 * figures["service_cpu_s"] / figures["analysis_s"], 1)

            if load:
                expected = pacs.count() + len(load) + len(load) // 4 + (1 if len(load) % 4 else 0)
                chunks = [load[i::4] for i in range(4)]
                started = time.perf_counter()
                threads = [threading.Thread(target=send_instances, args=(c, address)) for c in chunks]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                ok = wait_for_count(pacs, expected, 1800)
                elapsed = time.perf_counter() - started
                figures.update({
                    "throughput_photos": len(load),
                    "throughput_s": round(elapsed, 1),
                    "photos_per_minute": round(60 * len(load) / elapsed, 1),
                    "all_delivered": ok,
                })
            store.close()
        finally:
            os.killpg(service.pid, signal.SIGTERM)
            service.wait(timeout=60)
    return figures


def report(name: str, figures: dict, stable_seconds: float) -> None:
    print(f"\n-> {name}: study of 3 photographs (median of {len(figures['studies'])}), "
          f"first C-STORE -> last result stored: {figures['study_latency_s']:.2f} s")
    print(f"  receive (first C-STORE -> last acknowledged)    {figures['receive_s']:.3f} s")
    print(f"  grouping wait (stable_seconds + scheduling)     {figures['grouping_wait_s']:.3f} s")
    print(f"  hand-off to a worker                            {figures['hand_off_s']:.3f} s")
    print(f"  analysis (the app, in its worker)               {figures['analysis_s']:.3f} s")
    print(f"  send (analysis done -> last result stored)      {figures['send_s']:.3f} s")
    print(f"  service overhead (latency - {stable_seconds:g} s - analysis) {figures['service_overhead_s']:.3f} s "
          f"= {figures['service_overhead_percent_of_analysis']:.1f}% of analysis (target < 10%)")
    print(f"  service process CPU per study                   {figures['service_cpu_s']:.3f} s "
          f"= {figures['service_cpu_percent_of_analysis']:.1f}% of analysis")
    if "photos_per_minute" in figures:
        print(f"  throughput, 4 concurrent senders: {figures['photos_per_minute']:.1f} photographs/min "
              f"({figures['throughput_photos']} in {figures['throughput_s']:.0f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=7, help="demo studies sent one after another for latency")
    parser.add_argument("--photos", type=int, default=32, help="photographs for the throughput run")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--stable-seconds", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import logging

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    import pydicom
    from pydicom.uid import generate_uid
    from tqdm import tqdm

    from apps.demo_study import make_demo_study
    from dicom.encode import photograph_dataset
    from dicom.reader import read_photograph
    from tests.pacs.netns import isolated_network

    work = Path(tempfile.mkdtemp(prefix="dermpacs-bench-service-"))
    warm_up = make_demo_study(work / "warm-up")
    pixels = read_photograph(warm_up[1].path).pixels
    # Datasets are read before any clock starts: the sending PACS has its files ready.
    studies = [[pydicom.dcmread(p.path) for p in make_demo_study(work / f"study{k}", seed=8 + k)]
               for k in tqdm(range(args.studies), desc="demo studies", unit="study")]
    load = []
    for s in range(0, args.photos, 4):
        series = generate_uid()
        for i in range(min(4, args.photos - s)):
            load.append(photograph_dataset(pixels, series_uid=series, instance_number=i + 1, view="frontal"))

    figures: dict = {"machine_cpus": os.cpu_count(), "workers": args.workers, "stable_seconds": args.stable_seconds}
    with isolated_network():  # storescp listens on all interfaces: keep everything on a private loopback
        figures["storescp"] = measure(StoreScpDestination, work, args, studies, [], [warm_up[1].path])
        figures["orthanc"] = measure(OrthancDestination, work, args, studies, [], [warm_up[2].path])
        figures["stand_in"] = measure(StandInDestination, work, args, studies, load, [warm_up[0].path])

    for key, cls in (("storescp", StoreScpDestination), ("orthanc", OrthancDestination),
                     ("stand_in", StandInDestination)):
        report(cls.name, figures[key], args.stable_seconds)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if figures["stand_in"].get("all_delivered") else 1


if __name__ == "__main__":
    sys.exit(main())
