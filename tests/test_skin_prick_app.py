"""The skin prick app end to end, as a user runs it: `python -m apps.skin_prick`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from apps.skin_prick.app import SHIPPED_WEIGHTS
from dicom import codes
from dicom.encode import photograph_dataset, write_dataset
from dicom.sr import read_measurement_report
from dicom.validate import dciodvfy
from models.prick.synthetic import generate_sample
from tests.app_cases import (assert_bad_inputs_fail_alone, assert_no_patient_identifiers,
                             assert_nothing_analysable_fails, results_of, run_app, write_bad_inputs)

APP = "apps.skin_prick"
SIZE = (768, 1024)  # rows, columns


def _inhalant_panel():
    """A 2 x 6 panel laid out as deploy/panels/standard-inhalant.yaml (uncalibrated: millimetres
    come from the fitted grid), histamine, an 8 mm and a 5 mm allergen reacting."""
    return generate_sample(21, 11, size=SIZE, grid=(2, 6), spacing_mm=25.0, oblique=False, fitzpatrick=2,
                           reactions={0: (6.0, 28.0), 1: (0.0, 0.0), 2: (8.0, 30.0), 3: (0.0, 0.0),
                                      4: (2.0, 8.0), 7: (5.0, 22.0)} | {k: (0.0, 0.0) for k in (5, 6, 8, 9, 10, 11)})


@pytest.fixture(scope="module")
def prick_run(tmp_path_factory):
    """Two prick-test photographs (calibrated, uncalibrated), one without any reaction, bad files."""
    root = tmp_path_factory.mktemp("skin_prick")
    inp = root / "in"
    inp.mkdir()
    calibrated = generate_sample(21, 0, size=SIZE, n_sites=4)
    uncalibrated = generate_sample(21, 5, size=SIZE, n_sites=6)
    negative = generate_sample(21, 9, size=SIZE, n_sites=3, negative_fraction=1.0, positive_control=False)
    spacing = 1.0 / calibrated.px_per_mm
    write_dataset(photograph_dataset(calibrated.image, body_part="SKIN", series_description="Skin prick test",
                                     pixel_spacing_mm=(spacing, spacing)), inp / "prick_calibrated.dcm")
    write_dataset(photograph_dataset(uncalibrated.image, body_part="SKIN", series_description="Skin prick test",
                                     transfer_syntax=ExplicitVRLittleEndian), inp / "prick_uncalibrated.dcm")
    write_dataset(photograph_dataset(negative.image, body_part="SKIN", series_description="Skin prick test"),
                  inp / "prick_negative.dcm")
    panel = _inhalant_panel()  # chosen by the Series Description
    write_dataset(photograph_dataset(panel.image, body_part="SKIN",
                                     series_description="Skin prick test - inhalant panel"), inp / "prick_panel.dcm")
    expected_words = write_bad_inputs(inp, inp / "prick_calibrated.dcm", huge=False)
    proc = run_app(APP, inp, root / "out")
    samples = {"prick_calibrated.dcm": calibrated, "prick_uncalibrated.dcm": uncalibrated,
               "prick_negative.dcm": negative, "prick_panel.dcm": panel}
    return root, samples, proc, spacing, expected_words


def _cases(root: Path) -> dict:
    return {c["source"]: c for c in results_of(root / "out")["cases"]}


def _seg_masks(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    found = {}
    for path in sorted(out.glob("SEG_*.dcm")):
        seg = hd.seg.segread(path)
        sop = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        masks = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[sop], segment_numbers=[1, 2], combine_segments=False)[0]
        found[sop] = (masks[..., 0].astype(bool), masks[..., 1].astype(bool),
                      [s.SegmentLabel for s in seg.SegmentSequence])
    return found


def test_app_analyses_prick_photographs_and_isolates_bad_files(prick_run):
    root, _, proc, _, expected_words = prick_run
    assert set(expected_words) == {"notes.txt", "truncated.dcm", "ct.dcm", "tiny.dcm"}
    assert_bad_inputs_fail_alone(proc, root / "out", expected_words,
                                 analysed=("prick_calibrated.dcm", "prick_uncalibrated.dcm", "prick_negative.dcm",
                                           "prick_panel.dcm"))
    out = root / "out"
    with_reactions = sum(1 for c in _cases(root).values() if c["status"] == "analysed" and c["results"]["reactions"])
    assert with_reactions >= 3  # the calibrated, uncalibrated and panel photographs
    assert len(list(out.glob("SEG_*.dcm"))) == with_reactions == len(list(out.glob("SR_*.dcm")))
    assert len(list(out.glob("overlay_*.png"))) == with_reactions


def test_photograph_without_reaction_is_analysed_without_seg_or_sr(prick_run):
    """No panel and no Pixel Spacing: the U-Net reads the three puncture marks as 1-2 mm
    wheals; the site verifier, scaled by the typical site spacing, drops them."""
    root, _, _, _, _ = prick_run
    case = _cases(root)["prick_negative.dcm"]
    assert case["results"]["reactions"] == 0
    assert case["results"]["result"] == "analysed, no reaction found"
    assert case["outputs"] == []


def test_one_group_per_positive_site_matching_the_painted_truth(prick_run):
    """No panel: the site verifier drops the puncture marks read as wheals (scaled by Pixel
    Spacing or the typical site spacing). Spread measured on the photographs' decoded pixels
    with +-1 / +-2 grey-level noise and 1-px shifts: 3-4 reactions for 3, 4-5 for 4."""
    root, samples, _, _, _ = prick_run
    cases = _cases(root)
    for name in ("prick_calibrated.dcm", "prick_uncalibrated.dcm"):
        truth = samples[name]
        found = cases[name]["results"]["reactions"]
        assert abs(found - truth.positive_sites) <= 1, (name, found, truth.positive_sites)


def test_seg_segments_erythema_holding_the_wheal_and_agreeing_with_the_truth(prick_run):
    root, samples, _, spacing, _ = prick_run
    cases = _cases(root)
    masks = _seg_masks(root / "out")
    overlap = total = 0
    for name in ("prick_calibrated.dcm", "prick_uncalibrated.dcm"):
        erythema, wheal, labels = masks[cases[name]["sop_instance_uid"]]
        assert labels == ["Erythema", "Wheal"]
        assert not (wheal & ~erythema).any()
        true_ery = samples[name].label >= 1
        overlap += np.count_nonzero(erythema & true_ery)
        total += np.count_nonzero(erythema) + np.count_nonzero(true_ery)
        # The SR/results areas are those of the SEG (same masks, speckle already removed).
        sites = cases[name]["results"]["sites"]
        px_area = 1.0 if name == "prick_uncalibrated.dcm" else spacing**2
        assert sum(s["erythema_area"] for s in sites) == pytest.approx(np.count_nonzero(erythema) * px_area, rel=1e-3)
        assert sum(s["wheal_area"] for s in sites) == pytest.approx(np.count_nonzero(wheal) * px_area, rel=1e-3)
    # A loose check: the shipped CPU-trained model reaches erythema Dice 66 +- 27 on held-out
    # synthetic photographs (model card); these two measure 0.58 pooled.
    assert 2 * overlap / total > 0.4


def test_seg_and_sr_pass_dciodvfy(prick_run):
    root, _, _, _, _ = prick_run
    for path in sorted((root / "out").glob("*.dcm")):
        result = dciodvfy(path)
        assert not result.errors, (path.name, result.errors)


def test_sr_round_trips_one_group_per_reaction_with_units(prick_run):
    root, _, _, spacing, _ = prick_run
    report = results_of(root / "out")
    by_sop = {c["sop_instance_uid"]: c for c in report["cases"] if c["status"] == "analysed"}
    seen = set()
    for path in sorted((root / "out").glob("SR_*.dcm")):
        groups = read_measurement_report(path)
        case = by_sop[groups[0]["referenced_sop_instance_uid"]]
        if case["source"] == "prick_panel.dcm":
            continue  # read as a panel: test_panel_photograph_is_read_site_by_site
        seen.add(case["source"])
        sites = case["results"]["sites"]
        assert [g["tracking_label"] for g in groups] == [f"Prick site {i}" for i in range(1, len(sites) + 1)]
        calibrated = case["source"] == "prick_calibrated.dcm"
        for group, site in zip(groups, sites):
            m = group["measurements"]
            area_unit, length_unit = ("mm2", "mm") if calibrated else ("{pixels}", "{pixel}")
            assert m[codes.WHEAL_AREA.meaning] == (pytest.approx(site["wheal_area"]), area_unit)
            assert m[codes.ERYTHEMA_AREA.meaning] == (pytest.approx(site["erythema_area"]), area_unit)
            assert m[codes.WHEAL_MEAN_DIAMETER.meaning] == (pytest.approx(site["wheal_mean_diameter"]), length_unit)
            assert m[codes.ERYTHEMA_MEAN_DIAMETER.meaning][1] == length_unit
            ratio = m[codes.WHEAL_ERYTHEMA_RATIO.meaning]
            assert ratio[1] == "1" and 0 <= ratio[0] <= 1
            assert ratio[0] == pytest.approx(site["wheal_area"] / site["erythema_area"], abs=1e-3)
            assert site["erythema_mean_diameter"] >= site["wheal_mean_diameter"]
            assert group["finding_site"] == "Skin" and len(group["outline_xy"]) >= 4
        # Reading order: rows top to bottom, then left to right.
        ys = [s["centroid_xy"][1] for s in sites]
        assert ys[0] <= max(ys)
        sha = hashlib.sha256(SHIPPED_WEIGHTS.read_bytes()).hexdigest()
        assert f"weights_sha256={sha}" in groups[0]["algorithm"]["parameters"]
    assert seen >= {"prick_calibrated.dcm", "prick_uncalibrated.dcm"}


def test_logs_hold_no_patient_name_or_id(prick_run):
    root, _, proc, _, _ = prick_run
    assert_no_patient_identifiers(proc, root / "out")


def test_nothing_analysable_exits_non_zero_and_writes_no_dicom(prick_run, tmp_path):
    root, _, _, _, _ = prick_run
    assert_nothing_analysable_fails(APP, root / "in", ("notes.txt", "ct.dcm"), tmp_path)


def test_panel_photograph_is_read_site_by_site_with_grid_millimetres(prick_run):
    root, samples, _, _, _ = prick_run
    truth = samples["prick_panel.dcm"]
    case = _cases(root)["prick_panel.dcm"]
    res = case["results"]
    assert res["panel"] == "Standard inhalant" and res["calibration"] == "panel_grid"
    assert res["panel_chosen_by"] == "series description"
    # Reactions the site verifier dropped as puncture marks leave the per-reaction list and count.
    dropped = {tuple(xy) for xy in res["dropped_as_puncture_marks"]}
    assert len(res["sites"]) == res["reactions"] and not dropped & {tuple(r["centroid_xy"]) for r in res["sites"]}
    # The grid's scale agrees with the generator's within a few stated uncertainties.
    rel = abs(1 / res["mm_per_pixel"] / truth.px_per_mm - 1)
    assert 0 < res["scale_uncertainty_percent"] < 6 and 100 * rel < 3 * res["scale_uncertainty_percent"] + 1
    sites = res["panel_sites"]
    assert [s["name"] for s in sites][:3] == ["Histamine", "Saline", "D. pteronyssinus"] and len(sites) == 12
    # Every reacting site found; its wheal within 3 mm and the sites' mean error within 1.5 mm
    # (held-out panels, skin_prick_unet 0.3.0 card: |error| median 0.57 mm, 95th percentile
    # 2.95 mm, above 1.5 mm at 19 % of the sites; 0.2.0: 0.85 / 6.87 mm / 31 %). The quiet
    # ones negative.
    errors = []
    for got, want in zip(sites, truth.sites):
        if want.wheal_mm >= 2:
            assert got["reaction"], (got["name"], want.wheal_mm)
            assert got["wheal_mean_diameter"] == pytest.approx(want.wheal_mm, abs=3.0), got["name"]
            errors.append(abs(got["wheal_mean_diameter"] - want.wheal_mm))
        if want.erythema_mm == 0:
            assert got["result"] == "negative", got["name"]
    assert len(errors) == 4 and np.mean(errors) <= 1.5, errors
    assert res["valid"] is True and sites[0]["result"] == "positive" and sites[1]["result"] == "negative"
    assert sites[2]["result"] == "positive"  # an 8 mm wheal
    assert sites[4]["result"] == "negative"  # a 2 mm wheal is < saline + 3 mm


@pytest.mark.xfail(strict=True, reason="the 5 mm wheal at site 7 (crossed by two hairs, half in its own shade) "
                   "is read ~3 mm by both nets: 3.3 mm with skin_prick_unet 0.3.0 (just positive against "
                   "saline 0 + 3 mm), 2.9 mm with 0.4.0 (negative); held-out wheal diameter Bland-Altman "
                   "0.3.0 +0.28 [-2.46, 3.02] mm, 0.4.0 +0.45 [-2.86, 3.75] mm (card)")
def test_a_5_mm_wheal_is_positive_against_a_quiet_saline(prick_run):
    """The U-Net gives the quiet saline a 1-2 mm false wheal (its puncture dot), which would raise
    the positivity threshold; the site verifier drops it (skin_prick_site_verifier card)."""
    root, samples, _, _, _ = prick_run
    sites = _cases(root)["prick_panel.dcm"]["results"]["panel_sites"]
    assert sites[1]["wheal_mean_diameter"] < 1.0 and sites[7]["result"] == "positive"


def test_panel_sr_names_each_site_by_its_allergen_within_ohifs_five_lines(prick_run):
    root, _, _, _, _ = prick_run
    case = _cases(root)["prick_panel.dcm"]
    path = next(p for p in case["outputs"] if Path(p).name.startswith("SR_"))
    groups = read_measurement_report(root / "out" / Path(path).name)
    labels = [g["tracking_label"] for g in groups]
    assert labels[:3] == ["1 Histamine", "2 Saline", "3 D. pteronyssinus"] and len(labels) >= 13
    assert labels[-1] == "Skin prick test: Standard inhalant"
    for g in groups:
        assert 1 <= len(g["measurements"]) <= 5 and len(g["outline_xy"]) >= 4
    test = groups[-1]["measurements"]
    assert test[codes.PRICK_TEST_VALID.meaning] == (1.0, "{result}")
    assert test[codes.SCALE_FROM_PANEL_GRID.meaning][1] == "mm/{pixel}"
    assert 0 < test[codes.SCALE_UNCERTAINTY.meaning][0] < 6
    site = groups[2]["measurements"]
    assert site[codes.WHEAL_MEAN_DIAMETER.meaning][1] == "mm"
    assert site[codes.PRICK_SITE_RESULT.meaning] == (1.0, "{result}")
    assert len(site) <= 3 and len(test) <= 3  # room for the longitudinal step's two lines
    assert case["results"]["panel_sites"][2]["wheal_minus_negative_control"] is not None


def test_panel_seg_has_a_flare_and_a_wheal_segment_per_reacting_site(prick_run):
    """Issue 13: the SEG keeps wheal and erythema per site, named as the SR names the site."""
    root, samples, _, _, _ = prick_run
    case = _cases(root)["prick_panel.dcm"]
    path = next(root / "out" / Path(p).name for p in case["outputs"] if Path(p).name.startswith("SEG_"))
    seg = hd.seg.segread(path)
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    reacting = [s for s in case["results"]["panel_sites"] if s["reaction"]]
    for site in reacting:
        assert f"{site['site']} {site['name']} flare" in labels, (site["name"], labels)
    assert "1 Histamine wheal" in labels and "3 D. pteronyssinus wheal" in labels
    sop = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    numbers = list(range(1, len(labels) + 1))
    masks = seg.get_pixels_by_source_instance(source_sop_instance_uids=[sop], segment_numbers=numbers,
                                              combine_segments=False)[0].astype(bool)
    by_label = dict(zip(labels, np.moveaxis(masks, -1, 0)))
    for label, mask in by_label.items():
        assert mask.any(), label
        if label.endswith(" wheal"):  # inside its own site's flare, and in no other site's
            assert not (mask & ~by_label[label[:-len("wheal")] + "flare"]).any(), label
    flares = [m for label, m in by_label.items() if label.endswith(" flare")]
    assert sum(int(m.sum()) for m in flares) == int(np.logical_or.reduce(flares).sum())  # sites do not overlap


# -- the panel chosen per routing rule (issue 13): --option panel=NAME ---------------------------
def test_option_arguments_are_taken_out_before_monai_deploy_parses_argv(caplog):
    from apps import runtime
    from apps.skin_prick.app import SkinPrickApp

    argv = ["apps.skin_prick", "-i", "IN", "--option", "panel=Food panel", "-o", "OUT", "--option=mode=a=b"]
    assert runtime.split_options(argv) == (["apps.skin_prick", "-i", "IN", "-o", "OUT"],
                                           {"panel": "Food panel", "mode": "a=b"})
    for bad in (["--option"], ["--option", "panel"], ["--option", "2x=y"], ["--option=", "-i"]):
        with pytest.raises(runtime.OptionError, match="--option"):
            runtime.split_options(["app", *bad])
    with caplog.at_level("WARNING", logger="dermpacs"):
        options = runtime.options_for(SkinPrickApp, {"panel": "Food panel", "mode": "a=b", "colour": "blue"})
    assert dict(options.values) == {"panel": "Food panel"}
    assert [r.getMessage() for r in caplog.records] == ["option(s) colour, mode ignored: this app knows panel"]


@pytest.fixture(scope="module")
def panel_photograph(tmp_path_factory):
    """The inhalant panel under a Series Description no configured panel matches."""
    inp = tmp_path_factory.mktemp("prick_option") / "in"
    inp.mkdir()
    write_dataset(photograph_dataset(_inhalant_panel().image, body_part="SKIN", series_description="Skin prick test"),
                  inp / "panel.dcm")
    return inp


def test_the_panel_option_reads_a_photograph_no_panel_matches_by_its_attributes(panel_photograph, tmp_path):
    """What the service passes for a rule with app_options: {panel: ...}; the name in any case,
    and an option the app does not know is ignored with one warning."""
    from models.prick.panel import choose_panel

    from operators.skin_prick_panel import configured_panels

    assert choose_panel(configured_panels(), "Skin prick test") is None  # without the option: no panel
    proc = run_app(APP, panel_photograph, tmp_path / "out", "--option", "panel=standard INHALANT",
                   "--option", "colour=blue")
    assert proc.returncode == 0, proc.stderr
    (case,) = results_of(tmp_path / "out")["cases"]
    res = case["results"]
    assert res["panel"] == "Standard inhalant" and res["panel_chosen_by"] == "routing rule option"
    assert len(res["panel_sites"]) == 12 and res["valid"] is True and res["calibration"] == "panel_grid"
    assert proc.stderr.count("option(s) colour ignored: this app knows panel") == 1


def test_an_unknown_panel_name_fails_the_photograph_naming_the_option_and_the_panels(panel_photograph, tmp_path):
    proc = run_app(APP, panel_photograph, tmp_path / "out", "--option", "panel=Food panel")
    assert proc.returncode == 1  # nothing analysed
    (case,) = results_of(tmp_path / "out")["cases"]
    assert case["status"] == "failed" and case["failed_step"] == "skin prick panel reading"
    assert case["error"].startswith("option panel='Food panel': no configured panel has that name")
    assert "'Standard inhalant'" in case["error"] and "deploy/panels" in case["error"]
    assert case["outputs"] == [] and not list((tmp_path / "out").glob("*.dcm"))
    assert "Traceback" not in proc.stderr


def test_an_option_that_is_not_key_value_is_a_usage_error(panel_photograph, tmp_path):
    proc = run_app(APP, panel_photograph, tmp_path / "out", "--option", "panel")
    assert proc.returncode == 2 and "--option 'panel': expected KEY=VALUE" in proc.stderr
