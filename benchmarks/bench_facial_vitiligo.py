"""Times each stage of the facial vitiligo app on one 2832x4240 JPEG VL photograph.

Models are loaded once (as in a long-running service); each repetition runs decode ->
face detection -> face-skin mask -> DDRNet -> F-Vitiligo -> SEG written -> SR written.
Reports per-stage medians, the end-to-end median and the process's peak resident memory,
plus the wall time of one cold `python -m apps.facial_vitiligo` process for reference.

    .venv/bin/python benchmarks/bench_facial_vitiligo.py [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument("--skip-process", action="store_true", help="skip the cold-process measurement")
    args = parser.parse_args()

    from apps import runtime

    runtime.tune_allocator()
    from apps.demo_study import make_demo_study
    from apps.facial_vitiligo.app import APP_NAME, load_segmenter
    from dicom.seg import warm_up
    from models.face import FaceSkinMasker
    from models.face_refine import FaceSkinRefiner
    from operators.base import run_step
    from operators.cases import PhotoCase
    from operators.face_detection import FaceDetectionStep
    from operators.face_skin_mask import FaceSkinMaskStep
    from operators.facial_vitiligo_measurement import FacialVitiligoMeasurementStep
    from operators.lesion_segmentation import LesionSegmentationStep
    from operators.photo_loader import PhotoLoadStep
    from operators.quality_check import QualityCheckStep
    from operators.seg_writer import SegWriterStep
    from operators.sr_writer import SrWriterStep

    work = Path(tempfile.mkdtemp(prefix="dermpacs-bench-"))
    masker = FaceSkinMasker()
    photo = make_demo_study(work / "in", views=("frontal",), masker=masker)[0]
    segmenter = load_segmenter(None)
    algorithm = runtime.algorithm_identity(APP_NAME, segmenter)
    warm_up()
    steps = [
        PhotoLoadStep(),
        FaceDetectionStep(masker.detector),
        FaceSkinMaskStep(masker, FaceSkinRefiner()),
        LesionSegmentationStep(segmenter),
        FacialVitiligoMeasurementStep(),
        QualityCheckStep(),
        SegWriterStep(work / "out", algorithm),
        SrWriterStep(work / "out", algorithm),
    ]
    totals: list[float] = []
    per_stage: dict[str, list[float]] = {s.step_name: [] for s in steps}
    for repeat in range(args.repeats + 1):  # the first run warms caches and is not counted
        cases = [PhotoCase(source=photo.path)]
        started = time.perf_counter()
        for step in steps:
            t = time.perf_counter()
            run_step(step, cases)
            if repeat:
                per_stage[step.step_name].append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
        if not cases[0].ok:
            print(f"analysis failed: {cases[0].error}", file=sys.stderr)
            return 1
        if repeat:
            totals.append(elapsed)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    figures = {
        "photo": "2832x4240 JPEG baseline VL Photographic Image",
        "repeats": args.repeats,
        "stage_median_s": {k: round(statistics.median(v), 4) for k, v in per_stage.items()},
        "analysis_median_s": round(statistics.median(totals), 4),
        "analysis_min_s": round(min(totals), 4),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "f_vitiligo_percent": round(cases[0].summary["f_vitiligo_percent"], 3),
        "true_f_vitiligo_percent": round(photo.true_f_vitiligo, 3),
    }
    if not args.skip_process:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "apps.facial_vitiligo", "-i", str(work / "in"), "-o", str(work / "proc")],
            cwd=REPO, check=True, capture_output=True,
        )
        figures["cold_process_s"] = round(time.perf_counter() - started, 2)

    print("stage                      median (s)")
    for name, value in figures["stage_median_s"].items():
        print(f"  {name:25} {value:8.3f}")
    print(f"whole analysis, median     {figures['analysis_median_s']:8.3f}  (target <= 0.5 s, issue 10)")
    print(f"peak resident memory       {figures['peak_rss_mb']:8.0f} MB (target < 2500 MB)")
    if "cold_process_s" in figures:
        print(f"cold `python -m apps.facial_vitiligo` process: {figures['cold_process_s']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
