"""The issue-10 evaluation suite: breakdown tables, Spearman, contact sheets."""
from __future__ import annotations

import json

import numpy as np
import pytest

from models.facial.evaluation_suite import default_methods, run_suite
from models.metrics import spearman
from models.facial.synthetic import sample_rng
from models.facial.vitiligo_generator import fitzpatrick_of_type, generate_face_sample


def _samples(n: int):
    for i in range(n):
        rng = sample_rng(99, i)
        extent = (0.0, 0.1, 0.35, 0.8)[i % 4]
        yield f"s{i}", generate_face_sample(rng, 128, uv=i % 5 == 0, source="synthetic",
                                            fitz=fitzpatrick_of_type(1 + i % 6, rng), extent=extent)


def test_suite_writes_tables_json_and_contact_sheets(tmp_path):
    def truth_oracle(rgb, skin):  # a perfect method must score Dice 1 and error 0 everywhere
        return lesions[id(rgb)]

    samples = list(_samples(12))
    lesions = {id(s.image): s.lesion_mask for _, s in samples}
    methods = {"oracle": truth_oracle, **default_methods(names=["colour_rule"])}
    summary = run_suite(methods, samples, tmp_path, sheet_rows=4, n_sheets=2)
    assert summary["overall"]["oracle"]["dice"] == pytest.approx(1.0)
    assert summary["overall"]["oracle"]["abs_error"] == pytest.approx(0.0)
    assert set(summary["breakdown"]["extent"]) == {"0-5%", "5-25%", "25-50%", "50-95%"}
    assert set(summary["breakdown"]["skin_type"]) == {"I", "II", "III", "IV", "V", "VI"}
    assert summary["overall"]["colour_rule"]["dice"] < 0.99
    saved = json.loads((tmp_path / "suite.json").read_text())
    assert len(saved["per_image"]) == 12
    md = (tmp_path / "suite.md").read_text()
    assert "### by extent" in md and "colour_rule Dice" in md
    assert (tmp_path / "contact_sheet_1.png").stat().st_size > 1000
    assert (tmp_path / "contact_sheet_2.png").exists()


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
