"""Times each stage of the vitiligo close-up app on one 3000x4000 JPEG VL photograph.

Models are loaded once (as in a long-running service); each repetition runs decode ->
skin + vitiligo segmentation -> area %, count, RGB difference, CIEDE2000 -> SEG written ->
SR written. Reports per-stage medians, the end-to-end median (target < 1.5 s) and the
process's peak resident memory. Figures are reported, never asserted.

    .venv/bin/python benchmarks/bench_vitiligo_lesion.py [--repeats 5] [--weights W.pt] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, nargs=2, default=(3000, 4000), metavar=("ROWS", "COLS"))
    parser.add_argument("--weights", default=None, help="weights file (default: the shipped ones)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()

    from apps import runtime

    runtime.tune_allocator()
    from pydicom.uid import JPEGBaseline8Bit

    from apps.vitiligo_lesion.app import APP_NAME, load_segmenter
    from dicom.encode import photograph_dataset, write_dataset
    from dicom.seg import warm_up
    from models.lesion.synthetic import render_closeup
    from models.facial.synthetic import sample_rng
    from operators.base import run_step
    from operators.cases import PhotoCase
    from operators.closeup_segmentation import CloseUpSegmentationStep
    from operators.photo_loader import PhotoLoadStep
    from operators.seg_writer import SegWriterStep
    from operators.sr_writer import SrWriterStep
    from operators.vitiligo_severity import VitiligoSeverityStep

    work = Path(tempfile.mkdtemp(prefix="dermpacs-bench-"))
    rows, cols = args.size
    # Rendered at a quarter of the size and upscaled (camera photographs are smooth at the
    # pixel level), so the generator's float buffers do not dominate the peak memory.
    small = render_closeup(rows // 4, cols // 4, sample_rng(7, 0), severity="high", lesion_prob=1.0)
    import cv2
    import numpy as np

    image = cv2.resize(small.image, (cols, rows), interpolation=cv2.INTER_CUBIC)
    truth_lesion = cv2.resize(small.lesion_mask.view(np.uint8), (cols, rows), interpolation=cv2.INTER_NEAREST)
    truth_skin = cv2.resize(small.skin_mask.view(np.uint8), (cols, rows), interpolation=cv2.INTER_NEAREST)
    del small
    (work / "in").mkdir()
    path = write_dataset(photograph_dataset(image, transfer_syntax=JPEGBaseline8Bit, body_part="SKIN"),
                         work / "in" / "closeup.dcm")
    segmenter = load_segmenter(args.weights)
    algorithm = runtime.algorithm_identity(APP_NAME, segmenter)
    warm_up()
    steps = [
        PhotoLoadStep(),
        CloseUpSegmentationStep(segmenter),
        VitiligoSeverityStep(),
        SegWriterStep(work / "out", algorithm),
        SrWriterStep(work / "out", algorithm),
    ]
    totals: list[float] = []
    per_stage: dict[str, list[float]] = {s.step_name: [] for s in steps}
    for repeat in range(args.repeats + 1):  # the first run warms caches and is not counted
        cases = [PhotoCase(source=Path(path))]
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
    summary = cases[0].summary
    figures = {
        "photo": f"{rows}x{cols} JPEG baseline VL Photographic Image (synthetic close-up)",
        "model": f"{segmenter.name} {segmenter.version} ({segmenter.architecture})",
        "repeats": args.repeats,
        "stage_median_s": {k: round(statistics.median(v), 4) for k, v in per_stage.items()},
        "analysis_median_s": round(statistics.median(totals), 4),
        "analysis_min_s": round(min(totals), 4),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "lesion_percent_of_skin": round(summary["lesion_percent_of_skin"], 3),
        "true_lesion_percent_of_skin": round(100 * int(truth_lesion.sum()) / int(truth_skin.sum()), 3),
        "rgb_difference": summary["rgb_difference"] and round(summary["rgb_difference"], 2),
        "delta_e2000": summary["delta_e2000"] and round(summary["delta_e2000"], 2),
    }
    print("stage                            median (s)")
    for name, value in figures["stage_median_s"].items():
        print(f"  {name:31} {value:8.3f}")
    print(f"whole analysis, median           {figures['analysis_median_s']:8.3f}  (target < 1.5 s)")
    print(f"peak resident memory             {figures['peak_rss_mb']:8.0f} MB")
    print(f"lesion % of skin {figures['lesion_percent_of_skin']} (painted {figures['true_lesion_percent_of_skin']}),"
          f" RGB difference {figures['rgb_difference']}, dE2000 {figures['delta_e2000']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
