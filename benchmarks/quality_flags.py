"""Do the quality flags mark the photographs whose vitiligo % is wrong?

Runs a shipped model on its held-out suite (facial: generator-v2 face ROIs, F-Vitiligo;
close-up: v2 close-ups, vitiligo % of visible skin), computes each photograph's quality
flags (``models.quality``) and compares the absolute error (model vs truth) on flagged and
unflagged photographs, per flag and per background (close-ups) or skin type (faces).

    python -m benchmarks.quality_flags --app closeup --n 120
    python -m benchmarks.quality_flags --app facial --n 240
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
from tqdm import tqdm

from models.metrics import f_vitiligo
from models.quality import assess_closeup_quality, assess_quality


def closeup_rows(n: int):
    from models.lesion.evaluate import closeup_suite_samples
    from models.lesion.inference import CloseUpSegmenter

    seg = CloseUpSegmenter.load()
    for _name, s in tqdm(closeup_suite_samples(n), total=n, desc="close-ups"):
        skin, lesion = seg.predict(s.image)
        error = abs(f_vitiligo(lesion & skin, skin) - f_vitiligo(s.lesion_mask & s.skin_mask, s.skin_mask))
        yield error, assess_closeup_quality(s.image, skin, lesion), s.meta.get("background", "?")


def facial_rows(n: int):
    """Each suite ROI as a face filling a photograph 1.5x its size (no size/position flags)."""
    from models.facial.evaluate import HELD_OUT_SEED
    from models.facial.evaluation_suite import suite_samples
    from models.facial.inference import LesionSegmenter

    seg = LesionSegmenter.load()
    for _name, s in tqdm(suite_samples(n, HELD_OUT_SEED), total=n, desc="faces"):
        lesion = (seg.predict(s.image, s.skin_mask) >= 0.5) & s.skin_mask
        error = abs(f_vitiligo(lesion, s.skin_mask) - f_vitiligo(s.lesion_mask & s.skin_mask, s.skin_mask))
        h, w = s.image.shape[:2]
        report = assess_quality((int(1.5 * h), int(1.5 * w)), (0, 0, w, h), 1, s.image, s.skin_mask, lesion)
        yield error, report, f"type {s.meta.get('skin_type', '?')}"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--app", choices=("closeup", "facial"), default="closeup")
    p.add_argument("--n", type=int, default=120)
    args = p.parse_args(argv)
    source = closeup_rows if args.app == "closeup" else facial_rows
    rows = [{"error": e, "flags": [f.key for f in r.flags], "group": g} for e, r, g in source(args.n)]

    def stats(errors: list[float]) -> dict:
        return {"n": len(errors), "mean_abs_error_pp": round(float(np.mean(errors)), 2) if errors else None}
    result = {"all": stats([r["error"] for r in rows]),
              "flagged": stats([r["error"] for r in rows if r["flags"]]),
              "not flagged": stats([r["error"] for r in rows if not r["flags"]]), "by_flag": {}, "by_group": {}}
    by_flag, by_group = defaultdict(list), defaultdict(lambda: [0, 0])
    for r in rows:
        for f in r["flags"]:
            by_flag[f].append(r["error"])
        by_group[r["group"]][0] += 1
        by_group[r["group"]][1] += bool(r["flags"])
    result["by_flag"] = {k: stats(v) for k, v in sorted(by_flag.items())}
    result["by_group"] = {k: {"n": n, "flagged": f} for k, (n, f) in sorted(by_group.items())}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
