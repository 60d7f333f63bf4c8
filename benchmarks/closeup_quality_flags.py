"""Do the close-up quality flags mark the photographs whose vitiligo % is wrong?

Runs the shipped close-up model on the held-out v2 close-up suite, computes each
photograph's quality flags (``models.quality.assess_closeup_quality``) and compares the
absolute error of "vitiligo % of visible skin" (model vs truth) on flagged and unflagged
photographs, per flag and per background.

    python -m benchmarks.closeup_quality_flags --n 120
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
from tqdm import tqdm

from models.lesion.evaluate import closeup_suite_samples
from models.lesion.inference import CloseUpSegmenter
from models.metrics import f_vitiligo
from models.quality import assess_closeup_quality


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=120)
    args = p.parse_args(argv)
    seg = CloseUpSegmenter.load()
    rows = []
    for name, s in tqdm(closeup_suite_samples(args.n), total=args.n, desc="close-ups"):
        skin, lesion = seg.predict(s.image)
        error = abs(f_vitiligo(lesion & skin, skin) - f_vitiligo(s.lesion_mask & s.skin_mask, s.skin_mask))
        flags = [f.key for f in assess_closeup_quality(s.image, skin, lesion).flags]
        rows.append({"name": name, "error": error, "flags": flags, "background": s.meta.get("background", "?")})
    def stats(errors: list[float]) -> dict:
        return {"n": len(errors), "mean_abs_error_pp": round(float(np.mean(errors)), 2) if errors else None}
    result = {"all": stats([r["error"] for r in rows]),
              "flagged": stats([r["error"] for r in rows if r["flags"]]),
              "not flagged": stats([r["error"] for r in rows if not r["flags"]]), "by_flag": {}, "by_background": {}}
    by_flag, by_bg = defaultdict(list), defaultdict(lambda: [0, 0])
    for r in rows:
        for f in r["flags"]:
            by_flag[f].append(r["error"])
        by_bg[r["background"]][0] += 1
        by_bg[r["background"]][1] += bool(r["flags"])
    result["by_flag"] = {k: stats(v) for k, v in sorted(by_flag.items())}
    result["by_background"] = {k: {"n": n, "flagged": f} for k, (n, f) in sorted(by_bg.items())}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
