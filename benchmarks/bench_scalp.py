"""Times the scalp app's stages on one 640x480 JPEG VL scalp photograph (target: < 1 s).

The grader is loaded once (as in a long-running service); each repetition runs decode ->
grading (EfficientNet, six heads) -> SR written. Reports per-stage medians, the end-to-end
median, the grader alone in fp32, peak resident memory, and the wall time of one cold
`python -m apps.scalp` process for reference.

    .venv/bin/python benchmarks/bench_scalp.py [--repeats 15] [--weights W] [--json out.json]
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
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--weights", default=None, help="weights file (default: the shipped ones)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument("--skip-process", action="store_true", help="skip the cold-process measurement")
    args = parser.parse_args()

    from apps import runtime

    runtime.tune_allocator()
    from pydicom.uid import JPEGBaseline8Bit

    from apps.scalp.app import APP_NAME, load_grader
    from dicom.encode import photograph_dataset, write_dataset
    from dicom.seg import warm_up
    from models.scalp.synthetic import generate_sample
    from operators.base import run_step
    from operators.cases import PhotoCase
    from operators.photo_loader import PhotoLoadStep
    from operators.scalp_grading import ScalpGradingStep
    from operators.sr_writer import SrWriterStep

    work = Path(tempfile.mkdtemp(prefix="dermpacs-bench-scalp-"))
    (work / "in").mkdir()
    sample = generate_sample(2026, 0)
    path = write_dataset(photograph_dataset(sample.image, transfer_syntax=JPEGBaseline8Bit, body_part="SCALP"),
                         work / "in" / "scalp.dcm")
    t0 = time.perf_counter()
    grader = load_grader(args.weights)
    load_s = time.perf_counter() - t0
    algorithm = runtime.algorithm_identity(APP_NAME, grader)
    warm_up()
    steps = [PhotoLoadStep(), ScalpGradingStep(grader), SrWriterStep(work / "out", algorithm)]
    for _ in range(2):  # warm-up (first passes allocate)
        grader.predict(sample.image)
    stage: dict[str, list[float]] = {s.step_name: [] for s in steps}
    total: list[float] = []
    for _ in range(args.repeats):
        cases = [PhotoCase(source=path)]
        start = time.perf_counter()
        for s in steps:
            run_step(s, cases)
            stage[s.step_name].append(cases[0].timings.get(s.step_name, 0.0))
        total.append(time.perf_counter() - start)
        assert cases[0].ok, cases[0].error
    model_only = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        grader.predict(sample.image)
        model_only.append(time.perf_counter() - start)
    figures = {
        "image": "640x480 JPEG VL Photographic, synthetic scalp close-up",
        "model": f"{grader.name} {grader.version} ({grader.architecture})",
        "repeats": args.repeats,
        "load_model_s": round(load_s, 3),
        "stages_median_s": {k: round(statistics.median(v), 4) for k, v in stage.items()},
        # the SR is built and written in the SR step's finish() (once per series), untimed per case
        "sr_build_and_write_median_s": round(statistics.median(
            t - sum(stage[k][i] for k in stage) for i, t in enumerate(total)), 4),
        "end_to_end_median_s": round(statistics.median(total), 4),
        "grader_predict_median_s": round(statistics.median(model_only), 4),
        "grader_predict_p90_s": round(sorted(model_only)[int(0.9 * (len(model_only) - 1))], 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if not args.skip_process:
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "apps.scalp", "-i", str(work / "in"), "-o", str(work / "app_out")]
        if args.weights:
            cmd += ["-m", args.weights]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        figures["cold_process_s"] = round(time.perf_counter() - start, 2)
        figures["cold_process_exit"] = proc.returncode
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
