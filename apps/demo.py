"""`make demo`: the main job through the network, everything on loopback, everything stopped after.

1. writes two visits of the demo patient (baseline, and a follow-up 91 days later whose
   patches have repigmented from their margins to half their area), 3 views each,
   2832x4240 JPEG VL photographs,
2. starts a local storage SCP (the stand-in for the hospital PACS; it also answers C-FIND
   and C-GET),
3. starts `dermpacs serve` on a free port with that SCP as its destination,
4. per visit: stores the photographs in the PACS and sends them to dermpacs by C-STORE,
   as a PACS auto-route would, and waits for the SEGs and the SR. For the follow-up
   dermpacs fetches the baseline's results from the PACS by itself,
5. prints the F-Vitiligo per view (read back from the SR) next to the painted truth, and
   for the follow-up the change since baseline next to the true change, and stops what
   it started.

    python -m apps.demo --out demo-out          # the networked flow
    python -m apps.demo --out demo-out --local  # the app alone, no network
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from apps import runtime

REPO = Path(__file__).resolve().parents[1]


def _print_table(photographs, f_by_sop: dict[str, float], visit: float | None) -> None:
    print("\nview      F-Vitiligo (dermpacs)  F-Vitiligo (painted truth)")
    for photo in photographs:
        value = f_by_sop.get(photo.sop_instance_uid)
        shown = f"{value:17.2f}%" if value is not None else "        not analysed"
        print(f"{photo.view:9} {shown}  {photo.true_f_vitiligo:25.2f}%")
    if visit is not None:
        print(f"visit (all views pooled): F-Vitiligo {visit:.2f}%")


def _study_results(pacs, study_uid: str) -> tuple[list, int]:
    """The SR groups dermpacs stored for one study, and how many of its SEGs have arrived."""
    import pydicom

    from dicom.sr import read_measurement_report

    groups, segs = [], 0
    for path in pacs.snapshot().values():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if str(ds.StudyInstanceUID) != study_uid:
            continue
        if ds.Modality == "SR" and ds.get("Manufacturer") == "dermpacs":
            groups = read_measurement_report(pydicom.dcmread(path))
        elif ds.Modality == "SEG":
            segs += 1
    return groups, segs


def _print_visit(visit, groups, baseline_truth: dict[str, float] | None) -> None:
    from dicom import codes

    by_sop: dict[str, dict] = {}  # a view's groups (measurements, since baseline, change map) merged
    for g in groups:
        merged = by_sop.setdefault(g["referenced_sop_instance_uid"], {**g, "measurements": {}})
        merged["measurements"].update(g["measurements"])
        merged["comment"] = merged.get("comment") or g.get("comment")
    change = codes.F_VITILIGO_CHANGE_BASELINE.meaning
    header = "view      F-Vitiligo (dermpacs)  (painted truth)"
    if baseline_truth is not None:
        header += "   change since baseline (dermpacs)  (true change)  repigmented / new / unchanged px"
    print(f"\nvisit {visit.number} ({visit.date}, {'baseline' if visit.number == 1 else 'follow-up'})\n{header}")
    for photo in visit.photographs:
        g = by_sop.get(photo.sop_instance_uid)
        if g is None:
            print(f"{photo.view:9}        not analysed")
            continue
        m = g["measurements"]
        line = f"{photo.view:9} {m[codes.F_VITILIGO.meaning][0]:17.2f}%  {photo.true_f_vitiligo:14.2f}%"
        if baseline_truth is not None:
            if change in m:
                areas = " / ".join(f"{m[c.meaning][0]:.0f}" if c.meaning in m else "-" for c in (
                    codes.REPIGMENTED_AREA, codes.NEW_DEPIGMENTATION_AREA, codes.UNCHANGED_VITILIGO_AREA))
                line += (f"   {m[change][0]:+29.2f} pts  {photo.true_f_vitiligo - baseline_truth[photo.view]:+12.2f} pts"
                         f"  {areas}")
            else:
                line += f"   no comparison: {g['comment']}"
        print(line)


def run_networked(out: Path, visits, timeout_s: float = 600) -> int:
    from dicom.service.local_pacs import LocalStorageSCP, free_port, send_instances, wait_for_echo

    port = free_port()
    config = out / "dermpacs.yaml"
    config.write_text(
        "bind_address: 127.0.0.1\nstable_seconds: 2\nallowed_callers: [DEMOPACS@127.0.0.1]\n"
        "sender: {max_attempts: 5, backoff_initial_s: 1, backoff_max_s: 10}\n"
    )
    analysed = 0
    with LocalStorageSCP(out / "pacs", ae_title="DEMOPACS") as pacs:
        print(f"2/4 stand-in PACS (storage, C-FIND and C-GET SCP) at {pacs.address()}")
        command = [sys.executable, "-m", "dicom.cli", "serve", "--config", str(config), "--port", str(port),
                   "--data-dir", str(out / "service"), "--destination", pacs.address()]
        log = open(out / "dermpacs-serve.log", "w")
        print(f"3/4 dermpacs serve on 127.0.0.1:{port} (log: {log.name})")
        service = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONPATH=str(REPO)))
        try:
            wait_for_echo(f"DERMAI@127.0.0.1:{port}", 120, calling_ae="DEMOPACS", alive=lambda: service.poll() is None)
            baseline_truth = None
            for visit in visits:
                paths = [p.path for p in visit.photographs]
                send_instances(paths, pacs.address(), calling_ae="DEMOCAM")  # the PACS archives the photographs
                started = time.perf_counter()
                statuses = send_instances(paths, f"DERMAI@127.0.0.1:{port}", calling_ae="DEMOPACS")
                print(f"4/4 visit {visit.number}: sent {len(statuses)} photograph(s) to dermpacs by C-STORE "
                      f"(statuses {', '.join(hex(s) for s in statuses)}); waiting for the SEGs and the SR...")
                deadline = time.monotonic() + timeout_s
                groups: list = []
                while time.monotonic() < deadline and service.poll() is None:
                    groups, segs = _study_results(pacs, visit.study_instance_uid)
                    if groups and segs >= len(paths):
                        break
                    time.sleep(0.5)
                if not groups:
                    print(f"results did not arrive within {timeout_s:.0f} s; see {log.name} and `dermpacs status`",
                          file=sys.stderr)
                    return 1
                print(f"    results stored at the PACS {time.perf_counter() - started:.1f} s after the first C-STORE")
                _print_visit(visit, groups, baseline_truth)
                # a follow-up view has more than one group (since baseline, change map): count photographs
                analysed += len({g["referenced_sop_instance_uid"] for g in groups}
                                & {p.sop_instance_uid for p in visit.photographs})
                baseline_truth = baseline_truth or visit.truth()
        finally:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.kill()
            log.close()
        print(f"\nSEGs (masks, and the change since baseline) and SRs as the PACS received them: {pacs.folder}/")
    return 0 if analysed == sum(len(v.photographs) for v in visits) else 1


def run_local(out: Path, photographs) -> int:
    from apps.facial_vitiligo.app import main as run_app

    results = out / "results"
    print(f"2/2 python -m apps.facial_vitiligo -i {out / 'study'} -o {results}")
    code = run_app(["apps.facial_vitiligo", "-i", str(out / "study"), "-o", str(results)])
    report = json.loads((results / "results.json").read_text())
    f_by_sop = {c["sop_instance_uid"]: c["results"]["f_vitiligo_percent"] for c in report["cases"] if c["status"] == "analysed"}
    visit = next((c["results"].get("visit_f_vitiligo_percent") for c in report["cases"] if c["status"] == "analysed"), None)
    _print_table(photographs, f_by_sop, visit)
    print(f"\nSEG, SR, overlays and results.json in {results}/")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for everything the demo writes")
    parser.add_argument("--seed", type=int, default=None, help="painting seed (default: the demo study's own)")
    parser.add_argument("--local", action="store_true", help="run the app directly, without the network service")
    args = parser.parse_args(argv)
    runtime.configure_logging()
    import logging

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # one line per PDU is for debugging
    from apps.demo_study import DEMO_SEED, make_demo_study

    args.out.mkdir(parents=True, exist_ok=True)
    seed = DEMO_SEED if args.seed is None else args.seed
    if args.local:
        print(f"1/2 writing the demo study (3 views, 2832x4240 JPEG VL photographs) to {args.out / 'study'}/")
        return run_local(args.out, make_demo_study(args.out / "study", seed=seed))
    from apps.demo_visits import make_demo_visits

    print(f"1/4 writing two visits of the demo patient (3 views each, 2832x4240 JPEG VL photographs; "
          f"the follow-up's patches repigmented to half their area) to {args.out / 'study'}/")
    return run_networked(args.out, make_demo_visits(args.out / "study", remaining=(1.0, 0.5), seed=seed))


if __name__ == "__main__":
    sys.exit(main())
