"""`make demo`: the main job through the network, everything on loopback, everything stopped after.

1. writes the demo study (3 views, 2832x4240 JPEG VL photographs with painted patches),
2. starts a local storage SCP (the stand-in for the hospital PACS),
3. starts `dermpacs serve` on a free port with that SCP as its destination,
4. sends the study with a DICOM C-STORE client, as a PACS auto-route would,
5. waits for the SEG of every photograph and the SR at the SCP, prints the F-Vitiligo
   per view (read back from the SR) next to the painted truth, and stops what it started.

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


def run_networked(out: Path, photographs, timeout_s: float = 600) -> int:
    from dicom import codes
    from dicom.service.local_pacs import LocalStorageSCP, free_port, send_instances, wait_for_echo
    from dicom.sr import read_measurement_report

    port = free_port()
    config = out / "dermpacs.yaml"
    config.write_text(
        "bind_address: 127.0.0.1\nstable_seconds: 2\nallowed_callers: [DEMOPACS@127.0.0.1]\n"
        "sender: {max_attempts: 5, backoff_initial_s: 1, backoff_max_s: 10}\n"
    )
    with LocalStorageSCP(out / "pacs", ae_title="DEMOPACS") as pacs:
        print(f"2/4 stand-in PACS (storage SCP) at {pacs.address()}")
        command = [sys.executable, "-m", "dicom.cli", "serve", "--config", str(config), "--port", str(port),
                   "--data-dir", str(out / "service"), "--destination", pacs.address()]
        log = open(out / "dermpacs-serve.log", "w")
        print(f"3/4 dermpacs serve on 127.0.0.1:{port} (log: {log.name})")
        service = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONPATH=str(REPO)))
        try:
            wait_for_echo(f"DERMAI@127.0.0.1:{port}", 120, calling_ae="DEMOPACS", alive=lambda: service.poll() is None)
            started = time.perf_counter()
            statuses = send_instances([p.path for p in photographs], f"DERMAI@127.0.0.1:{port}", calling_ae="DEMOPACS")
            print(f"4/4 sent {len(statuses)} photograph(s) by C-STORE (statuses {', '.join(hex(s) for s in statuses)}); "
                  "waiting for the SEGs and the SR...")
            if not pacs.wait_for(len(photographs) + 1, timeout_s):
                print(f"results did not arrive within {timeout_s:.0f} s; see {log.name} and `dermpacs status`",
                      file=sys.stderr)
                return 1
            print(f"    results stored at the PACS {time.perf_counter() - started:.1f} s after the first C-STORE")
        finally:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.kill()
            log.close()
        import pydicom

        f_by_sop, visit = {}, None
        for path in pacs.snapshot().values():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if ds.Modality != "SR":
                continue
            for group in read_measurement_report(ds):
                f_by_sop[group["referenced_sop_instance_uid"]] = group["measurements"][codes.F_VITILIGO.meaning][0]
                visit = group["measurements"].get(codes.F_VITILIGO_VISIT.meaning, (None,))[0]
        _print_table(photographs, f_by_sop, visit)
        print(f"\nSEG and SR as the PACS received them: {pacs.folder}/")
    return 0 if len(f_by_sop) == len(photographs) else 1


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
    print(f"1/{2 if args.local else 4} writing the demo study (3 views, 2832x4240 JPEG VL photographs) to {args.out / 'study'}/")
    photographs = make_demo_study(args.out / "study", seed=DEMO_SEED if args.seed is None else args.seed)
    return run_local(args.out, photographs) if args.local else run_networked(args.out, photographs)


if __name__ == "__main__":
    sys.exit(main())
