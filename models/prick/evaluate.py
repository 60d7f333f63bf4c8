"""Evaluate skin prick segmentation: Dice, precision, recall per class; Bland-Altman of areas.

    # trained weights on held-out synthetic photographs (another seed range than training)
    python -m models.prick.evaluate --weights models/weights/skin_prick_unet.pt --data synthetic --count 60 --out runs/prick_eval
    # trained weights on a labelled folder (images/ + masks/ with 0/1/2 label PNGs)
    python -m models.prick.evaluate --weights W.pt --data folder --folder ROOT --out runs/prick_eval_local
    # the paper's protocol: k-fold cross-validation, a model trained per fold with a config
    python -m models.prick.evaluate --cv 5 --config skin_prick_paper --data folder --folder ROOT --out runs/prick_cv

Classes: "erythema" = the whole reaction (labels 1|2, wheal included; what the paper's
experts outlined), "wheal" = label 2. Per image Dice/precision/recall (mean +- SD over
images; over folds with --cv, the paper's 94.93+-2.32 / 95.19+-2.04 / 95.24+-2.63 for
erythema). Bland-Altman: per reference reaction (connected component of the truth, split
between wheals as in the app), predicted area = the best-overlapping predicted reaction
(0 when missed); mean difference (predicted - reference) and 1.96 SD limits, in mm2 for
synthetic data (the generator knows the scale), in pixels for folders. Writes
OUT/metrics.json and OUT/bland_altman.png and prints a summary.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from models.metrics import confusion, dice, precision, recall

from . import ERYTHEMA_HALO, WHEAL
from .config import load_config
from .data import kfold, list_folder_dataset, load_folder_sample
from .measure import bland_altman, find_reactions
from .synthetic import generate_sample

CLASSES = {"erythema": lambda a: a >= ERYTHEMA_HALO, "wheal": lambda a: a == WHEAL}
PAPER = {"dice": (94.93, 2.32), "precision": (95.19, 2.04), "recall": (95.24, 2.63)}


def predicted_label_map(segmenter, image: np.ndarray) -> np.ndarray:
    erythema, wheal = segmenter.predict(image)
    out = np.zeros(image.shape[:2], np.uint8)
    out[erythema] = ERYTHEMA_HALO
    out[wheal] = WHEAL
    return out


def _match_areas(pred: np.ndarray, truth: np.ndarray, px_area: float) -> dict[str, list[tuple[float, float]]]:
    """(predicted, reference) area pairs per reference reaction, for erythema and wheal."""
    refs = find_reactions(truth >= ERYTHEMA_HALO, truth == WHEAL, min_area_px=4)
    preds = find_reactions(pred >= ERYTHEMA_HALO, pred == WHEAL, min_area_px=4)
    shape = truth.shape
    pred_full = [p.full_masks(shape) for p in preds]
    pairs: dict[str, list[tuple[float, float]]] = {"erythema": [], "wheal": []}
    for r in refs:
        r_ery, _ = r.full_masks(shape)
        best, best_overlap = None, 0
        for k, (p_ery, _) in enumerate(pred_full):
            overlap = int(np.count_nonzero(p_ery & r_ery))
            if overlap > best_overlap:
                best, best_overlap = k, overlap
        p_e = preds[best].erythema_pixels if best is not None else 0
        p_w = preds[best].wheal_pixels if best is not None else 0
        pairs["erythema"].append((p_e * px_area, r.erythema_pixels * px_area))
        pairs["wheal"].append((p_w * px_area, r.wheal_pixels * px_area))
    return pairs


def evaluate_samples(segmenter, samples, area_unit: str) -> dict:
    """``samples`` yields (image, label map, mm2 per pixel or None)."""
    per_image: dict[str, dict[str, list[float]]] = {c: {"dice": [], "precision": [], "recall": []} for c in CLASSES}
    pooled = {c: None for c in CLASSES}
    areas: dict[str, list[tuple[float, float]]] = {"erythema": [], "wheal": []}
    n = 0
    for image, truth, px_area in samples:
        pred = predicted_label_map(segmenter, image)
        for name, sel in CLASSES.items():
            c = confusion(sel(pred), sel(truth))
            pooled[name] = c if pooled[name] is None else pooled[name] + c
            per_image[name]["dice"].append(dice(c))
            per_image[name]["precision"].append(precision(c))
            per_image[name]["recall"].append(recall(c))
        for k, v in _match_areas(pred, truth, px_area or 1.0).items():
            areas[k] += v
        n += 1
    result: dict = {"images": n, "area_unit": area_unit, "classes": {}, "bland_altman": {}}
    for name in CLASSES:
        result["classes"][name] = {
            **{f"{m}_mean": 100 * float(np.mean(v)) for m, v in per_image[name].items()},
            **{f"{m}_sd": 100 * float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for m, v in per_image[name].items()},
            "pooled_dice": 100 * dice(pooled[name]),
            "pooled_precision": 100 * precision(pooled[name]),
            "pooled_recall": 100 * recall(pooled[name]),
        }
    for name, pairs in areas.items():
        if len(pairs) >= 2:
            p, r = np.array(pairs).T
            result["bland_altman"][name] = {**bland_altman(p, r), "predicted": p.tolist(), "reference": r.tolist()}
    return result


def plot_bland_altman(result: dict, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("erythema", "wheal") if n in result["bland_altman"]]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(6 * max(1, len(names)), 4.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        ba = result["bland_altman"][name]
        p, r = np.array(ba["predicted"]), np.array(ba["reference"])
        ax.scatter((p + r) / 2, p - r, s=14, alpha=0.7)
        for y, style, text in ((ba["mean_difference"], "-", "mean"), (ba["loa_upper"], "--", "+1.96 SD"),
                               (ba["loa_lower"], "--", "-1.96 SD")):
            ax.axhline(y, color="tab:red", linestyle=style, linewidth=1)
            ax.annotate(f"{text}: {y:.1f}", xy=(1, y), xycoords=("axes fraction", "data"), ha="right",
                        va="bottom", fontsize=8, color="tab:red")
        unit = result["area_unit"]
        ax.set_xlabel(f"mean of predicted and reference {name} area ({unit})")
        ax.set_ylabel(f"predicted - reference ({unit})")
        ax.set_title(f"{name}: n={ba['n']}, mean diff {ba['mean_difference']:.1f}, "
                     f"LoA [{ba['loa_lower']:.1f}, {ba['loa_upper']:.1f}]", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def synthetic_samples(count: int, seed: int, size: int, offset: int):
    for i in range(count):
        s = generate_sample(seed, offset + i, size=(size, size))
        yield s.image, s.label, 1.0 / s.px_per_mm**2


def folder_samples(root: str | Path, names: list[str]):
    for name in names:
        image, label = load_folder_sample(root, name)
        yield image, label, None


def write_synthetic_folder(root: Path, count: int, seed: int, size: int, offset: int) -> list[str]:
    """Write generated samples as a folder dataset (images/ + masks/), e.g. for --cv."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        s = generate_sample(seed, offset + i, size=(size, size))
        name = f"prick_{i:04d}"
        cv2.imwrite(str(root / "images" / f"{name}.png"), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"{name}.png"), s.label)
        names.append(name)
    return names


def summary_lines(result: dict) -> list[str]:
    lines = [f"images: {result['images']}"]
    for name, m in result["classes"].items():
        lines.append(f"{name:9s} Dice {m['dice_mean']:.2f} +- {m['dice_sd']:.2f}  precision {m['precision_mean']:.2f} "
                     f"+- {m['precision_sd']:.2f}  recall {m['recall_mean']:.2f} +- {m['recall_sd']:.2f}  "
                     f"(pooled Dice {m['pooled_dice']:.2f})")
    for name, ba in result["bland_altman"].items():
        lines.append(f"Bland-Altman {name} area ({result['area_unit']}, n={ba['n']}): mean difference "
                     f"{ba['mean_difference']:.2f}, SD {ba['sd_difference']:.2f}, 95% limits of agreement "
                     f"[{ba['loa_lower']:.2f}, {ba['loa_upper']:.2f}]")
    return lines


def cross_validate(args, out: Path) -> dict:
    from .inference import PrickSegmenter
    from .train import train

    cfg = load_config(args.config)
    for attr in ("epochs", "iterations_per_epoch", "max_minutes", "batch_size"):
        value = getattr(args, attr)
        if value is not None:
            setattr(cfg.optim, attr, value)
    if args.data == "folder":
        root = Path(args.folder)
        names = list_folder_dataset(root)
    else:
        root = out / "synthetic_data"
        names = write_synthetic_folder(root, args.count, args.seed, args.size, offset=3_000_000)
    folds = []
    rng = np.random.default_rng(cfg.seed)
    for k, (train_names, test_names) in enumerate(kfold(names, args.cv, cfg.seed), start=1):
        order = [train_names[i] for i in rng.permutation(len(train_names))]
        n_val = max(1, len(order) // 8)  # the paper's 7:1 of the training part
        val_names, fit_names = order[:n_val], order[n_val:] or order
        cfg.name = f"{cfg.name.split('_fold')[0]}_fold{k}"
        fold_dir = out / f"fold{k}"
        train(cfg, fold_dir, folder=str(root), train_names=fit_names, val_names=val_names,
              log=lambda line, k=k: print(f"[fold {k}] {line}", flush=True))
        segmenter = PrickSegmenter.load(fold_dir / f"{cfg.name}.pt")
        result = evaluate_samples(segmenter, folder_samples(root, test_names), "pixels")
        folds.append(result)
        print(f"fold {k}: " + "; ".join(summary_lines(result)[1:3]), flush=True)
    summary: dict = {"folds": folds, "cv": args.cv, "classes": {}}
    for name in CLASSES:
        summary["classes"][name] = {}
        for metric in ("dice", "precision", "recall"):
            values = [f["classes"][name][f"{metric}_mean"] for f in folds]
            summary["classes"][name][f"{metric}_mean"] = float(np.mean(values))
            summary["classes"][name][f"{metric}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.prick.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="trained weights (.pt with its .yaml beside it)")
    p.add_argument("--data", choices=("synthetic", "folder"), default="synthetic")
    p.add_argument("--folder", help="ROOT with images/ and masks/ (label PNGs 0/1/2)")
    p.add_argument("--count", type=int, default=60, help="synthetic photographs")
    p.add_argument("--size", type=int, default=512, help="synthetic photograph side (the paper's 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cv", type=int, default=0, help="k-fold cross-validation (trains k models with --config)")
    p.add_argument("--config", default="skin_prick_paper")
    p.add_argument("--epochs", type=int)
    p.add_argument("--iterations-per-epoch", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.data == "folder" and not args.folder:
        p.error("--data folder needs --folder")
    if args.cv:
        summary = cross_validate(args, out)
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
        print(f"{args.cv}-fold cross-validation (mean +- SD over folds; paper erythema: "
              f"Dice {PAPER['dice'][0]}+-{PAPER['dice'][1]}, precision {PAPER['precision'][0]}+-{PAPER['precision'][1]}, "
              f"recall {PAPER['recall'][0]}+-{PAPER['recall'][1]})")
        for name, m in summary["classes"].items():
            print(f"{name:9s} Dice {m['dice_mean']:.2f} +- {m['dice_sd']:.2f}  precision {m['precision_mean']:.2f} "
                  f"+- {m['precision_sd']:.2f}  recall {m['recall_mean']:.2f} +- {m['recall_sd']:.2f}")
        merged = {"area_unit": "pixels", "bland_altman": {}}
        for name in ("erythema", "wheal"):
            p_all = [v for f in summary["folds"] for v in f["bland_altman"].get(name, {}).get("predicted", [])]
            r_all = [v for f in summary["folds"] for v in f["bland_altman"].get(name, {}).get("reference", [])]
            if len(p_all) >= 2:
                merged["bland_altman"][name] = {**bland_altman(p_all, r_all), "predicted": p_all, "reference": r_all}
        if merged["bland_altman"]:
            plot_bland_altman(merged, out / "bland_altman.png", f"{args.cv}-fold CV, all test folds")
            for line in summary_lines({"images": sum(f["images"] for f in summary["folds"]), "classes": {}, **merged})[1:]:
                print(line)
        return 0
    if not args.weights:
        p.error("--weights is required unless --cv is given")
    from .inference import PrickSegmenter

    segmenter = PrickSegmenter.load(args.weights)
    if args.data == "folder":
        names = list_folder_dataset(args.folder)
        result = evaluate_samples(segmenter, folder_samples(args.folder, names), "pixels")
    else:
        from .train import TEST_OFFSET

        result = evaluate_samples(segmenter, synthetic_samples(args.count, args.seed, args.size, TEST_OFFSET), "mm2")
    result["weights"] = str(args.weights)
    result["weights_sha256"] = segmenter.weights_sha256
    result["data"] = args.data if args.data == "folder" else f"synthetic, {args.count} x {args.size}px, seed {args.seed}, held-out index range"
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    plot_bland_altman(result, out / "bland_altman.png", f"{segmenter.name} {segmenter.version}")
    for line in summary_lines(result):
        print(line)
    print(f"written: {out / 'metrics.json'}, {out / 'bland_altman.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
