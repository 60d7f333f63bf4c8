"""Skin prick panels: YAML config, grid fit, site matching, controls, validity, calibration.

The reading is driven by the generator's exact masks (its label map as the segmentation,
its puncture positions as site marks), so these tests check the panel logic itself; the
network's part is checked in test_skin_prick_app.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.prick.measure import find_reactions
from models.prick.panel import (LayoutConfig, MatchConfig, PanelConfig, PanelSiteConfig, choose_panel, fit_grid,
                                load_panel, load_panels, panel_choice, panel_named, read_panel)
from models.prick.synthetic import generate_sample

SPACING = 25.0
SIZE = (768, 1024)


def _panel(rows=2, cols=6, **kw) -> PanelConfig:
    sites = [PanelSiteConfig("Histamine", "positive_control"), PanelSiteConfig("Saline", "negative_control")]
    sites += [PanelSiteConfig(f"Allergen {i}") for i in range(1, rows * cols - 1)]
    return PanelConfig("test panel", sites, spacing_mm=SPACING, layout=LayoutConfig(rows, cols), **kw)


def _read(sample, panel=None, spacing=None, marks=True):
    panel = panel or _panel(sample.rows, sample.cols)
    reactions = find_reactions(sample.label >= 1, sample.label == 2, min_area_px=4)
    site_marks = [s.center_xy for s in sample.sites] if marks else []
    return read_panel(panel, reactions, site_marks, sample.label.shape, spacing), reactions


def _sample(index, **kw):
    kw.setdefault("oblique", False)
    return generate_sample(13, index, size=SIZE, grid=(2, 6), spacing_mm=SPACING, **kw)


def test_example_panel_loads_and_is_chosen_by_series_description_or_protocol_name(tmp_path):
    panels = load_panels("deploy/panels")
    inhalant = next(p for p in panels if p.name == "Standard inhalant")
    assert (inhalant.layout.rows, inhalant.layout.columns, len(inhalant.sites)) == (2, 6, 12)
    assert inhalant.rule.wheal_margin_mm == 3.0 and inhalant.spacing_mm == 25
    assert choose_panel(panels, "Skin prick test - inhalant panel") is inhalant
    assert choose_panel(panels, "Skin prick test") is None
    food = tmp_path / "food.yaml"
    food.write_text("name: Food\nlayout: {list: true}\nspacing_mm: 30\nsites:\n"
                    "  - {name: Histamine, role: positive_control}\n  - {name: Saline, role: negative_control}\n"
                    "  - {name: Peanut, code: {scheme: SCT, value: '000', meaning: Peanut}}\n"
                    "match: {protocol_name_regex: '^FOOD'}\n")
    p = load_panel(food)
    assert (p.layout.rows, p.layout.columns) == (1, 3) and p.sites[2].code.meaning == "Peanut"
    assert choose_panel([inhalant, p], "whatever", "FOOD-SPT") is p
    with pytest.raises(ValueError, match="negative control"):
        PanelConfig("x", [PanelSiteConfig("Histamine", "positive_control"), PanelSiteConfig("A")])


def test_the_choice_says_how_it_was_made_and_a_rule_finds_a_panel_by_its_name():
    """results.json records how a panel was chosen; a routing rule names its panel (any case)."""
    inhalant = _panel(match=MatchConfig(series_description_regex="inhalant"))
    food = _panel(match=MatchConfig(protocol_name_regex="^FOOD"))
    both = _panel(match=MatchConfig(series_description_regex="drug", protocol_name_regex="^DRUG"))
    fallback = _panel(match=MatchConfig(default=True))
    inhalant.name, food.name, both.name, fallback.name = "Standard inhalant", "Food panel", "Drugs", "House"
    panels = [inhalant, food, both, fallback]
    assert panel_choice(panels, "Inhalant panel", "") == (inhalant, "series description")
    assert panel_choice(panels, "", "FOOD-SPT") == (food, "protocol name")
    assert panel_choice(panels, "drug panel", "DRUG-1") == (both, "series description and protocol name")
    assert panel_choice(panels, "drug panel", "") == (fallback, "default")
    assert panel_choice(panels[:3], "forearm", "") == (None, None)
    assert panel_named(panels, "food PANEL ") is food and panel_named(panels, "Food") is None


def test_grid_calibrates_mm_from_the_site_spacing_and_every_site_is_read():
    errors, scale_err, uncertainty = [], [], []
    for index in range(4):
        s = _sample(index)
        reading, _ = _read(s)
        assert reading.calibration == "panel_grid" and not reading.unmatched_reactions
        scale_err.append(abs(1 / reading.mm_per_px / s.px_per_mm - 1))
        uncertainty.append(reading.scale_uncertainty)
        for got, truth in zip(reading.sites, s.sites):
            assert got.result != "not readable"
            assert (got.reaction is not None) == (truth.wheal_mm > 0 or truth.erythema_mm > 0)
            errors.append(got.wheal_mm - truth.wheal_mm)
    # Hand placement (1.5 mm SD) limits the scale to a few percent; the stated uncertainty
    # (1 SD) is of the same order as the error seen.
    assert max(scale_err) < 0.05
    assert 0.005 < float(np.mean(uncertainty)) < 0.05
    assert float(np.mean(np.abs(errors))) < 0.6  # mm, wheals 0-15 mm


def test_pixel_spacing_wins_over_the_grid():
    s = _sample(1)
    mm = 1 / s.px_per_mm
    reading, _ = _read(s, spacing=(mm, mm))
    assert reading.calibration == "pixel_spacing" and reading.mm_per_px == pytest.approx(mm)
    assert reading.scale_uncertainty is None


def test_negative_histamine_makes_the_test_invalid():
    s = _sample(2, reactions={0: (0.0, 0.0)})
    reading, _ = _read(s)
    assert reading.valid is False
    assert reading.sites[0].result == "negative" and reading.sites[0].reaction is None
    assert any("positive control Histamine did not react" in r for r in reading.validity_reasons)


def test_positive_saline_makes_the_test_invalid_and_raises_the_baseline():
    s = _sample(3, reactions={0: (6.0, 25.0), 1: (5.0, 15.0), 2: (7.0, 25.0)})
    reading, _ = _read(s)
    assert reading.valid is False and reading.sites[1].result == "positive"
    assert any("negative control Saline reacted" in r for r in reading.validity_reasons)
    # Allergen 1 (about 7 mm) is not >= 3 mm above the reacting saline (about 5 mm).
    assert reading.negative_control_wheal_mm == pytest.approx(s.sites[1].wheal_mm, abs=0.6)
    assert reading.sites[2].result == "negative"


def test_a_site_without_reaction_is_negative_with_zero_diameters_and_the_test_valid():
    s = _sample(4, reactions={0: (6.0, 30.0), 1: (0.0, 0.0), 3: (0.0, 0.0), 4: (8.0, 30.0)})
    reading, _ = _read(s)
    assert reading.valid is True
    site = reading.sites[3]
    assert site.reaction is None and site.wheal_mm == 0.0 and site.flare_mm == 0.0 and site.result == "negative"
    assert reading.sites[4].result == "positive"
    assert reading.sites[4].wheal_mm == pytest.approx(s.sites[4].wheal_mm, abs=0.6)


def test_two_merged_flares_are_split_between_their_sites():
    s = _sample(5, reactions={0: (6.0, 30.0), 1: (0.0, 0.0), 2: (7.0, 40.0), 3: (5.0, 40.0)})
    label = s.label >= 1
    reading, reactions = _read(s)
    # The two 40 mm flares 25 mm apart form one connected region of erythema ...
    import cv2
    n, comp = cv2.connectedComponents(label.astype(np.uint8))
    x2, y2 = (int(round(v)) for v in s.sites[2].center_xy)
    x3, y3 = (int(round(v)) for v in s.sites[3].center_xy)
    assert comp[y2, x2] == comp[y3, x3] != 0
    # ... yet each site gets its own reaction, wheal and a flare of about its half.
    a, b = reading.sites[2], reading.sites[3]
    assert a.reaction is not None and b.reaction is not None and a.reaction != b.reaction
    assert a.wheal_mm == pytest.approx(s.sites[2].wheal_mm, abs=0.6)
    assert b.wheal_mm == pytest.approx(s.sites[3].wheal_mm, abs=0.6)
    assert 20 < a.flare_mm < 45 and 20 < b.flare_mm < 45
    assert a.result == b.result == "positive" and not reading.unmatched_reactions


def test_a_reaction_outside_the_grid_is_reported_unmatched():
    quiet = {k: (0.0, 0.0) for k in (1, 4, 5, 10, 11)}  # the stray reaction sits between sites 5 and 11
    s = _sample(6, reactions={0: (6.0, 25.0)} | quiet, extra=[(12.5, -12.5, 5.0, 12.0)])
    reading, reactions = _read(s)
    assert len(reading.unmatched_reactions) == 1
    r = reading.reactions[reading.unmatched_reactions[0]]
    ex, ey = s.extra[0].center_xy
    assert np.hypot(r.centroid_xy[0] - ex, r.centroid_xy[1] - ey) < 0.2 * SPACING * s.px_per_mm
    assert all(site.reaction != reading.unmatched_reactions[0] for site in reading.sites)


def test_oblique_view_is_calibrated_by_the_affine_grid():
    errs = []
    for index in range(10, 14):
        s = _sample(index, oblique=True)
        reading, _ = _read(s)
        assert reading.calibration == "panel_grid"
        errs += [g.wheal_mm - t.wheal_mm for g, t in zip(reading.sites, s.sites) if t.wheal_mm > 2]
    # A perspective warp is only locally affine: errors stay within ~10 % of a wheal.
    assert float(np.mean(np.abs(errs))) < 1.0


def test_without_marks_or_scale_a_single_reaction_cannot_fit_the_grid():
    s = _sample(7, reactions={k: (0.0, 0.0) for k in range(1, 12)} | {0: (6.0, 25.0)})
    reading, _ = _read(s, marks=False)
    assert reading.fit is None and reading.calibration == "none"
    assert reading.valid is None and all(site.result == "not readable" for site in reading.sites)


def test_fit_rejects_upside_down_grids_and_finds_the_rotation():
    panel = _panel(2, 6)
    grid = panel.grid_mm()
    theta = np.radians(12)
    A = 6.0 * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = grid @ A.T + np.array([200.0, 150.0])
    fit = fit_grid(pts[[0, 3, 5, 7, 10]], panel, (768, 1024))
    assert fit is not None and fit.px_per_mm == pytest.approx(6.0, rel=1e-3)
    assert np.allclose(fit.sites_xy(grid), pts, atol=1e-3)
    assert set(fit.assigned.values()) == {0, 3, 5, 7, 10}


@pytest.mark.parametrize("fitzpatrick,flagged", [(1, False), (3, False), (6, True)])
def test_dark_skin_is_flagged_low_contrast(fitzpatrick, flagged):
    from types import SimpleNamespace

    from operators.skin_prick_panel import SkinPrickPanelStep

    s = generate_sample(13, 20, size=(384, 512), grid=(2, 6), fitzpatrick=fitzpatrick, oblique=False)
    case = SimpleNamespace(photo=SimpleNamespace(pixels=s.image), findings={"prick_erythema": s.label >= 1})
    assert SkinPrickPanelStep._low_contrast(case) is flagged


def test_sites_sit_on_their_prick_marks_and_hidden_ones_follow_the_marks():
    """Sites are hand-placed ~1.5 mm off the ideal grid: a site is read where it was pricked
    (its mark), and a site whose mark was not seen follows the affine fit to the others."""
    s = _sample(7)
    truth = np.array([site.center_xy for site in s.sites])
    hidden = [3, 10]
    marks = [xy for k, xy in enumerate(truth) if k not in hidden]
    reactions = find_reactions(s.label >= 1, s.label == 2, min_area_px=4)
    reading = read_panel(_panel(), reactions, marks, s.label.shape)
    got = np.array([site.xy for site in reading.sites])
    seen = [k for k in range(len(truth)) if k not in hidden]
    assert np.abs(got[seen] - truth[seen]).max() < 0.5
    ideal = reading.fit.sites_xy(_panel().grid_mm())
    assert np.abs(ideal[seen] - truth[seen]).max() > 3  # the ideal grid alone is off by pixels
    err_mm = np.linalg.norm(got[hidden] - truth[hidden], axis=1) / s.px_per_mm
    assert (err_mm < 0.2 * SPACING).all(), err_mm


class _RecordingCheck:
    """Stands in for the verifier to see the scale it is asked at: scores every site 0.5
    (neither dropped nor suspected with the thresholds below)."""

    threshold, drop_below, max_wheal_mm, max_flare_mm, check_flare_only = 0.9, 0.1, 4.0, 5.0, False

    def __init__(self):
        self.px_per_mm = []

    def __call__(self, xys, px_per_mm):
        self.px_per_mm.append(px_per_mm)
        return np.full(len(xys), 0.5)


def test_without_a_panel_the_scale_is_pixel_spacing_else_the_typical_site_spacing():
    from models.prick.panel import check_without_panel

    s = _sample(8)
    reactions = find_reactions(s.label >= 1, s.label == 2, min_area_px=4)
    marks = [site.center_xy for site in s.sites]
    guessed = check_without_panel(reactions, marks, s.label.shape, None, _RecordingCheck(), typical_spacing_mm=SPACING)
    assert guessed.scale_source == "site_spacing"
    assert guessed.px_per_mm == pytest.approx(s.px_per_mm, rel=0.15)
    exact = check_without_panel(reactions, marks, s.label.shape, (0.1, 0.1), _RecordingCheck())
    assert exact.scale_source == "pixel_spacing" and exact.px_per_mm == pytest.approx(10.0)
    assert len(exact.reactions) == len(reactions) and not exact.dropped
    alone = check_without_panel(reactions[:1], [], s.label.shape, None, _RecordingCheck())
    assert alone.scale_source == "none" and alone.reactions == reactions[:1]
