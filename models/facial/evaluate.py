"""Evaluate a lesion segmenter with the paper's metrics, through the app's inference path.

    python -m models.facial.evaluate --data v2 --n 240 --method model colour_rule --out runs/suite
    python -m models.facial.evaluate --data synthetic --n 200 --out runs/eval_synthetic
    python -m models.facial.evaluate --data astronaut --n 50 --out runs/eval_astronaut
    python -m models.facial.evaluate --data folder --folder /data/vitiligo --out runs/eval_local

Every image goes through ``LesionSegmenter.predict`` (mask, letterbox, net, resize back),
so the numbers are what the app gets. Metrics are over the face-skin mask: F1, IoU, mIoU
(mean of lesion and background IoU), Dice, precision, recall — pooled over all pixels of
the set and as per-image means — plus the absolute F-Vitiligo error in percentage points.
Writes ``metrics.json`` and ``figure.png`` (overlays in the paper's colours: green true
positive, red false positive, blue false negative; and predicted vs true F-Vitiligo).

``--data v2`` runs the evaluation suite instead (``models.facial.evaluation_suite``): generator-v2
faces, Dice / F-Vitiligo error / Spearman broken down by extent, skin type, source, ROI
size and visible/UV, for each ``--method`` (``model``, ``colour_rule`` = L* above Otsu
inside the skin mask), with contact sheets.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .data import list_folder_dataset, load_folder_sample
from .inference import DEFAULT_WEIGHTS, LesionSegmenter
from ..metrics import Confusion, confusion, f_vitiligo, metrics_from_confusion, segmentation_metrics
from .synthetic import SyntheticSample, astronaut_sample, generate_sample, sample_rng

# Held-out seeds: disjoint from training (train uses its config seed and seed + offsets).
HELD_OUT_SEED = 777_000_001


def overlay(image: np.ndarray, pred: np.ndarray, truth: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Paper convention: green = true positive, red = false positive, blue = false negative."""
    out = image.astype(np.float32).copy()
    for m, colour in ((pred & truth, (0, 255, 0)), (pred & ~truth, (255, 0, 0)), (~pred & truth, (0, 0, 255))):
        out[m] = (1 - alpha) * out[m] + alpha * np.array(colour, np.float32)
    return out.astype(np.uint8)


def held_out_samples(kind: str, n: int, seed: int, long_side: int, folder: str | None = None,
                     uv_fraction: float = 0.35):
    """Yield (name, SyntheticSample) of the evaluation set."""
    if kind == "folder":
        if not folder:
            raise ValueError("--data folder needs --folder")
        for name in list_folder_dataset(folder)[: n or None]:
            yield name, load_folder_sample(folder, name)
        return
    for i in range(n):
        rng = sample_rng(seed, i)
        if kind == "astronaut":
            s: SyntheticSample = astronaut_sample(rng, long_side, uv=False)
        else:
            s = generate_sample(rng, long_side, uv_fraction=uv_fraction, astronaut_fraction=0.0)
        yield f"{kind}_{i:04d}", s


def evaluate(segmenter: LesionSegmenter, samples, out_dir: Path, threshold: float = 0.5,
             n_figure: int = 6) -> dict:
    """Run the segmenter on samples; write metrics.json + figure.png; return the metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pooled = Confusion(0, 0, 0, 0)
    per_image = []
    shown: list[tuple[str, np.ndarray, np.ndarray]] = []
    seconds = []
    for name, s in samples:
        t0 = time.perf_counter()
        prob = segmenter.predict(s.image, s.skin_mask)
        seconds.append(time.perf_counter() - t0)
        pred = (prob >= threshold) & s.skin_mask
        c = confusion(pred, s.lesion_mask, s.skin_mask)
        pooled = pooled + c
        fv_true = f_vitiligo(s.lesion_mask, s.skin_mask)
        fv_pred = f_vitiligo(pred, s.skin_mask)
        per_image.append({"name": name, "uv": bool(s.uv), **metrics_from_confusion(c),
                          "f_vitiligo_true": fv_true, "f_vitiligo_pred": fv_pred,
                          "f_vitiligo_abs_error": abs(fv_pred - fv_true)})
        if len(shown) < n_figure:
            shown.append((name, s.image, overlay(s.image, pred, s.lesion_mask)))
    if not per_image:
        raise ValueError("no samples to evaluate")
    keys = ("f1", "iou", "miou", "dice", "precision", "recall")
    err = np.array([r["f_vitiligo_abs_error"] for r in per_image])
    result = {
        "weights": str(segmenter.weights_path), "weights_sha256": segmenter.weights_sha256,
        "model": segmenter.name, "version": segmenter.version, "n_images": len(per_image),
        "threshold": threshold,
        "pooled": metrics_from_confusion(pooled),
        "mean_per_image": {k: float(np.mean([r[k] for r in per_image])) for k in keys},
        "f_vitiligo_abs_error_pp": {"median": float(np.median(err)), "mean": float(err.mean()),
                                    "p90": float(np.percentile(err, 90)), "max": float(err.max())},
        "predict_seconds_median": float(np.median(seconds)),
        "per_image": per_image,
    }
    for flag, label in ((False, "visible"), (True, "uv")):
        rows = [r for r in per_image if r["uv"] == flag]
        if rows and len(rows) < len(per_image):
            result[f"subset_{label}"] = {"n": len(rows), **{k: float(np.mean([r[k] for r in rows])) for k in keys},
                                         "f_vitiligo_abs_error_median": float(np.median([r["f_vitiligo_abs_error"] for r in rows]))}
    with open(out_dir / "metrics.json", "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    _figure(shown, per_image, out_dir / "figure.png")
    return result


def _figure(shown, per_image, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(2, len(shown) + len(shown) % 2)  # even, so the bottom row splits in halves
    fig = plt.figure(figsize=(3 * cols, 9.5))
    grid = fig.add_gridspec(3, cols)
    for i, (name, img, ov) in enumerate(shown):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(img)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
        ax = fig.add_subplot(grid[1, i])
        ax.imshow(ov)
        ax.set_title("TP green / FP red / FN blue", fontsize=7)
        ax.axis("off")
    ax = fig.add_subplot(grid[2, : cols // 2])
    t = np.array([r["f_vitiligo_true"] for r in per_image])
    p = np.array([r["f_vitiligo_pred"] for r in per_image])
    ax.scatter(t, p, s=10, c=["tab:purple" if r["uv"] else "tab:orange" for r in per_image])
    hi = max(1.0, float(max(t.max(), p.max())) * 1.05)
    ax.plot([0, hi], [0, hi], "k--", lw=1)
    ax.set_xlabel("true F-Vitiligo (%)")
    ax.set_ylabel("predicted F-Vitiligo (%)")
    ax.set_title("F-Vitiligo (orange visible, purple UV)", fontsize=9)
    ax = fig.add_subplot(grid[2, cols // 2:])
    ax.hist([r["f1"] for r in per_image], bins=20, range=(0, 1), color="tab:green")
    ax.set_xlabel("per-image F1")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m models.facial.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="weights .pt (config .yaml beside it)")
    p.add_argument("--data", choices=("synthetic", "astronaut", "folder", "v2"), default="synthetic",
                   help="v2: the evaluation suite on generator-v2 faces (breakdown tables, contact sheets)")
    p.add_argument("--method", nargs="+", default=["model", "colour_rule"],
                   help="suite methods to compare (--data v2): model, colour_rule")
    p.add_argument("--folder", help="user dataset root for --data folder")
    p.add_argument("--n", type=int, default=200, help="number of held-out samples (folder: max images, 0 = all)")
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="held-out generator seed")
    p.add_argument("--long-side", type=int, default=768,
                   help="ROI long side of generated samples (letterboxed down by predict)")
    p.add_argument("--uv-fraction", type=float, default=0.35)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--num-threads", type=int)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast inference")
    p.add_argument("--out", type=Path, required=True)
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.data == "v2":
        return _main_suite(args)
    seg = LesionSegmenter.load(args.weights, num_threads=args.num_threads, bf16=args.bf16)
    samples = held_out_samples(args.data, args.n, args.seed, args.long_side, args.folder, args.uv_fraction)
    r = evaluate(seg, samples, args.out, args.threshold)
    print(f"{r['model']} {r['version']} on {args.data} (n={r['n_images']}), sha256 {r['weights_sha256'][:12]}")
    for section in ("pooled", "mean_per_image"):
        print(f"  {section:15s} " + "  ".join(f"{k} {100 * v:6.2f}" for k, v in r[section].items()))
    e = r["f_vitiligo_abs_error_pp"]
    print(f"  |F-Vitiligo error| pp: median {e['median']:.2f}  mean {e['mean']:.2f}  "
          f"p90 {e['p90']:.2f}  max {e['max']:.2f}")
    print(f"  predict median {1000 * r['predict_seconds_median']:.1f} ms;  wrote {args.out}/metrics.json, figure.png")
    return r


def _main_suite(args: argparse.Namespace) -> dict:
    from .evaluation_suite import default_methods, run_suite, suite_samples

    seg = LesionSegmenter.load(args.weights, num_threads=args.num_threads, bf16=args.bf16) \
        if "model" in args.method else None
    methods = default_methods(seg, args.threshold, args.method)
    summary = run_suite(methods, suite_samples(args.n, args.seed), args.out)
    if seg is not None:
        summary["weights"] = {"path": str(seg.weights_path), "sha256": seg.weights_sha256,
                              "model": seg.name, "version": seg.version}
    print((args.out / "suite.md").read_text(encoding="utf-8"))
    print(f"wrote {args.out}/suite.json, suite.md, contact_sheet_*.png")
    return summary


if __name__ == "__main__":
    main()
