"""The facial-vitiligo evaluation suite: results broken down by the factors that failed on
real photographs (issue 10), for the network and for the plain colour rule side by side.

    python -m models.facial.evaluate --data v2 --n 240 --method model colour_rule --out runs/suite

Held-out samples come from generator v2 (``models.facial.vitiligo_generator``), stratified so
every extent bin (0-5, 5-25, 25-50, 50-95 % of the skin) and every skin type I-VI is
equally represented; the source (synthetic skin, the astronaut, Grace Hopper), ROI size
and visible/UV are drawn at random. Each method sees exactly the app's input (the ROI and
its face-skin mask). Per factor level and method the suite reports n, mean Dice (empty
truth and empty prediction count as 1), mean absolute F-Vitiligo error (points) and the
Spearman rank correlation of measured vs true F-Vitiligo.

Writes ``suite.json`` (everything, per image too), ``suite.md`` (the tables the model card
quotes) and ``contact_sheet_N.png`` (photo | truth | each method's prediction).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from ..metrics import confusion, dice, f_vitiligo, spearman
from ..skin_reference import colour_rule_mask
from .synthetic import SyntheticSample, sample_rng
from .vitiligo_generator import EXTENT_BINS, extent_bin, fitzpatrick_of_type, generate_face_sample

ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}
SUITE_SOURCES = ("synthetic", "synthetic", "astronaut", "grace_hopper")
SUITE_ROI_SIDES = (180, 360, 720, 1440)  # ~ face ROIs of 400-px .. 12-MP photographs
FACTORS = ("extent", "skin_type", "source", "roi_size", "light")
CLOSEUP_FACTORS = ("extent", "skin_type", "background", "roi_size")
# (rgb, true skin) -> lesion mask inside the given skin (faces: the app's denominator is
# given), or -> (lesion mask, own visible-skin mask) for methods that find the skin
# themselves (close-ups: the denominator is part of what is measured).
Method = Callable[[np.ndarray, np.ndarray], "np.ndarray | tuple[np.ndarray, np.ndarray]"]


def suite_samples(n: int, seed: int) -> Iterator[tuple[str, SyntheticSample]]:
    """Held-out v2 samples; extent bin cycles fastest, then skin type."""
    for i in range(n):
        rng = sample_rng(seed, i)
        lo, hi = EXTENT_BINS[i % len(EXTENT_BINS)]
        if lo == 0.0 and rng.random() < 0.25:
            extent = 0.0
        else:
            extent = float(rng.uniform(max(lo, 0.3), hi)) / 100.0
        skin_type = (i // len(EXTENT_BINS)) % 6 + 1
        source = SUITE_SOURCES[int(rng.integers(len(SUITE_SOURCES)))]
        side = SUITE_ROI_SIDES[int(rng.integers(len(SUITE_ROI_SIDES)))]
        uv = bool(rng.random() < 0.25)
        s = generate_face_sample(rng, side, uv=uv, source=source,
                                 fitz=fitzpatrick_of_type(skin_type, rng), extent=extent)
        yield f"v2_{i:04d}", s


def factor_levels(sample: SyntheticSample, true_percent: float) -> dict[str, str]:
    """The sample's level of each factor (what the tables group by)."""
    meta = sample.meta
    side = int(meta.get("roi_long_side", max(sample.image.shape[:2])))
    return {
        "extent": extent_bin(true_percent),
        "skin_type": ROMAN.get(int(meta.get("skin_type", 0)), "n/a"),
        "source": str(meta.get("source", "n/a")),
        "roi_size": f"{side} px",
        "light": "UV" if sample.uv else "visible",
        "background": str(meta.get("background", "n/a")),
    }


@dataclass
class MethodResult:
    name: str
    dice: float
    f_vitiligo: float
    mask: np.ndarray


def model_method(segmenter, threshold: float = 0.5) -> Method:
    """The shipped network through the app's entry point."""
    def run(rgb: np.ndarray, skin: np.ndarray) -> np.ndarray:
        return (segmenter.predict(rgb, skin) >= threshold) & skin
    return run


def run_suite(methods: dict[str, Method], samples: Iterable[tuple[str, SyntheticSample]],
              out_dir: Path, sheet_rows: int = 12, n_sheets: int = 2,
              factors: tuple[str, ...] = FACTORS, title: str = "held-out generator-v2 face ROIs") -> dict:
    """Score every method on every sample; write suite.json, suite.md and contact sheets.

    A method that returns only a lesion mask is scored inside the true skin (faces); one
    that returns (lesion, skin) is scored on the whole image and its F-Vitiligo is lesion
    over its own skin (close-ups)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    sheet: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, list[MethodResult]]] = []
    for name, s in samples:
        truth = s.lesion_mask & s.skin_mask
        true_pct = f_vitiligo(truth, s.skin_mask)
        levels = factor_levels(s, true_pct)
        results = []
        for mname, method in methods.items():
            out = method(s.image, s.skin_mask)
            if isinstance(out, tuple):
                pred, own_skin = out[0] & out[1], out[1]
                score = dice(confusion(pred, truth))
            else:
                pred, own_skin = out & s.skin_mask, s.skin_mask
                score = dice(confusion(pred, truth, s.skin_mask))
            results.append(MethodResult(mname, score, f_vitiligo(pred, own_skin), pred))
        row = {"name": name, "f_vitiligo_true": true_pct, **levels}
        for r in results:
            row[f"{r.name}_dice"] = r.dice
            row[f"{r.name}_f_vitiligo"] = r.f_vitiligo
            row[f"{r.name}_abs_error"] = abs(r.f_vitiligo - true_pct)
        rows.append(row)
        if len(sheet) < sheet_rows * n_sheets:
            sheet.append((name, s.image, s.skin_mask, truth, results))
    if not rows:
        raise ValueError("no samples")
    summary = {"n_images": len(rows), "methods": list(methods), "title": title,
               "overall": _group_stats(rows, methods), "breakdown": {}}
    for factor in factors:
        levels = sorted({r[factor] for r in rows}, key=_level_order)
        summary["breakdown"][factor] = {lv: _group_stats([r for r in rows if r[factor] == lv], methods)
                                        for lv in levels}
    summary["per_image"] = rows
    with open(out_dir / "suite.json", "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    (out_dir / "suite.md").write_text(markdown_tables(summary), encoding="utf-8")
    for k in range(0, len(sheet), sheet_rows):
        write_contact_sheet(sheet[k:k + sheet_rows], out_dir / f"contact_sheet_{k // sheet_rows + 1}.png")
    return summary


def _level_order(level: str) -> tuple[float, str]:
    """Numeric levels (extent bins, sizes, roman skin types) in natural order."""
    roman = {v: k for k, v in ROMAN.items()}
    if level in roman:
        return float(roman[level]), level
    head = level.split("-")[0].split(" ")[0]
    try:
        return float(head), level
    except ValueError:
        return 1e9, level


def _group_stats(rows: list[dict], methods: Iterable[str]) -> dict[str, dict[str, float]]:
    out = {}
    truth = [r["f_vitiligo_true"] for r in rows]
    for m in methods:
        out[m] = {"n": len(rows),
                  "dice": float(np.mean([r[f"{m}_dice"] for r in rows])),
                  "abs_error": float(np.mean([r[f"{m}_abs_error"] for r in rows])),
                  "spearman": spearman(truth, [r[f"{m}_f_vitiligo"] for r in rows])}
    return out


def markdown_tables(summary: dict) -> str:
    """One table per factor: level, n, then Dice / |error| / Spearman per method."""
    methods = summary["methods"]
    head = "| level | n | " + " | ".join(f"{m} Dice | {m} abs err (pp) | {m} Spearman" for m in methods) + " |"
    sep = "|---|---|" + "---|---|---|" * len(methods)

    def line(level: str, stats: dict) -> str:
        cells = []
        for m in methods:
            st = stats[m]
            rho = "n/a" if np.isnan(st["spearman"]) else f"{st['spearman']:.2f}"
            cells.append(f"{st['dice']:.3f} | {st['abs_error']:.2f} | {rho}")
        return f"| {level} | {stats[methods[0]]['n']} | " + " | ".join(cells) + " |"

    parts = [f"n = {summary['n_images']} {summary.get('title', 'samples')}\n", "### overall\n", head, sep,
             line("all", summary["overall"]), ""]
    for factor, levels in summary["breakdown"].items():
        parts += [f"### by {factor}\n", head, sep]
        parts += [line(level, stats) for level, stats in levels.items()]
        parts.append("")
    return "\n".join(parts)


def _tile(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    s = size / max(h, w)
    small = cv2.resize(image, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
    out = np.zeros((size, size, 3), np.uint8)
    y0, x0 = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    out[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small if small.ndim == 3 else small[..., None]
    return out


def _mask_view(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The photo dimmed, lesion pixels magenta: readable on any skin colour."""
    out = (image.astype(np.float32) * 0.45).astype(np.uint8)
    out[mask] = (255, 0, 200)
    return out


def write_contact_sheet(items: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, list[MethodResult]]], path: Path,
                        tile: int = 192) -> None:
    """Rows of photo | truth | one column per method, F-Vitiligo and Dice written on each."""
    rows = []
    for name, image, skin, truth, results in items:
        tiles = [_tile(image, tile), _tile(_mask_view(image, truth), tile)]
        labels = [name, f"truth {f_vitiligo(truth, skin):.1f}%"]
        for r in results:
            tiles.append(_tile(_mask_view(image, r.mask), tile))
            labels.append(f"{r.name} {r.f_vitiligo:.1f}% D{r.dice:.2f}")
        for t, text in zip(tiles, labels):
            cv2.putText(t, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 0), 1, cv2.LINE_AA)
        rows.append(np.concatenate(tiles, 1))
    cv2.imwrite(str(path), np.concatenate(rows, 0)[..., ::-1])


def default_methods(segmenter=None, threshold: float = 0.5, names: Iterable[str] = ("model", "colour_rule")
                    ) -> dict[str, Method]:
    """Named methods: "model" (needs ``segmenter``) and "colour_rule" (L* above Otsu)."""
    out: dict[str, Method] = {}
    for n in names:
        if n == "model":
            if segmenter is None:
                raise ValueError("method 'model' needs a segmenter")
            out[n] = model_method(segmenter, threshold)
        elif n == "colour_rule":
            out[n] = colour_rule_mask
        else:
            raise ValueError(f"unknown method {n!r} (model, colour_rule)")
    return out
