"""Times each stage of the skin prick app on synthetic prick-test photographs, 512 to 4000 px.

The model is loaded once (as in a long-running service) and highdicom's tables are warmed
up; each repetition runs decode -> wheal/erythema segmentation (letterbox to the model's
input, U-Net, masks back to full size) -> reactions and measurements -> SEG written ->
SR written, on a JPEG VL photograph of each size (4:3). Reports per-stage medians and the
end-to-end median per size. Target: under 1 s per photograph with the model loaded.

    .venv/bin/python benchmarks/bench_skin_prick.py [--repeats 5] [--sizes 512 1024 2000 4000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2000, 4000], help="long side, px")
    parser.add_argument("--weights", default=None, help="weights (default: shipped)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()

    from apps import runtime

    runtime.tune_allocator()
    from apps.skin_prick.app import APP_NAME, load_segmenter
    from dicom.encode import photograph_dataset, write_dataset
    from dicom.seg import warm_up
    from models.prick.synthetic import generate_sample
    from operators.base import run_step
    from operators.cases import PhotoCase
    from operators.photo_loader import PhotoLoadStep
    from operators.seg_writer import SegWriterStep
    from operators.skin_prick_measurement import SkinPrickMeasurementStep
    from operators.skin_prick_segmentation import SkinPrickSegmentationStep
    from operators.sr_writer import SrWriterStep

    segmenter = load_segmenter(args.weights)
    algorithm = runtime.algorithm_identity(APP_NAME, segmenter)
    warm_up()
    work = Path(tempfile.mkdtemp(prefix="dermpacs-bench-prick-"))
    figures = {"model": segmenter.architecture, "sizes": {}}
    for long_side in args.sizes:
        shape = (long_side * 3 // 4, long_side)
        sample = generate_sample(0, 1, size=shape, n_sites=6)
        path = write_dataset(photograph_dataset(sample.image, body_part="SKIN"), work / f"prick_{long_side}.dcm")
        stage_times: dict[str, list[float]] = {}
        totals = []
        for rep in range(args.repeats + 1):  # the first repetition warms up and is not counted
            out = work / f"out_{long_side}_{rep}"
            steps = [PhotoLoadStep(), SkinPrickSegmentationStep(segmenter),
                     SkinPrickMeasurementStep(flare_edge=segmenter.config.flare_edge),
                     SegWriterStep(out, algorithm), SrWriterStep(out, algorithm)]
            case = PhotoCase(source=path)
            for step in steps:
                run_step(step, [case])  # SrWriterStep writes in finish(), timed below
            if not case.ok:
                raise SystemExit(f"{long_side}px: {case.failed_step}: {case.error}")
            if rep == 0:
                continue
            for name, seconds in case.timings.items():
                if name == "SR writer":  # writes in finish(), timed separately below
                    continue
                stage_times.setdefault(name, []).append(seconds)
            totals.append(sum(case.timings.values()))
        sr = SrWriterStep(work / "sr_timing", algorithm)
        import time

        started = time.perf_counter()
        sr.finish([case])
        sr_seconds = time.perf_counter() - started
        medians = {k: round(statistics.median(v), 4) for k, v in stage_times.items()}
        medians["SR writer (build + write)"] = round(sr_seconds, 4)
        total = round(statistics.median(totals) + sr_seconds, 3)
        figures["sizes"][f"{shape[1]}x{shape[0]}"] = {"stages_s": medians, "total_s": total,
                                                      "reactions": case.summary["reactions"]}
        print(f"{shape[1]}x{shape[0]}: total {total:.3f} s ({case.summary['reactions']} reactions)")
        for name, seconds in medians.items():
            print(f"    {name:32s} {seconds:.4f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
