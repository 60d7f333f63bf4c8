"""End-to-end: dermpacs results in the real OHIF 3.13.2 viewer (issue 5). Run by ``make e2e``.

Not part of ``make test`` (the file name does not match ``test_*.py``; ``make e2e`` passes
``-o python_files=e2e_*.py``): it needs Chromium, Node packages and the OHIF dist that
``make e2e`` installs.

For every app listed in ``tests/e2e/apps.py``:

1. generate its input photograph and run the app (``python -m apps.<name> -i IN -o OUT``);
2. validate every SEG and SR it wrote with ``dciodvfy`` (no errors allowed), and read
   every SEG with ``@cornerstonejs/adapters`` in Node, the parser OHIF uses; its pixel
   counts per segment must equal the SEG's own frames;
3. store photo + SEG + SR in a real Orthanc (own network namespace, loopback only),
   serve the OHIF dist and a ``/dicom-web`` proxy from one origin, open the study in
   headless Chromium (``ohif_check.mjs``) and judge the screenshots and the page
   (:func:`judge`): the photo is drawn, the SEG overlay covers the SEG's region and
   nothing else, the lesion segments alone cover the lesion region, the SR's measurement
   text with the SR's value is on screen next to its outline, and the page logged no
   error.

The test of the test stores SEGs with broken geometry and requires :func:`judge` to fail.
Screenshots and reports stay in ``.e2e/artefacts/<case>/``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom.reader import read_photograph
from dicom.sr import read_measurement_report
from dicom.validate import dciodvfy
from tests.e2e import pixels
from tests.e2e.apps import APPS, AppCase, facial_photo
from tests.e2e.ohif_server import OhifServer
from tests.pacs.netns import free_port, isolated_network, isolation_unavailable_reason
from tests.pacs.orthanc import OrthancServer

REPO = Path(__file__).resolve().parents[2]
E2E = Path(__file__).resolve().parent
OHIF_DIST = Path(os.environ.get("DERMPACS_OHIF_DIST", REPO / ".e2e" / "ohif" / "package" / "dist"))
ARTEFACTS = Path(os.environ.get("DERMPACS_E2E_ARTEFACTS", REPO / ".e2e" / "artefacts"))
CHROMIUM = os.environ.get("DERMPACS_CHROMIUM", "/usr/bin/chromium")
NODE = shutil.which("node") or "node"
# DERMPACS_E2E_MODELS: optional folder of weights (`<app>*.pt` + .yaml) passed as `-m` to the
# apps it has weights for; default: the shipped weights. The checks never depend on the
# model's accuracy: expected pixels come from the stored SEG.

# What "drawn" means, in photo pixels (see tests/e2e/README.md for the measured values).
PHOTO_MIN_CORRELATION = 0.97  # luminance of the shown photo vs the DICOM pixels (measured 0.999)
PHOTO_MAX_MEAN_DIFF = 12.0  # 0-255, mean absolute difference (measured 0.8)
OVERLAY_THRESHOLD = 20  # a channel changed by more than this = overlay drawn there (renders are
# otherwise identical: 0 px change outside overlays; a red overlay on red skin changes ~35-45)
OVERLAY_MIN_INSIDE = 0.97  # fraction of changed pixels within the SEG region (+ margin)
OVERLAY_MIN_COVERED = 0.90  # fraction of the SEG region's interior (- margin) changed
OVERLAY_MARGIN_SCREEN_PX = 3.0  # tolerance at region edges, in screen pixels
MIN_REGION_FOR_COVERAGE = 50  # interior pixels below which coverage is not judged (tiny lesion)
SR_MIN_OUTLINE_HITS = 0.8  # fraction of the SR outline with annotation pixels within 3 px
OHIF_TEXT_OFFSET_PX = 25  # DICOMSRDisplayTool: text box at the outline's right edge + 25 px
OHIF_TEXT_ANCHOR_TOLERANCE_PX = 20  # the text box's padding and the line's own offset

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="network namespaces are Linux only")


def _case_id(case: AppCase) -> str:
    return case.name


# --------------------------------------------------------------------------- helpers


def run_app(case: AppCase, workdir: Path) -> dict:
    """Generate the input, run the app as a module; return paths and the app's results.json."""
    if workdir.exists():
        shutil.rmtree(workdir)
    in_dir, out_dir = workdir / "in", workdir / "out"
    photo_path = case.make_input(in_dir)
    env = dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="3")
    override = case.model_override()
    models = ["-m", str(override)] if override else []
    proc = subprocess.run(
        [sys.executable, "-m", case.module, "-i", str(in_dir), "-o", str(out_dir), *models],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    (workdir / "app.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"{case.module} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    segs = sorted(out_dir.glob("SEG_*.dcm"))
    srs = sorted(out_dir.glob("SR_*.dcm"))
    written = sorted(p.name for p in out_dir.iterdir())
    assert srs, f"{case.module} wrote no SR into {out_dir}: {written}"
    assert bool(segs) == case.seg, f"{case.module} should {'' if case.seg else 'not '}write a SEG (tests/e2e/apps.py): {written}"
    return {"photo": photo_path, "segs": segs, "srs": srs, "results": json.loads((out_dir / "results.json").read_text())}


def parse_seg_with_cornerstone(seg: Path, photo: Path, out_json: Path) -> dict:
    """Run tests/e2e/seg_parse.mjs: the SEG through @cornerstonejs/adapters in Node."""
    proc = subprocess.run([NODE, str(E2E / "seg_parse.mjs"), str(seg), str(photo), str(out_json)],
                          cwd=E2E, capture_output=True, text=True, timeout=300)
    if not out_json.exists():
        raise AssertionError(f"seg_parse.mjs wrote no result ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out_json.read_text())


def run_ohif_check(web: OhifServer, photo: Path, seg: Path | None, sr: Path, case: AppCase, out_dir: Path) -> dict:
    """Drive OHIF on the study of ``photo`` (ohif_check.mjs) and return its report."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    photo_ds = pydicom.dcmread(photo, stop_before_pixels=True)
    spec = {
        "url": web.url,
        "studyUID": str(photo_ds.StudyInstanceUID),
        "photoSOPInstanceUID": str(photo_ds.SOPInstanceUID),
        "segSeriesUID": str(pydicom.dcmread(seg, stop_before_pixels=True).SeriesInstanceUID) if seg else None,
        "srSeriesUID": str(pydicom.dcmread(sr, stop_before_pixels=True).SeriesInstanceUID),
        "hideSegmentLabels": list(case.hidden_segments),
        "measurementLabel": case.measurement_label,
        "outDir": str(out_dir),
        "timeoutS": 150,
        "stepTimeoutS": 60,
        "chromium": CHROMIUM,
    }
    spec_path = out_dir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    proc = subprocess.run([NODE, str(E2E / "ohif_check.mjs"), str(spec_path)], cwd=E2E,
                          capture_output=True, text=True, timeout=540)
    (out_dir / "node.log").write_text(proc.stdout + proc.stderr)
    report_path = out_dir / "report.json"
    assert report_path.exists(), f"ohif_check.mjs wrote no report ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(report_path.read_text())


def _sample_outline(outline: np.ndarray, step: float = 1.0) -> np.ndarray:
    closed = np.vstack([outline, outline[:1]])
    points = []
    for a, b in zip(closed[:-1], closed[1:]):
        n = max(1, int(np.linalg.norm(b - a) / step))
        points.extend(a + (b - a) * t for t in np.linspace(0.0, 1.0, n, endpoint=False))
    return np.asarray(points)


def judge(report: dict, photo: Path, seg: Path | None, sr: Path, case: AppCase,
          clipped: list[str] | None = None) -> list[str]:
    """Everything wrong with what OHIF showed, as sentences; [] when all four checks pass.

    (1) the photograph is drawn; (2) the SEG overlay lies on the SEG's region and not
    elsewhere, and with the context segments hidden, on the lesion segments; (3) every
    line of the SR's measurement label is drawn by OHIF with the SR's value, on screen
    beside its outline, at least one of them on screen; a line OHIF's own placement puts
    past the viewport's edge (see ``_clipped_by_ohif_placement``) is listed in ``clipped``
    instead; (4) no error in the page's console, no page error, no failed request, no
    error notification.
    """
    clipped = [] if clipped is None else clipped
    problems: list[str] = []
    for name, step in report["steps"].items():
        if not step["ok"]:
            problems.append(f"OHIF step '{name}' failed: {step['error']}")
    if report.get("failure") and not problems:
        problems.append(f"OHIF check stopped: {report['failure']}")
    for error in report["errors"]:
        problems.append(f"page logged an error ({error['kind']}): {error['text'][:500]}")
    for note in report["notifications"]:
        if re.search(r"error|fail|unable|cannot|not supported", note, re.IGNORECASE):
            problems.append(f"OHIF notification: {note[:300]}")

    photograph = read_photograph(photo)
    shots = {name: pixels.read_rgb(path) for name, path in report["screenshots"].items() if name != "failure"}
    geometry = {name: pixels.Geometry.from_report(g) for name, g in report["geometry"].items() if g}
    shown = {name: pixels.to_image_space(shots[name], geometry[name]) for name in shots if name in geometry}

    # (1) the photograph
    if "1-photo" not in shown:
        problems.append("the photograph was never displayed")
        return problems
    correlation, mad = pixels.photo_agreement(shown["1-photo"], photograph.pixels)
    if correlation < PHOTO_MIN_CORRELATION or mad > PHOTO_MAX_MEAN_DIFF:
        problems.append(f"the viewport does not show the photograph: correlation {correlation:.3f}, mean difference {mad:.1f}")

    # (2) the SEG overlay, all segments, then the lesion segments alone
    regions = {}
    if seg is not None:
        masks = pixels.seg_masks(seg, photograph.sop_instance_uid)
        lesion_labels = [label for label in masks if label not in case.hidden_segments]
        regions = {
            "2-seg": ("all segments", np.logical_or.reduce(list(masks.values()))),
            "3-lesion": (f"lesion segments {lesion_labels}", np.logical_or.reduce([masks[label] for label in lesion_labels])),
        }
    margin = max(1, math.ceil(OVERLAY_MARGIN_SCREEN_PX / geometry["1-photo"].scale))
    for name, (what, region) in regions.items():
        if name not in shown:
            problems.append(f"no screenshot '{name}' of the SEG overlay ({what})")
            continue
        changed = pixels.changed_pixels(shown[name], shown["1-photo"], OVERLAY_THRESHOLD)
        score = pixels.overlay_score(changed, region, margin)
        core_pixels = int(cv2.erode(region.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8)).sum())
        if region.any() and score.changed == 0:
            problems.append(f"no SEG overlay drawn ({what}): {score}")
            continue
        if score.changed and score.inside < OVERLAY_MIN_INSIDE:
            problems.append(f"SEG overlay ({what}) drawn outside the SEG's region: {score}")
        if core_pixels >= MIN_REGION_FOR_COVERAGE and score.covered < OVERLAY_MIN_COVERED:
            problems.append(f"SEG overlay ({what}) does not cover the SEG's region: {score}")

    # (3) the SR: measurement text with the SR's value, on screen, beside the SR outline.
    # OHIF 3.13.2 writes each NUM as "<meaning>: <value, 2 decimals> <unit code>", at most 5
    # lines per group, and a value of exactly 0 as blank ("NumericValue ? toFixed(2) : ''").
    groups = [g for g in read_measurement_report(sr) if g["referenced_sop_instance_uid"] == photograph.sop_instance_uid]
    expected_lines = [
        (group, f"{name}: {f'{value:.2f}' if value != 0 else ''} {unit}")
        for group in groups for name, (value, unit) in group["measurements"].items()
        if name.startswith(case.measurement_label)
    ]
    if not expected_lines:
        problems.append(f"the SR holds no measurement named {case.measurement_label!r} for this photograph")
    viewports = [t["rect"] for t in report["srTexts"] if t["tag"] == "viewport"]
    spans = [t for t in report["srTexts"] if t["tag"] == "tspan"]
    unused = list(spans)
    on_screen = 0
    for group, line in expected_lines:
        span = _span_of_group([t for t in unused if t["text"].strip() == line.strip()], group, geometry.get("4-sr"))
        if span is None:
            problems.append(f"OHIF does not show '{line}' (texts: {[t['text'] for t in spans]})")
            continue
        unused.remove(span)
        left, top, width, height = span["rect"]
        if not any(vl <= left and left + width <= vl + vw and vt <= top and top + height <= vt + vh
                   for vl, vt, vw, vh in viewports) or width <= 0:
            clip = _clipped_by_ohif_placement(span["rect"], group, geometry.get("4-sr"), viewports)
            if clip is None:
                problems.append(f"the text '{span['text']}' lies outside the viewport ({span['rect']})")
            else:
                clipped.append(f"'{span['text']}': {clip}")
            continue
        on_screen += 1
        if "4-sr" in shots:
            rows = slice(int(top), int(math.ceil(top + height)))
            cols = slice(int(left), int(math.ceil(left + width)))
            drawn = pixels.changed_pixels(shots["4-sr"][rows, cols], shots["1-photo"][rows, cols], OVERLAY_THRESHOLD)
            if drawn.sum() < 0.02 * drawn.size:
                problems.append(f"the text '{span['text']}' is in the page but not on the screenshot")
    if expected_lines and not on_screen:
        problems.append(f"no '{case.measurement_label}' text of the SR is on screen")
    if "4-sr" in shots and "4-sr" in geometry:
        sr_changed = pixels.changed_pixels(shots["4-sr"], shots["1-photo"], OVERLAY_THRESHOLD)
        near = cv2.dilate(sr_changed.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        for group in groups:
            if group.get("outline_xy") is None:
                continue
            screen = pixels.image_to_screen(geometry["4-sr"], _sample_outline(np.asarray(group["outline_xy"], float)))
            xy = np.clip(np.round(screen - 0.5).astype(int), 0, [near.shape[1] - 1, near.shape[0] - 1])
            hits = float(near[xy[:, 1], xy[:, 0]].mean())
            if hits < SR_MIN_OUTLINE_HITS:
                problems.append(f"the SR outline of '{group['tracking_label']}' is not drawn where the SR puts it ({hits:.0%} of it found)")
    elif not any("SR" in p for p in problems):
        problems.append("no screenshot of the SR")
    return problems


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tools():
    """Fail (not skip) when what `make e2e` installs is missing: the target installs it all."""
    missing = [what for what, ok in [
        (f"OHIF dist at {OHIF_DIST}", (OHIF_DIST / "index.html").is_file()),
        (f"Chromium at {CHROMIUM}", Path(CHROMIUM).exists()),
        ("node", shutil.which("node") is not None),
        ("tests/e2e/node_modules (npm ci)", (E2E / "node_modules" / "puppeteer-core").is_dir()),
        ("dciodvfy", shutil.which("dciodvfy") is not None),
    ] if not ok]
    if missing:
        pytest.fail("missing (run `make e2e`): " + ", ".join(missing))
    reason = isolation_unavailable_reason()
    if reason:
        pytest.fail(reason)


@pytest.fixture(scope="module")
def viewer(tools, tmp_path_factory):
    """Orthanc + the OHIF origin, inside a loopback-only network namespace, for this module."""
    with isolated_network():
        with OrthancServer(tmp_path_factory.mktemp("orthanc"), dermpacs_port=free_port(), router=False) as pacs:
            with OhifServer(OHIF_DIST, pacs.url) as web:
                yield pacs, web


_results: dict[str, dict] = {}


@pytest.fixture(params=APPS, ids=_case_id)
def analysed(request, tools):
    """The app's input photo and outputs (run once per app per session)."""
    case: AppCase = request.param
    reason = case.missing()
    if reason:
        pytest.skip(reason)
    if case.name not in _results:
        _results[case.name] = run_app(case, ARTEFACTS / case.name / "app")
    return case, _results[case.name]


# --------------------------------------------------------------------------- tests


def test_every_seg_and_sr_passes_dciodvfy(analysed):
    case, run = analysed
    failures = {}
    for path in run["segs"] + run["srs"]:
        result = dciodvfy(path)
        if result.errors:
            failures[path.name] = result.errors
    assert not failures, f"{case.module}: dciodvfy errors: {json.dumps(failures, indent=1)}"


def test_every_seg_parses_with_cornerstone_adapters(analysed):
    case, run = analysed
    photo = read_photograph(run["photo"])
    for seg in run["segs"]:
        parsed = parse_seg_with_cornerstone(seg, run["photo"], ARTEFACTS / case.name / f"{seg.stem}.adapters.json")
        assert parsed["ok"], f"{seg.name}: @cornerstonejs/adapters rejected it: {parsed['error']}"
        counts = {s["label"]: s["pixels"] for s in parsed["segments"]}
        expected = {label: int(mask.sum()) for label, mask in pixels.seg_masks(seg, photo.sop_instance_uid).items()}
        assert counts == expected, f"{seg.name}: adapters read {counts}, the SEG holds {expected}"


def test_ohif_shows_photo_seg_overlay_and_sr_measurements(analysed, viewer):
    case, run = analysed
    pacs, web = viewer
    photo, seg, sr = run["photo"], (run["segs"][0] if case.seg else None), run["srs"][0]
    for path in (photo, seg, sr):
        if path is not None:
            assert pacs.upload(path)["Status"] in ("Success", "AlreadyStored")
    out_dir = ARTEFACTS / case.name / "ohif"
    report = run_ohif_check(web, photo, seg, sr, case, out_dir)
    clipped: list[str] = []
    problems = judge(report, photo, seg, sr, case, clipped)
    for nudge in report.get("srNudges") or []:
        warnings.warn(f"{case.name}: OHIF needed a nudge to draw the SR: {nudge['what']}", stacklevel=1)
    for line in clipped:
        warnings.warn(f"{case.name}: SR text past the viewport's edge by OHIF's own placement: {line}", stacklevel=1)
    (out_dir / "clipped-by-ohif.txt").write_text("".join(f"{line}\n" for line in clipped))
    assert not problems, f"{case.module} in OHIF ({out_dir}):\n- " + "\n- ".join(problems)
    write_overview(out_dir / ("2-seg.png" if case.seg else "4-sr.png"), out_dir / "overview.png")


def write_overview(screenshot: Path, target: Path, width: int = 1200) -> None:
    """A README-sized copy of a screenshot: scaled to ``width`` and reduced to 256 colours (< 500 kB)."""
    from PIL import Image

    image = Image.open(screenshot).convert("RGB")
    image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(target, optimize=True)


# ----------------------------------------------------------------- test of the test

def _without_plane_orientation(ds: pydicom.Dataset) -> None:
    del ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence


def _without_pixel_measures(ds: pydicom.Dataset) -> None:
    del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence


def _span_of_group(candidates: list[dict], group: dict, geometry: pixels.Geometry | None) -> dict | None:
    """The span among equal texts that belongs to ``group``: the one nearest to where OHIF
    anchors the group's text (outline's right edge + offset, at its mid-height). Several
    sites can show the same line, e.g. two negative sites' blank "Wheal mean diameter:  mm"."""
    if len(candidates) <= 1 or geometry is None or group.get("outline_xy") is None:
        return candidates[0] if candidates else None
    outline = pixels.image_to_screen(geometry, np.asarray(group["outline_xy"], float))
    ax, ay = float(outline[:, 0].max()) + OHIF_TEXT_OFFSET_PX, float(outline[:, 1].mean())
    return min(candidates, key=lambda t: abs(t["rect"][0] - ax) + abs(t["rect"][1] - ay))


def _clipped_by_ohif_placement(rect: list[float], group: dict, geometry: pixels.Geometry | None,
                               viewports: list[list[float]]) -> str | None:
    """Why OHIF 3.13.2 itself put this text past the viewport's right edge, or None.

    DICOMSRDisplayTool anchors a group's text box at its outline's rightmost screen x plus
    25 px (at mid-height) and never moves it on screen (it calls getTextBoxCoordsCanvas
    without the viewport element), so the text of a region at the right edge of a
    photograph that fills the viewport's width runs out of it; a user pans to read it.
    Only that case is excused: the text must start where that rule puts it, and only its
    right end may be outside.
    """
    if geometry is None or group.get("outline_xy") is None:
        return None
    left, top, width, height = rect
    outline = pixels.image_to_screen(geometry, np.asarray(group["outline_xy"], float))
    anchor = float(outline[:, 0].max()) + OHIF_TEXT_OFFSET_PX
    if abs(left - anchor) > OHIF_TEXT_ANCHOR_TOLERANCE_PX:
        return None
    for vl, vt, vw, vh in viewports:
        if vl <= left < vl + vw and vt <= top and top + height <= vt + vh and left + width > vl + vw:
            return (f"OHIF anchors it at the outline's right edge + {OHIF_TEXT_OFFSET_PX} px (x {anchor:.0f}); "
                    f"it ends at x {left + width:.0f}, the viewport at {vl + vw:.0f}")
    return None


BREAKAGES = {
    "no-plane-orientation": _without_plane_orientation,
    "no-pixel-measures": _without_pixel_measures,
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_the_check_fails_on_broken_seg_geometry(breakage, tools, viewer):
    """Store a SEG whose geometry is broken as DESIGN.md describes; the same check must fail."""
    pacs, web = viewer
    case = APPS[0]
    workdir = ARTEFACTS / f"broken-{breakage}"
    seed = 11 + list(BREAKAGES).index(breakage)
    run = run_app(AppCase(case.name, case.module, lambda folder: facial_photo(folder, seed=seed),
                          case.measurement_label, case.hidden_segments), workdir / "app")
    broken = pydicom.dcmread(run["segs"][0])
    BREAKAGES[breakage](broken)
    broken.SOPInstanceUID = generate_uid()
    broken.file_meta.MediaStorageSOPInstanceUID = broken.SOPInstanceUID
    broken_path = workdir / "SEG_broken.dcm"
    broken.save_as(broken_path)
    photo, sr = run["photo"], run["srs"][0]
    for path in (photo, broken_path, sr):
        pacs.upload(path)
    report = run_ohif_check(web, photo, broken_path, sr, case, workdir / "ohif")
    problems = judge(report, photo, broken_path, sr, case)
    (workdir / "problems.txt").write_text("\n".join(problems) + "\n")
    seg_problems = [p for p in problems if "SEG" in p or "error" in p]
    assert seg_problems, f"the OHIF check passed a SEG with {breakage}: it cannot tell a broken SEG from a good one"
    # The photo and the SR are untouched: the check must still see them (it fails for the right reason).
    assert not any("photograph" in p for p in problems), problems


def test_only_ohif_placed_text_past_the_edge_is_excused():
    """The exception for OHIF's text placement covers that rule and nothing else (no browser)."""
    geometry = pixels.Geometry(rows=600, columns=800, origin=np.array([250.0, 50.0]), per_column=np.array([1.6, 0.0]),
                               per_row=np.array([0.0, 1.6]), canvas=(250.0, 50.0, 1300.0, 980.0))
    viewports = [[250.0, 50.0, 1300.0, 980.0]]
    at_edge = {"outline_xy": [[700, 300], [777, 300], [777, 350], [700, 350]]}  # right edge at x 1493.2
    in_middle = {"outline_xy": [[300, 300], [350, 300], [350, 350], [300, 350]]}  # right edge at x 810
    assert _clipped_by_ohif_placement([1520.0, 520.0, 215.0, 16.0], at_edge, geometry, viewports) is not None
    # Text of a region in the middle, or text not where OHIF's rule puts it: a real problem.
    assert _clipped_by_ohif_placement([1520.0, 520.0, 215.0, 16.0], in_middle, geometry, viewports) is None
    assert _clipped_by_ohif_placement([1400.0, 520.0, 215.0, 16.0], at_edge, geometry, viewports) is None
    # Off the bottom (not the right end only), or without an outline: not excused.
    assert _clipped_by_ohif_placement([1520.0, 1020.0, 215.0, 16.0], at_edge, geometry, viewports) is None
    assert _clipped_by_ohif_placement([1520.0, 520.0, 215.0, 16.0], {"outline_xy": None}, geometry, viewports) is None
    # Two groups showing the same line: each gets the span OHIF anchored beside its own outline.
    spans = [{"text": "Wheal mean diameter:  mm", "rect": [1520.0, 520.0, 215.0, 16.0]},
             {"text": "Wheal mean diameter:  mm", "rect": [835.0, 520.0, 215.0, 16.0]}]
    assert _span_of_group(spans, in_middle, geometry) is spans[1]
    assert _span_of_group(spans, at_edge, geometry) is spans[0]
    assert _span_of_group(spans[:1], in_middle, geometry) is spans[0] and _span_of_group([], at_edge, geometry) is None
