"""The task-agnostic evaluation report: breakdown numbers, table layout, JSON round trip, sheets."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from models.report import (Metric, breakdown, level_order, markdown_tables, mean_of, median_abs_of, sheet_row,
                           spearman_of, write_contact_sheets, write_report)

METRICS = (
    Metric("dice", "Dice", mean_of("{method}_dice"), "{:.3f}"),
    Metric("err", "err", median_abs_of("{method}_err"), "{:.0%}"),
    Metric("rho", "Spearman", spearman_of("truth", "{method}_measured"), "{:.2f}"),
)
ROWS = [
    {"skin": "II", "size": "512x384", "truth": 1.0, "a_dice": 1.0, "a_err": 0.1, "a_measured": 1.0,
     "b_dice": 0.0, "b_err": -0.5, "b_measured": 3.0},
    {"skin": "II", "size": "4000x3000", "truth": 2.0, "a_dice": 0.5, "a_err": -0.3, "a_measured": 2.0,
     "b_dice": 0.2, "b_err": None, "b_measured": 2.0},
    {"skin": "I", "size": "1024x768", "truth": 3.0, "a_dice": 0.0, "a_err": 0.2, "a_measured": 3.0,
     "b_dice": 0.4, "b_err": 0.1, "b_measured": 1.0},
]


def _report() -> dict:
    return breakdown(ROWS, ["a", "b"], METRICS, ["skin", "size"], title="hand-made records")


def test_breakdown_numbers():
    r = _report()
    assert r["n_images"] == 3
    assert r["overall"]["a"] == {"n": 3, "dice": pytest.approx(0.5), "err": pytest.approx(0.2),
                                 "rho": pytest.approx(1.0)}
    assert r["overall"]["b"]["dice"] == pytest.approx(0.2)
    assert r["overall"]["b"]["err"] == pytest.approx(0.3)  # median of |-0.5|, |0.1|; None skipped
    assert r["overall"]["b"]["rho"] == pytest.approx(-1.0)
    # levels in natural order: roman by value, sizes by their leading number
    assert list(r["breakdown"]["skin"]) == ["I", "II"]
    assert list(r["breakdown"]["size"]) == ["512x384", "1024x768", "4000x3000"]
    two = r["breakdown"]["skin"]["II"]
    assert two["a"]["n"] == 2 and two["a"]["dice"] == pytest.approx(0.75) and two["a"]["err"] == pytest.approx(0.2)
    assert math.isnan(r["breakdown"]["skin"]["I"]["a"]["rho"])  # one image: no rank correlation
    assert math.isnan(r["breakdown"]["size"]["4000x3000"]["b"]["err"])  # its only value missing


def test_level_order():
    assert sorted(["50-95%", "0-5%", "25-50%", "5-25%"], key=level_order) == ["0-5%", "5-25%", "25-50%", "50-95%"]
    assert sorted(["V-VI", "III-IV", "I-II"], key=level_order) == ["I-II", "III-IV", "V-VI"]
    assert sorted(["VI", "IV", "IX", "I"], key=level_order) == ["I", "IV", "VI", "IX"]
    assert sorted(["visible", "UV", "1440 px", "180 px"], key=level_order) == ["180 px", "1440 px", "UV", "visible"]


def test_markdown_table_layout():
    md = markdown_tables(_report())
    lines = md.splitlines()
    assert lines[0] == "n = 3 hand-made records"
    head = "| level | n | a Dice | a err | a Spearman | b Dice | b err | b Spearman |"
    assert lines.count(head) == 3  # overall, by skin, by size
    assert "|---|---|---|---|---|---|---|---|" in lines
    assert "| all | 3 | 0.500 | 20% | 1.00 | 0.200 | 30% | -1.00 |" in lines
    assert "| I | 1 | 0.000 | 20% | n/a | 0.400 | 10% | n/a |" in lines
    assert "### by skin" in lines and "### by size" in lines


def test_json_round_trip_renders_the_same_tables(tmp_path):
    report = {**_report(), "per_image": ROWS}
    json_path, md_path = write_report(report, tmp_path / "out", stem="suite")
    assert json_path.name == "suite.json" and md_path.name == "suite.md"
    loaded = json.loads(json_path.read_text())
    assert loaded["per_image"] == ROWS
    assert loaded["metrics"][1] == {"key": "err", "label": "err", "format": "{:.0%}"}
    assert markdown_tables(loaded) == md_path.read_text() == markdown_tables(report)


def test_contact_sheets(tmp_path):
    image = np.full((60, 90, 3), 120, np.uint8)
    truth = np.zeros((60, 90), bool)
    truth[10:30, 10:40] = True
    rows = [sheet_row(image, truth, [("a", truth), ("b", ~truth)], f"img{i}", tile=64) for i in range(3)]
    assert rows[0].shape == (64, 4 * 64, 3)
    paths = write_contact_sheets(rows, tmp_path, rows_per_sheet=2)
    assert [p.name for p in paths] == ["contact_sheet_1.png", "contact_sheet_2.png"]
    assert cv2.imread(str(paths[0])).shape == (128, 256, 3)
    assert cv2.imread(str(paths[1])).shape == (64, 256, 3)
