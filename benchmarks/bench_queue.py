"""The Celery queue against the local runner, in one run on one machine: overhead and throughput.

Everything real but the analysis: redis-server on loopback, `dermpacs serve` (local or
``--queue celery``), 1 or 2 `dermpacs worker` processes, the embedded storage SCP as the
PACS, a private loopback namespace when possible. The app is the tests' pair app
(two small results per photograph) with a fixed ``--analysis-s`` sleep per photograph: it
stands for an analysis that runs on the worker host's own CPU or GPU, so the figures show
what the queue adds and how jobs spread over workers, not this 2-core machine's CPU.

1. overhead: ``--single`` photographs sent one after another, each waited for; per job,
   latency (its 'routed' audit row to its last 'sent') minus the app's own duration:
   the hand-off to the worker, collecting the report and sending. Medians, local vs celery.
2. throughput: a storm of ``--photos`` photographs (one series, hence one job, each) from
   one association; photographs per minute from the first 'routed' row to the last 'sent',
   with local 1/2 worker processes and celery 1/2 workers.

    .venv/bin/python benchmarks/bench_queue.py [--photos 24] [--single 8] [--analysis-s 0.5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack, nullcontext
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from dicom.encode import photograph_dataset  # noqa: E402
from dicom.service.local_pacs import LocalStorageSCP, send_instances  # noqa: E402
from dicom.service.store import JobStore  # noqa: E402
from tests.pacs.dermpacs import DermpacsProcess  # noqa: E402
from tests.pacs.netns import isolated_network, isolation_unavailable_reason  # noqa: E402
from tests.pacs.redis import RedisServer  # noqa: E402
from tests.pacs.worker import WorkerProcess  # noqa: E402

APP = {"pair": {"module": "tests.service_apps.pair_app", "timeout_s": 120}}
RULES = [{"name": "all", "app": "pair"}]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _t(row: dict) -> float:
    return datetime.fromisoformat(row["at"]).timestamp()


def photos(count: int) -> list:
    study = generate_uid()
    return [photograph_dataset(np.full((64, 64, 3), i % 255, np.uint8), transfer_syntax=ExplicitVRLittleEndian,
                               study_uid=study, series_uid=generate_uid()) for i in range(count)]


class Setup:
    """One listener (local or celery) with its workers, torn down after its measurements."""

    def __init__(self, root: Path, pacs: LocalStorageSCP, redis: RedisServer | None, workers: int,
                 analysis_s: float) -> None:
        self.root, self.pacs, self.redis = root, pacs, redis
        env = {"DERMPACS_TEST_APP_DELAY_S": str(analysis_s)}
        os.environ.update(env)  # local mode: the listener's own worker processes run the app
        settings = {"apps": APP, "rules": RULES, "stable_seconds": 0.3,  # poll_interval_s: the default
                    "sender": {"max_attempts": 5, "backoff_initial_s": 0.5, "backoff_max_s": 2}}
        if redis is None:
            settings["workers"] = workers
        else:
            settings["queue"] = {"backend": "celery", "broker": redis.url, "shared_dir": str(root / "shared"),
                                 "heartbeat_s": 2}
        self.node = DermpacsProcess(root / "node", destination=pacs.address(), **settings)
        self.workers = [WorkerProcess(root / f"w{i}", f"w{i}", self.node.config, redis.url, root / "shared", env=env)
                        for i in range(workers if redis else 0)]

    def __enter__(self) -> "Setup":
        for w in self.workers:
            w.start()
        deadline = time.monotonic() + 120
        while not all(w.ready() for w in self.workers):
            if time.monotonic() > deadline:
                raise TimeoutError("workers not ready")
            time.sleep(0.2)
        self.node.start()
        return self

    def __exit__(self, *exc) -> None:
        self.node.stop()
        for w in self.workers:
            w.stop()

    def run(self, datasets: list, expected: int) -> list[dict[str, float]]:
        """Send, wait for every result to be stored and audited as sent; the jobs of this run."""
        known = {j["id"] for j in per_job(self.audit())}
        before = len(self.pacs.snapshot())
        assert send_instances(datasets, f"DERMAI@127.0.0.1:{self.node.port}") == [0] * len(datasets)
        if not self.pacs.wait_for(before + expected, 600):
            raise TimeoutError(f"results missing:\n{self.node.log_tail()}")
        while True:  # the 'sent' row follows the PACS's answer by a moment
            jobs = [j for j in per_job(self.audit()) if j["id"] not in known]
            if len(jobs) == len(datasets):
                return jobs
            time.sleep(0.1)

    def audit(self) -> list[dict]:
        store = JobStore(self.node.data_dir / "dermpacs.sqlite3")
        try:
            return store.audit_rows()
        finally:
            store.close()


def per_job(audit: list[dict]) -> list[dict[str, float]]:
    jobs: dict[int, dict[str, float]] = {}
    for row in audit:
        job = row["job_id"]
        if job is None:
            continue
        entry = jobs.setdefault(job, {"id": job})
        if row["event"] == "routed":
            entry["routed"] = _t(row)
        elif row["event"] in ("started", "dispatched"):
            entry["handed"] = _t(row)
        elif row["event"] == "analysed":
            entry["analysis"] = float(row["details"]["duration_s"])
            entry["analysed"] = _t(row)
            if row["details"].get("worker_started_at"):  # celery: the worker's clock (same host here)
                entry["worker_started"] = float(row["details"]["worker_started_at"])
        elif row["event"] == "sent":
            entry["sent"] = max(entry.get("sent", 0.0), _t(row))
    return [j for j in jobs.values() if {"routed", "handed", "analysed", "sent"} <= set(j)]


def measure(root: Path, pacs: LocalStorageSCP, redis: RedisServer | None, workers: int, args) -> dict:
    name = f"{'celery' if redis else 'local'}-{workers}"
    with Setup(root / name, pacs, redis, workers, args.analysis_s) as setup:
        single = [job for _ in range(args.single) for job in setup.run(photos(1), 2)]  # the overhead of one job
        cpu_before = process_cpu_s(setup.node.process.pid)
        jobs = setup.run(photos(args.photos), 2 * args.photos)  # the storm
        listener_cpu_per_job = (process_cpu_s(setup.node.process.pid) - cpu_before) / len(jobs)
    latency = [j["sent"] - j["routed"] for j in single]
    overhead = [j["sent"] - j["routed"] - j["analysis"] for j in single]
    parts = {"routed_to_handed_s": [j["handed"] - j["routed"] for j in single],
             "analysed_to_sent_s": [j["sent"] - j["analysed"] for j in single]}
    if redis is not None:
        parts["handed_to_worker_start_s"] = [j["worker_started"] - j["handed"] for j in single]
        parts["worker_end_to_analysed_s"] = [j["analysed"] - j["worker_started"] - j["analysis"] for j in single]
    span = max(j["sent"] for j in jobs) - min(j["routed"] for j in jobs)
    storm_latency = [j["sent"] - j["routed"] for j in jobs]
    return {"setup": name, "single_latency_s": statistics.median(latency),
            "single_analysis_s": statistics.median(j["analysis"] for j in single),
            "single_overhead_s": statistics.median(overhead),
            "storm_photos": len(jobs), "storm_s": span, "photos_per_min": 60 * len(jobs) / span,
            "storm_latency_median_s": statistics.median(storm_latency), "storm_latency_max_s": max(storm_latency),
            "listener_cpu_s_per_job": listener_cpu_per_job,
            **{name: statistics.median(values) for name, values in parts.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--single", type=int, default=8)
    parser.add_argument("--analysis-s", type=float, default=0.5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    isolation = isolated_network() if isolation_unavailable_reason() is None else nullcontext()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp, isolation, ExitStack() as stack:
        root = Path(tmp)
        pacs = stack.enter_context(LocalStorageSCP(root / "pacs", ae_title="PACS"))
        redis = stack.enter_context(RedisServer(root / "redis"))
        for broker, workers in ((None, 1), (redis, 1), (None, 2), (redis, 2)):
            rows.append(measure(root, pacs, broker, workers, args))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\nanalysis stand-in: {args.analysis_s:g} s per photograph; {args.single} single jobs; storm of {args.photos}")
    print("| setup | single-job latency (s) | overhead beyond the analysis (s) | storm: photographs/min | "
          "storm latency median / max (s) | listener CPU per job (ms) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setup']} | {r['single_latency_s']:.3f} | {r['single_overhead_s']:.3f} | {r['photos_per_min']:.0f} | "
              f"{r['storm_latency_median_s']:.1f} / {r['storm_latency_max_s']:.1f} | "
              f"{1000 * r['listener_cpu_s_per_job']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
