"""The DICOM node under load: study latency, sustained throughput, and the service's own overhead.

Starts `dermpacs serve` on loopback with a local storage SCP as the destination, then
1. latency: the demo study (3 x 2832x4240 JPEG VL photographs) from its first C-STORE to
   its last result stored at the destination, split into grouping wait (stable_seconds),
   analysis (the app's own duration, from the audit trail) and the service's overhead
   (receive, spool, route, hand-off to a worker, send);
2. throughput: N photographs from 4 concurrent associations (series of 4), photographs/min.

    .venv/bin/python benchmarks/bench_service.py [--photos 32] [--workers 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=32, help="photographs for the throughput run")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--stable-seconds", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import logging

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    from pydicom.uid import generate_uid

    from apps.demo_study import make_demo_study
    from dicom.encode import photograph_dataset, write_dataset
    from dicom.reader import read_photograph
    from dicom.service.local_pacs import LocalStorageSCP, free_port, send_instances, wait_for_echo
    from dicom.service.store import JobStore

    work = Path(tempfile.mkdtemp(prefix="dermpacs-bench-service-"))
    study = make_demo_study(work / "study")
    pixels = read_photograph(study[1].path).pixels
    load = []
    for s in range(0, args.photos, 4):
        series = generate_uid()
        for i in range(min(4, args.photos - s)):
            ds = photograph_dataset(pixels, series_uid=series, instance_number=i + 1, view="frontal")
            load.append(write_dataset(ds, work / "load" / f"{s:03d}_{i}.dcm"))

    port = free_port()
    (work / "dermpacs.yaml").write_text(
        f"bind_address: 127.0.0.1\nstable_seconds: {args.stable_seconds}\nworkers: {args.workers}\npoll_interval_s: 0.1\n"
    )
    figures: dict = {"machine_cpus": os.cpu_count(), "workers": args.workers, "stable_seconds": args.stable_seconds}
    with LocalStorageSCP(work / "pacs", ae_title="BENCHPACS") as pacs:
        service = subprocess.Popen(
            [sys.executable, "-m", "dicom.cli", "serve", "--config", str(work / "dermpacs.yaml"), "--port", str(port),
             "--data-dir", str(work / "data"), "--destination", pacs.address()],
            cwd=REPO, stdout=open(work / "serve.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        try:
            wait_for_echo(f"DERMAI@127.0.0.1:{port}", 120, alive=lambda: service.poll() is None)
            address = f"DERMAI@127.0.0.1:{port}"
            # Warm the worker (imports, model load) with one photograph, as a running service would be.
            send_instances([study[1].path], address)
            pacs.wait_for(2, 300)

            study_again = make_demo_study(work / "study2", seed=8)
            expected = len(pacs.received) + 4
            started = time.perf_counter()
            send_instances([p.path for p in study_again], address)
            received = time.perf_counter()
            pacs.wait_for(expected, 300)
            latency = time.perf_counter() - started
            store = JobStore(work / "data" / "dermpacs.sqlite3")
            analysed = [r for r in store.audit_rows() if r["event"] == "analysed"]
            analysis = analysed[-1]["details"]["duration_s"]
            overhead = latency - args.stable_seconds - analysis
            figures.update({
                "study_latency_s": round(latency, 2),
                "study_receive_s": round(received - started, 3),
                "study_analysis_s": analysis,
                "service_overhead_s": round(overhead, 2),
                "service_overhead_percent_of_analysis": round(100 * overhead / analysis, 1),
            })

            expected = len(pacs.received) + len(load) + len(load) // 4 + (1 if len(load) % 4 else 0)
            chunks = [load[i::4] for i in range(4)]
            started = time.perf_counter()
            threads = [threading.Thread(target=send_instances, args=(c, address)) for c in chunks]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ok = pacs.wait_for(expected, 1800)
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

    print(f"study of 3 photographs, first C-STORE -> last result stored: {figures['study_latency_s']:.2f} s")
    print(f"  grouping wait (stable_seconds)  {args.stable_seconds:.2f} s")
    print(f"  analysis (app)                  {figures['study_analysis_s']:.2f} s")
    print(f"  service overhead                {figures['service_overhead_s']:.2f} s "
          f"({figures['service_overhead_percent_of_analysis']:.1f}% of analysis; target < 10%)")
    print(f"throughput, 4 concurrent senders: {figures['photos_per_minute']:.1f} photographs/min "
          f"({figures['throughput_photos']} in {figures['throughput_s']:.0f} s, {args.workers} worker(s))")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if figures.get("all_delivered") else 1


if __name__ == "__main__":
    sys.exit(main())
