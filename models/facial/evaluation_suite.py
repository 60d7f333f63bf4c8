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

from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..metrics import confusion, dice, f_vitiligo
from ..report import Metric, breakdown, mean_of, sheet_row, spearman_of, write_contact_sheets, write_report
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
# Per method: mean Dice, mean |F-Vitiligo error| (points), Spearman of measured vs true F-Vitiligo.
SUITE_METRICS = (
    Metric("dice", "Dice", mean_of("{method}_dice"), "{:.3f}"),
    Metric("abs_error", "abs err (pp)", mean_of("{method}_abs_error"), "{:.2f}"),
    Metric("spearman", "Spearman", spearman_of("f_vitiligo_true", "{method}_f_vitiligo"), "{:.2f}"),
)


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
    over its own skin (close-ups). The breakdown and files come from ``models.report``."""
    rows: list[dict] = []
    sheet: list[np.ndarray] = []
    for name, s in samples:
        truth = s.lesion_mask & s.skin_mask
        true_pct = f_vitiligo(truth, s.skin_mask)
        row = {"name": name, "f_vitiligo_true": true_pct, **factor_levels(s, true_pct)}
        shown = []
        for mname, method in methods.items():
            out = method(s.image, s.skin_mask)
            if isinstance(out, tuple):
                pred, own_skin = out[0] & out[1], out[1]
                score = dice(confusion(pred, truth))
            else:
                pred, own_skin = out & s.skin_mask, s.skin_mask
                score = dice(confusion(pred, truth, s.skin_mask))
            measured = f_vitiligo(pred, own_skin)
            row[f"{mname}_dice"] = score
            row[f"{mname}_f_vitiligo"] = measured
            row[f"{mname}_abs_error"] = abs(measured - true_pct)
            shown.append((f"{mname} {measured:.1f}% D{score:.2f}", pred))
        rows.append(row)
        if len(sheet) < sheet_rows * n_sheets:
            sheet.append(sheet_row(s.image, truth, shown, name, f"truth {true_pct:.1f}%"))
    if not rows:
        raise ValueError("no samples")
    summary = breakdown(rows, list(methods), SUITE_METRICS, factors, title)
    summary["per_image"] = rows
    write_report(summary, out_dir)
    write_contact_sheets(sheet, out_dir, sheet_rows)
    return summary


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
