"""Evaluate a scalp grader as in the paper: per-indicator macro-F1, overall macro-F1,
Hamming accuracy and a confusion matrix per indicator (2x3 grid figure).

    python -m models.scalp.evaluate --weights models/weights/scalp_efficientnet_b0.pt \
        --synthetic 300 --out runs/scalp_eval            # held-out synthetic images
    python -m models.scalp.evaluate --weights W --csv test.csv [--image-root R] --out OUT

Writes OUT/metrics.json (with the paper's figures beside ours), OUT/confusion_matrices.png
and OUT/predictions.csv.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from . import GRADE_NAMES, INDICATOR_LABELS, INDICATORS, NUM_GRADES
from .metrics import scalp_metrics

PAPER = {
    "overall_macro_f1": 0.518,
    "hamming_accuracy": 0.658,
    "per_indicator_macro_f1": {
        "micro_keratin": 0.458, "excess_sebum": 0.517, "interfollicular_erythema": 0.661,
        "follicular_erythema_pustules": 0.311, "dandruff": 0.624, "hair_loss": 0.526,
    },
}


def confusion_figure(metrics: dict, path: Path) -> None:
    """2x3 grid: one row-normalised confusion matrix per indicator, counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 8.5))
    for ax, name in zip(axes.ravel(), INDICATORS):
        m = metrics["per_indicator"][name]
        cm = np.asarray(m["confusion_matrix"], dtype=np.float64)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(NUM_GRADES):
            for j in range(NUM_GRADES):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                        color="white" if norm[i, j] > 0.5 else "black", fontsize=10)
        ax.set_xticks(range(NUM_GRADES))
        ax.set_yticks(range(NUM_GRADES))
        ax.set_xlabel("predicted grade")
        ax.set_ylabel("true grade")
        ax.set_title(f"{INDICATOR_LABELS[name]}\nmacro-F1 {m['macro_f1']:.3f}", fontsize=11)
    fig.suptitle(f"overall macro-F1 {metrics['overall_macro_f1']:.3f}, Hamming accuracy "
                 f"{metrics['hamming_accuracy']:.3f} (n={metrics['n_images']}; grades: {', '.join(GRADE_NAMES)})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def evaluate(grader, dataset, out_dir: Path, names: list[str] | None = None) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth, pred, probs = [], [], []
    for i in range(len(dataset)):
        image, grades = dataset.get(i)
        r = grader.predict(image)
        truth.append(grades)
        pred.append(r.grades)
        probs.append(r.probabilities)
    truth, pred = np.asarray(truth, np.int64), np.asarray(pred, np.int64)
    metrics = scalp_metrics(truth, pred, INDICATORS, NUM_GRADES)
    metrics["weights"] = str(grader.weights_path)
    metrics["weights_sha256"] = grader.weights_sha256
    metrics["model"] = {"name": grader.name, "version": grader.version, "architecture": grader.architecture}
    metrics["paper"] = PAPER
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    confusion_figure(metrics, out_dir / "confusion_matrices.png")
    with open(out_dir / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", *(f"true_{n}" for n in INDICATORS), *(f"pred_{n}" for n in INDICATORS)])
        for i in range(len(truth)):
            w.writerow([names[i] if names else i, *truth[i].tolist(), *pred[i].tolist()])
    return metrics


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Evaluate a scalp grader (macro-F1, Hamming accuracy, confusion matrices)")
    ap.add_argument("--weights", help="weights .pt with its .yaml beside it (default: the shipped weights)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", help="grades CSV (image,micro_keratin,...,hair_loss)")
    src.add_argument("--synthetic", type=int, metavar="N", help="N held-out synthetic images")
    ap.add_argument("--image-root", help="folder the CSV's image paths are relative to")
    ap.add_argument("--seed", type=int, default=20261124, help="synthetic seed (default: the shipped run's)")
    ap.add_argument("--out", required=True)
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    from .data import CsvScalpDataset, SyntheticScalpDataset
    from .inference import ScalpGrader
    from .train import TEST_START

    grader = ScalpGrader.load(args.weights)
    if args.csv:
        dataset = CsvScalpDataset(args.csv, args.image_root)
        names = [str(p) for p in dataset.paths]
    else:
        dataset = SyntheticScalpDataset(args.synthetic, args.seed, start=TEST_START)
        names = None
    metrics = evaluate(grader, dataset, Path(args.out), names)
    per = {k: round(v["macro_f1"], 3) for k, v in metrics["per_indicator"].items()}
    print(json.dumps({"overall_macro_f1": round(metrics["overall_macro_f1"], 3),
                      "hamming_accuracy": round(metrics["hamming_accuracy"], 3), "per_indicator_macro_f1": per}, indent=2))
    return metrics


if __name__ == "__main__":
    main()
