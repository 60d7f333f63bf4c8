"""One evaluation report for every task: per-factor breakdown, markdown table, JSON, contact sheet.

Each task's evaluation knows its own data, its methods and how to score one image; it
turns each image into a flat record (its factor levels as strings, its per-method scores
as numbers). Everything after that is the same for every task and lives here, so the
model cards of all tasks quote tables of one layout:

- ``breakdown``: for the whole set and for each factor and level, n and, for each method,
  the chosen metrics (``Metric``: a column of the table and how to summarise the records);
- ``markdown_tables``: one table per factor (level | n | per method, per metric), built
  from the report alone, so the JSON written beside it renders the same table again;
- ``write_report``: ``STEM.json`` and ``STEM.md`` side by side;
- ``sheet_row`` / ``write_contact_sheet``: rows of photo | truth | one column per method.

Nothing here knows a task: column names, factor names and labels come from the caller.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import cv2
import numpy as np

from .metrics import spearman

# (records of one group, method name) -> the metric's value for that method on that group
Summary = Callable[[Sequence[Mapping], str], float]


@dataclass(frozen=True)
class Metric:
    """One column per method: ``key`` in the JSON, ``label`` in the table header
    ("<method> <label>"), ``summarise`` over a group's records, ``fmt`` for the cell."""
    key: str
    label: str
    summarise: Summary
    fmt: str = "{:.3f}"


def _values(rows: Sequence[Mapping], column: str, method: str) -> list[float]:
    """The column's numbers for ``method`` ("{method}" in the column name), missing ones skipped:
    a record may have no value (e.g. a relative error when the truth is empty)."""
    name = column.format(method=method)
    return [float(r[name]) for r in rows if r.get(name) is not None]


def mean_of(column: str) -> Summary:
    """Mean of a per-image column, e.g. ``mean_of("{method}_dice")``."""
    def run(rows: Sequence[Mapping], method: str) -> float:
        v = _values(rows, column, method)
        return float(np.mean(v)) if v else math.nan
    return run


def median_abs_of(column: str) -> Summary:
    """Median of the absolute values of a signed per-image error column."""
    def run(rows: Sequence[Mapping], method: str) -> float:
        v = _values(rows, column, method)
        return float(np.median(np.abs(v))) if v else math.nan
    return run


def spearman_of(truth_column: str, column: str) -> Summary:
    """Rank correlation of a measured column with the true one (does the method order images right?)."""
    def run(rows: Sequence[Mapping], method: str) -> float:
        name = column.format(method=method)
        pairs = [(r[truth_column], r[name]) for r in rows
                 if r.get(truth_column) is not None and r.get(name) is not None]
        if not pairs:
            return math.nan
        t, m = zip(*pairs)
        return spearman(list(t), list(m))
    return run


_ROMAN = re.compile(r"^(X{0,3})(IX|IV|V?I{0,3})$")
_NUMBER = re.compile(r"^[-+]?\d+(\.\d+)?")


def _roman_value(token: str) -> int | None:
    if not token or not _ROMAN.match(token):
        return None
    values = {"I": 1, "V": 5, "X": 10}
    total = 0
    for a, b in zip(token, token[1:] + " "):
        total += -values[a] if values.get(b, 0) > values[a] else values[a]
    return total


def level_order(level: str) -> tuple[float, str]:
    """Levels in natural order: numeric ones ("0-5%", "180 px", "512x384") by their leading
    number, roman ones ("II", "III-IV") by value, the rest alphabetically after them."""
    match = _NUMBER.match(level)
    if match:
        return float(match.group(0)), level
    roman = _roman_value(level.split("-")[0].split(" ")[0])
    if roman is not None:
        return float(roman), level
    return math.inf, level


def group_stats(rows: Sequence[Mapping], methods: Iterable[str], metrics: Sequence[Metric]
                ) -> dict[str, dict[str, float]]:
    """{method: {"n": images, metric.key: value}} for one group of records."""
    return {m: {"n": len(rows), **{k.key: k.summarise(rows, m) for k in metrics}} for m in methods}


def breakdown(rows: Sequence[Mapping], methods: Sequence[str], metrics: Sequence[Metric],
              factors: Sequence[str], title: str = "samples") -> dict:
    """The report: overall and per factor level, each method's metrics.

    ``rows`` are per-image records with each factor's level under the factor's name.
    The metric labels and formats go into the report, so the table can be rendered
    again from the JSON alone."""
    if not rows:
        raise ValueError("no records")
    report: dict = {"n_images": len(rows), "methods": list(methods), "title": title,
                    "metrics": [{"key": k.key, "label": k.label, "format": k.fmt} for k in metrics],
                    "overall": group_stats(rows, methods, metrics), "breakdown": {}}
    for factor in factors:
        levels = sorted({str(r[factor]) for r in rows}, key=level_order)
        report["breakdown"][factor] = {
            lv: group_stats([r for r in rows if str(r[factor]) == lv], methods, metrics) for lv in levels}
    return report


def _cell(value: float | None, fmt: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def markdown_tables(report: dict) -> str:
    """One table per factor: level, n, then each metric per method (the model cards' layout)."""
    methods, metrics = report["methods"], report["metrics"]
    head = "| level | n | " + " | ".join(f"{m} {k['label']}" for m in methods for k in metrics) + " |"
    sep = "|---|---|" + "---|" * (len(methods) * len(metrics))

    def line(level: str, stats: dict) -> str:
        cells = [_cell(stats[m][k["key"]], k["format"]) for m in methods for k in metrics]
        return f"| {level} | {stats[methods[0]]['n']} | " + " | ".join(cells) + " |"

    parts = [f"n = {report['n_images']} {report.get('title', 'samples')}\n", "### overall\n", head, sep,
             line("all", report["overall"]), ""]
    for factor, levels in report["breakdown"].items():
        parts += [f"### by {factor}\n", head, sep]
        parts += [line(level, stats) for level, stats in levels.items()]
        parts.append("")
    return "\n".join(parts)


def write_report(report: dict, out_dir: Path, stem: str = "suite") -> tuple[Path, Path]:
    """``STEM.json`` (the report as is, per-image records included if the caller put them
    in) and ``STEM.md`` (its tables), side by side in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    with open(json_path, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    md_path.write_text(markdown_tables(report), encoding="utf-8")
    return json_path, md_path


def _tile(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    s = size / max(h, w)
    small = cv2.resize(image, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
    out = np.zeros((size, size, 3), np.uint8)
    y0, x0 = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    out[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small if small.ndim == 3 else small[..., None]
    return out


def mask_view(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The photo dimmed, mask pixels magenta: readable on any skin colour."""
    out = (image.astype(np.float32) * 0.45).astype(np.uint8)
    out[mask] = (255, 0, 200)
    return out


def sheet_row(image: np.ndarray, truth: np.ndarray, predictions: Sequence[tuple[str, np.ndarray]],
              name: str, truth_label: str = "truth", tile: int = 192) -> np.ndarray:
    """One contact-sheet row, photo | truth | one tile per (label, mask), each captioned.

    Built at once as small tiles so that a run over large photographs keeps only these."""
    tiles = [_tile(image, tile), _tile(mask_view(image, truth), tile)]
    labels = [name, truth_label]
    for label, mask in predictions:
        tiles.append(_tile(mask_view(image, mask), tile))
        labels.append(label)
    for t, text in zip(tiles, labels):
        cv2.putText(t, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 0), 1, cv2.LINE_AA)
    return np.concatenate(tiles, 1)


def write_contact_sheet(rows: Sequence[np.ndarray], path: Path) -> None:
    """Stack ``sheet_row`` rows into one RGB PNG."""
    cv2.imwrite(str(path), np.concatenate(list(rows), 0)[..., ::-1])


def write_contact_sheets(rows: Sequence[np.ndarray], out_dir: Path, rows_per_sheet: int = 12) -> list[Path]:
    """``contact_sheet_1.png``, ``_2`` ... of ``rows_per_sheet`` rows each."""
    paths = []
    for k in range(0, len(rows), rows_per_sheet):
        path = out_dir / f"contact_sheet_{k // rows_per_sheet + 1}.png"
        write_contact_sheet(rows[k:k + rows_per_sheet], path)
        paths.append(path)
    return paths
