"""Evaluate close-up vitiligo weights: the paper's F1 table (SEEDS.md B) on held-out data.

    python -m models.lesion.evaluate --weights models/weights/vitiligo_lesion_*.pt --out runs/eval_lesion
    python -m models.lesion.evaluate --weights W.pt --data-folder HELDOUT --out runs/eval_local
    python -m models.lesion.evaluate --suite --n 200 --weights W.pt --out runs/suite_closeup

``--suite``: the issue-10 evaluation suite on generator-v2 close-ups
(``models.facial.evaluation_suite`` scores each image; the breakdown, ``suite.md`` /
``suite.json`` and contact sheets come from ``models.report``, as for every task): Dice and
"% of visible skin" error and Spearman by extent bin, skin type, background (none, light
wall/fabric/glitter, other) and image size, for the network and for the colour rule
(L* above Otsu inside the network's own skin mask).

Per weights file: lesion F1 (the paper's metric), IoU, precision, recall, pooled over the
held-out set (confusion summed over images), plus visible-skin IoU. Writes
``OUT/metrics.json`` and ``OUT/f1_table.png`` (ours next to the paper's numbers).
"""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np

from models.metrics import Confusion, confusion, f1, iou, precision, recall

# The paper's mobilenet_v3 rows are compared with our MobileNetV3-Small encoder.
PAPER_F1 = {
    ("deeplabv3", "resnet50"): 86.01, ("deeplabv3", "mobilenetv3_small"): 83.82,
    ("unet", "resnet50"): 85.23, ("unet", "mobilenetv3_small"): 83.88,
}


def evaluate_weights(weights: str | Path, pairs, groups: list[str] | None = None) -> dict:
    """Pooled lesion F1/IoU/precision/recall and skin IoU; per-group F1 when ``groups`` given."""
    from .inference import CloseUpSegmenter

    seg = CloseUpSegmenter.load(weights)
    lesion_c, skin_c = Confusion(0, 0, 0, 0), Confusion(0, 0, 0, 0)
    by_group: dict[str, Confusion] = {}
    for index, (image, labels) in enumerate(pairs):
        skin, lesion = seg.predict(image)
        c = confusion(lesion, labels == 2)
        lesion_c = lesion_c + c
        skin_c = skin_c + confusion(skin, labels >= 1)
        if groups is not None:
            by_group[groups[index]] = by_group.get(groups[index], Confusion(0, 0, 0, 0)) + c
    extra = {"f1_by_severity": {k: round(100 * f1(v), 2) for k, v in sorted(by_group.items())}} if by_group else {}
    return {**extra,
        "f1": round(100 * f1(lesion_c), 2), "iou": round(100 * iou(lesion_c), 2),
        "precision": round(100 * precision(lesion_c), 2), "recall": round(100 * recall(lesion_c), 2),
        "skin_iou": round(100 * iou(skin_c), 2), "images": len(pairs),
        "lesion_pixel_percent": round(100 * float(np.mean([np.mean(l == 2) for _, l in pairs])), 2),
    }


def _figure(rows: list[dict], path: Path) -> None:
    """Bars per architecture of the paper's table: ours where weights exist, the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = {(r["architecture"], r["encoder"]): r["f1"] for r in rows}
    keys = list(PAPER_F1) + [k for k in ours if k not in PAPER_F1]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(2.0 * len(keys) + 1, 3.8))
    ax.bar(x - 0.2, [ours.get(k, 0) for k in keys], 0.4, label="ours (held-out)")
    ax.bar(x + 0.2, [PAPER_F1.get(k, 0) for k in keys], 0.4, label="paper (real web images)")
    for i, k in enumerate(keys):
        ax.text(i - 0.2, (ours.get(k) or 0) + 1, f"{ours[k]:.1f}" if k in ours else "no\nweights", ha="center", fontsize=7)
        if k in PAPER_F1:
            ax.text(i + 0.2, PAPER_F1[k] + 1, f"{PAPER_F1[k]:.1f}", ha="center", fontsize=7)
    ax.set_xticks(x, [f"{a}\n{e}" for a, e in keys], fontsize=8)
    ax.set_ylabel("lesion F1 %")
    ax.set_ylim(0, 118)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


SUITE_SEED = 424_242
SUITE_SIZES = (256, 416, 768, 1200)


def closeup_suite_samples(n: int, seed: int = SUITE_SEED):
    """Held-out v2 close-ups of several sizes (400-px web photos to large ones)."""
    from models.facial.synthetic import sample_rng

    from .synthetic import render_closeup_v2

    for i in range(n):
        side = SUITE_SIZES[i % len(SUITE_SIZES)]
        yield f"closeup_{i:04d}", render_closeup_v2(side, side, sample_rng(seed, i))


def run_closeup_suite(weights: str | Path, n: int, out: Path) -> dict:
    from models.facial.evaluation_suite import CLOSEUP_FACTORS, run_suite
    from models.skin_reference import colour_rule_mask

    from .inference import CloseUpSegmenter

    seg = CloseUpSegmenter.load(weights)

    def model(rgb, _skin):
        skin, lesion = seg.predict(rgb)
        return lesion, skin

    def colour_rule(rgb, _skin):
        skin, _lesion = seg.predict(rgb)
        return colour_rule_mask(rgb, skin), skin

    summary = run_suite({"model": model, "colour_rule": colour_rule}, closeup_suite_samples(n), out,
                        factors=CLOSEUP_FACTORS, title="held-out generator-v2 close-ups")
    print((out / "suite.md").read_text(encoding="utf-8"))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", action="store_true", help="the issue-10 breakdown suite on v2 close-ups")
    p.add_argument("--weights", nargs="+", default=["models/weights/vitiligo_lesion_*.pt"])
    p.add_argument("--data-folder", help="held-out ROOT/images + ROOT/masks (+ skin/); default synthetic")
    p.add_argument("--n", type=int, help="number of held-out synthetic images (default: config n_val)")
    p.add_argument("--out", default="runs/eval_vitiligo_lesion")
    a = p.parse_args(argv)
    if a.suite:
        files = sorted({f for w in a.weights for f in (glob.glob(w) or [w])})
        for weights in files:
            run_closeup_suite(weights, a.n or 200, Path(a.out) / Path(weights).stem if len(files) > 1 else Path(a.out))
        return 0
    from .config import load_lesion_config
    from .data import build_pairs, read_folder, resize_pair

    files = sorted({f for w in a.weights for f in (glob.glob(w) or [w])})
    rows, cache = [], {}
    for weights in files:
        cfg = load_lesion_config(Path(weights).with_suffix(".yaml"))
        if a.data_folder:
            pairs = [resize_pair(i, l, cfg.data.resize) for i, l in read_folder(a.data_folder)]
        else:
            if a.n:
                cfg.data.n_val = a.n
            key = (cfg.data.val_seed, cfg.data.n_val, cfg.data.resize)
            if key not in cache:
                from .synthetic import generate_closeup

                cache[key] = (build_pairs(cfg.data, "val"), [
                    generate_closeup(cfg.data.val_seed, i, size=cfg.data.resize).meta["severity"] for i in range(cfg.data.n_val)])
            pairs, severities = cache[key]
        m = evaluate_weights(weights, pairs, None if a.data_folder else severities)
        row = {"weights": Path(weights).name, "architecture": cfg.model.architecture, "encoder": cfg.model.encoder,
               **m, "paper_f1": PAPER_F1.get((cfg.model.architecture, cfg.model.encoder))}
        rows.append(row)
        print(f"{row['weights']}: F1 {m['f1']:.2f} IoU {m['iou']:.2f} P {m['precision']:.2f} R {m['recall']:.2f}"
              f" (paper F1 {row['paper_f1']})")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({
        "data": a.data_folder or "synthetic held-out", "rows": rows,
        "paper_f1": [{"architecture": k[0], "encoder": k[1], "f1": v} for k, v in PAPER_F1.items()],
    }, indent=2))
    _figure(rows, out / "f1_table.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
