"""`make demo`: build the embedded demo study, run the facial vitiligo app on it, show the numbers.

    python -m apps.demo --out demo-out
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from apps import runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for the study and the results")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    runtime.configure_logging()

    from apps.demo_study import make_demo_study
    from apps.facial_vitiligo.app import main as run_app

    study, results = args.out / "study", args.out / "results"
    print(f"1/2 writing the demo study (3 views, 2832x4240 JPEG VL photographs) to {study}/")
    started = time.perf_counter()
    photographs = make_demo_study(study, seed=args.seed)
    print(f"    done in {time.perf_counter() - started:.1f} s")
    print(f"2/2 python -m apps.facial_vitiligo -i {study} -o {results}")
    started = time.perf_counter()
    code = run_app(["apps.facial_vitiligo", "-i", str(study), "-o", str(results)])
    print(f"    app finished in {time.perf_counter() - started:.1f} s (exit {code})")

    report = json.loads((results / "results.json").read_text())
    by_source = {c["source"]: c for c in report["cases"]}
    print("\nview      F-Vitiligo (app)  F-Vitiligo (painted truth)  mask method")
    for photo in photographs:
        case = by_source[photo.path.name]
        if case["status"] != "analysed":
            print(f"{photo.view:9} FAILED: {case['error']}")
            continue
        r = case["results"]
        print(f"{photo.view:9} {r['f_vitiligo_percent']:15.2f}%  {photo.true_f_vitiligo:25.2f}%  {r['face_mask_method']}")
    visit = next((c["results"].get("visit_f_vitiligo_percent") for c in report["cases"] if c["status"] == "analysed"), None)
    if visit is not None:
        print(f"visit (all views pooled): F-Vitiligo {visit:.2f}%")
    print(f"\nSEG, SR, overlays and results.json in {results}/")
    return code


if __name__ == "__main__":
    sys.exit(main())
