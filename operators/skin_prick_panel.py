"""Skin prick step: read the photograph as a panel (every site, controls, mm, validity).

Runs after the per-reaction measurement. When a panel applies to the photograph (named by
the app's ``panel`` option, which a routing rule sets; else chosen from its Series
Description / Protocol Name, or the one configured for the app), the
per-reaction SR groups are replaced by one group per panel site named by its allergen,
one per reaction outside the grid, and one for the test (validity, controls, scale and
how it was obtained). Without a panel the per-reaction reading stays as it is.
When the site verifier is shipped (``models/weights/skin_prick_site_verifier.pt``) the
reading looks at every site at full resolution (``models.prick.verifier``): a small
reaction that is only the puncture mark is dropped (from the SR and the SEG), and an empty
site that looks reacting reads "not readable" (reaction suspected) instead of negative.
Without those weights the reading is as before.
Each group stays within OHIF's five visible lines (DESIGN.md) even when the longitudinal
step adds "at previous visit" and "change" lines to it: a site has at most three (wheal,
flare, result; the wheal minus the saline's is in results.json), the test three (valid,
scale, its uncertainty; the control wheals are in their sites' groups). OHIF also prints a
finding site as a line, so these groups carry none (the SEG's segments name the skin).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from monai.deploy.core import Fragment
from pydicom.sr.coding import Code

from dicom import codes
from dicom.sr import NumericMeasurement, QualitativeFinding

from .base import ExpectedFailure, StepOperator
from .cases import MeasurementGroupResult, PhotoCase

log = logging.getLogger("dermpacs")
DEFAULT_PANELS = Path(__file__).resolve().parents[1] / "deploy" / "panels"
# Median skin luminance (0-255) below which erythema is hard to see (skin types V-VI).
LOW_CONTRAST_LUMINANCE = 105.0


def panels_location() -> Path:
    """Where the panels are configured: $DERMPACS_PRICK_PANELS (a YAML file or a folder), else deploy/panels/."""
    where = os.environ.get("DERMPACS_PRICK_PANELS")
    return Path(where) if where else DEFAULT_PANELS


def configured_panels():
    """The panels at ``panels_location()``; one file alone reads every photograph."""
    from models.prick.panel import load_panel, load_panels

    path = panels_location()
    if path.is_file():
        panel = load_panel(path)
        panel.match.default = True  # one configured panel reads every photograph of the app
        return [panel]
    return load_panels(path) if path.is_dir() else []


def _circle(xy: tuple[float, float], radius: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([xy[0] + radius * np.cos(t), xy[1] + radius * np.sin(t)])


def _site_code(site) -> Code | None:
    return Code(site.code.value, site.code.scheme, site.code.meaning) if site.code else None


class SkinPrickPanelStep:
    step_name = "skin prick panel reading"

    def __init__(self, panels: list | None = None, verifier="shipped", segmenter=None,
                 panel_name: str | None = None) -> None:
        """``verifier``: a ``models.prick.verifier.SiteVerifier``, None (no verification) or
        "shipped" (the shipped weights when they exist, else none). ``segmenter`` (the app's
        ``PrickSegmenter``) lets the reading segment a suspected site again around it.
        ``panel_name`` (the app's ``panel`` option): that panel reads every photograph."""
        self.panels_from = panels_location() if panels is None else None  # named when a name is not found
        self.panels = configured_panels() if panels is None else panels
        self.panel_name = panel_name
        self.segmenter = segmenter
        if verifier == "shipped":
            from models.prick.verifier import SiteVerifier

            verifier = SiteVerifier.load_default()
        self.verifier = verifier

    def _choose(self, case: PhotoCase):
        """(panel or None, how it was chosen): the ``panel`` option first, else by DICOM attribute.

        A named panel that is not configured fails the photograph: reading it with another
        panel, or none, would report results the rule did not ask for."""
        from models.prick.panel import panel_choice, panel_named

        if self.panel_name is not None:
            panel = panel_named(self.panels, self.panel_name)
            if panel is None:
                names = ", ".join(repr(p.name) for p in self.panels) or "none"
                where = f" in {self.panels_from}" if self.panels_from is not None else ""
                raise ExpectedFailure(f"option panel={self.panel_name!r}: no configured panel has that name "
                                      f"(panels{where}: {names})")
            return panel, "routing rule option"
        ds = case.photo.dataset
        return panel_choice(self.panels, str(getattr(ds, "SeriesDescription", "") or ""),
                            str(getattr(ds, "ProtocolName", "") or ""))

    def process(self, case: PhotoCase) -> None:
        from models.prick.panel import read_panel

        panel, chosen_by = self._choose(case)
        case.summary["low_contrast"] = self._low_contrast(case)
        if panel is None:
            self._check_without_panel(case)
            return
        reactions = case.findings.get("prick_reactions", [])
        marks = case.findings.get("prick_site_marks", [])
        shape = case.photo.pixels.shape[:2]
        check = self.verifier.bind(case.photo.pixels, self.segmenter) if self.verifier is not None else None
        reading = read_panel(panel, reactions, marks, shape, case.photo.pixel_spacing_mm, site_check=check)
        case.findings["prick_panel_reading"] = reading
        reactions = reading.reactions  # merged flares split between their sites (dropped ones left out)
        self._site_segments(case, reading, shape)  # the SEG holds what the SR reports, site by site
        mm = reading.calibration != "none"
        length = codes.MILLIMETER if mm else codes.PIXEL_LENGTH
        px_per_mm = reading.fit.px_per_mm if reading.fit is not None else (1 / reading.mm_per_px if mm else 1.0)
        groups: list[MeasurementGroupResult] = []
        sites_out = []
        for s in reading.sites:
            r = reactions[s.reaction] if s.reaction is not None else None
            wheal = s.wheal_mm if mm else s.wheal_px
            flare = s.flare_mm if mm else s.flare_px
            record = {"site": s.index + 1, "name": s.site.name, "role": s.site.role,
                      "code": None if s.site.code is None else f"{s.site.code.scheme}:{s.site.code.value}",
                      "xy": [round(s.xy[0], 1), round(s.xy[1], 1)],
                      "reaction": s.reaction is not None,
                      "wheal_mean_diameter": None if wheal is None else round(wheal, 2),
                      "flare_mean_diameter": None if flare is None else round(flare, 2),
                      "wheal_minus_negative_control": None if wheal is None or not mm
                      or reading.negative_control_wheal_mm is None
                      else round(wheal - reading.negative_control_wheal_mm, 2),
                      "result": s.result, "reason": s.reason}
            sites_out.append(record)
            x, y = s.xy
            if not (0 <= x < shape[1] and 0 <= y < shape[0]):
                continue  # no outline to draw: reported in results.json only
            outline = r.outline_xy() if r is not None else _circle(s.xy, max(3.0, 2.0 * px_per_mm))
            measurements = []
            if wheal is not None:
                measurements += [NumericMeasurement(codes.WHEAL_MEAN_DIAMETER, wheal, length),
                                 NumericMeasurement(codes.ERYTHEMA_MEAN_DIAMETER, flare, length)]
            if s.result != "not readable":
                measurements.append(NumericMeasurement(codes.PRICK_SITE_RESULT,
                                                       1 if s.result == "positive" else 0, codes.RESULT_UNIT))
            qualitative = [QualitativeFinding(codes.PRICK_SITE_RESULT, {
                "positive": codes.POSITIVE, "negative": codes.NEGATIVE}.get(s.result, codes.NOT_READABLE))]
            if _site_code(s.site) is not None:
                qualitative.append(QualitativeFinding(codes.ALLERGEN, _site_code(s.site)))
            groups.append(MeasurementGroupResult(
                outline_xy=outline, tracking_label=f"{s.index + 1} {s.site.name}"[:64],
                finding=codes.WHEAL, finding_site=None, measurements=measurements, qualitative=qualitative))
        unmatched_out = []
        for n, k in enumerate(reading.unmatched_reactions, start=1):
            r = reactions[k]
            d = self._diameters(r, reading, mm)
            unmatched_out.append({"centroid_xy": [round(v, 1) for v in r.centroid_xy],
                                  "wheal_mean_diameter": round(d[0], 2), "flare_mean_diameter": round(d[1], 2)})
            groups.append(MeasurementGroupResult(
                outline_xy=r.outline_xy(), tracking_label=f"Reaction outside the panel grid {n}",
                finding=codes.WHEAL if r.wheal_pixels else codes.ERYTHEMA_FINDING, finding_site=codes.SKIN,
                measurements=[NumericMeasurement(codes.WHEAL_MEAN_DIAMETER, d[0], length),
                              NumericMeasurement(codes.ERYTHEMA_MEAN_DIAMETER, d[1], length)]))
        groups.append(self._test_group(reading, shape, px_per_mm, length))
        case.groups = groups
        verdict = {True: "valid", False: "INVALID", None: "validity not decidable"}[reading.valid]
        positives = [s.site.name for s in reading.sites if s.site.role == "allergen" and s.result == "positive"]
        case.summary.update({
            "result": f"panel {panel.name}: test {verdict}; positive: {', '.join(positives) or 'none'}",
            "panel": panel.name,
            "panel_chosen_by": chosen_by,  # routing rule option | series description | protocol name | default
            "valid": reading.valid,
            "validity": "; ".join(reading.validity_reasons),
            "calibration": reading.calibration,
            "mm_per_pixel": None if reading.mm_per_px is None else round(reading.mm_per_px, 5),
            "scale_uncertainty_percent": None if reading.scale_uncertainty is None
            else round(100 * reading.scale_uncertainty, 2),
            "panel_length_unit": length.value,
            "panel_sites": sites_out,
            "unmatched_reactions": unmatched_out,
            "site_verifier": None if self.verifier is None else
            f"{self.verifier.config.name} {self.verifier.config.version}",
            "dropped_as_puncture_marks": [[round(v, 1) for v in r.centroid_xy] for r in reading.dropped_reactions],
            "found_by_reread": [[round(v, 1) for v in r.centroid_xy] for r in reading.reread_reactions],
        })
        # Reactions the verifier dropped as puncture marks leave the per-reaction list and count too.
        # The measurement step wrote one record per reaction, in order; drop by identity.
        dropped = {id(r) for r in reading.dropped_reactions}
        measured = case.findings.get("prick_reactions", [])
        kept = [rec for r, rec in zip(measured, case.summary.pop("sites", [])) if id(r) not in dropped]
        if dropped or reading.reread_reactions:
            case.summary["reactions"] = len(reactions)
        # "sites" (per reaction) stays last for the overlay (it prints the first keys).
        case.summary["sites"] = kept

    def _check_without_panel(self, case: PhotoCase) -> None:
        """No panel: the verifier still drops puncture marks read as wheals and re-reads
        marks it sees reacting, with Pixel Spacing or the typical site spacing as the scale."""
        from models.prick.panel import check_without_panel

        from .skin_prick_measurement import SkinPrickMeasurementStep

        if self.verifier is None:
            return
        check = check_without_panel(case.findings.get("prick_reactions", []), case.findings.get("prick_site_marks", []),
                                    case.photo.pixels.shape[:2], case.photo.pixel_spacing_mm,
                                    self.verifier.bind(case.photo.pixels, self.segmenter),
                                    self.verifier.config.reading.typical_site_spacing_mm)
        if check.dropped or check.reread or check.merged:
            SkinPrickMeasurementStep.report(case, check.reactions)
        case.summary.update({
            "site_verifier": f"{self.verifier.config.name} {self.verifier.config.version}",
            "site_verifier_scale": check.scale_source,
            "dropped_as_puncture_marks": [[round(v, 1) for v in r.centroid_xy] for r in check.dropped],
            "found_by_reread": [[round(v, 1) for v in r.centroid_xy] for r in check.reread],
            "reaction_suspected_not_measured": [[round(v, 1) for v in xy] for xy in check.suspected_xy],
        })
        case.summary["sites"] = case.summary.pop("sites", [])  # stays last for the overlay

    @staticmethod
    def _site_segments(case: PhotoCase, reading, shape) -> None:
        """A flare and a wheal segment per reacting site, named by its number and allergen
        (merged flares already shared between their sites), then the reactions off the grid:
        in OHIF each site's outline can be shown or hidden on its own."""
        from dicom.seg import SegmentSpec

        from .cases import SegmentResult
        from .skin_prick_measurement import ERYTHEMA_SEGMENT, WHEAL_SEGMENT

        def full(r, part: np.ndarray) -> np.ndarray:
            mask = np.zeros(shape, bool)
            x0, y0, x1, y1 = r.bbox
            mask[y0:y1, x0:x1] = part
            return mask

        named = [(f"{s.index + 1} {s.site.name}", reading.reactions[s.reaction])
                 for s in reading.sites if s.reaction is not None]
        named += [(f"Off the grid {n}", reading.reactions[k])
                  for n, k in enumerate(reading.unmatched_reactions, start=1)]
        segments = []
        for name, r in named:
            for spec, part, word in ((ERYTHEMA_SEGMENT, r.erythema, "flare"), (WHEAL_SEGMENT, r.wheal, "wheal")):
                if part.any():
                    label = f"{name[:64 - len(word) - 1]} {word}"
                    segments.append(SegmentResult(SegmentSpec(label, spec.category, spec.property_type,
                                                              spec.anatomic_region, spec.color_rgb), full(r, part)))
        case.segments = segments

    @staticmethod
    def _diameters(r, reading, mm: bool) -> tuple[float, float]:
        from models.prick.measure import diameters, diameters_linear

        if not mm:
            return diameters(r.wheal).mean, diameters(r.erythema).mean
        if reading.calibration == "pixel_spacing":
            to_mm = np.eye(2) * reading.mm_per_px
        else:
            to_mm = reading.fit.px_to_mm()
        return diameters_linear(r.wheal, to_mm).mean, diameters_linear(r.erythema, to_mm).mean

    @staticmethod
    def _test_group(reading, shape, px_per_mm: float, length: Code) -> MeasurementGroupResult:
        """The test as a whole: validity, controls, the scale and how it was obtained."""
        h, w = shape
        if reading.fit is not None:
            pts = np.array([s.xy for s in reading.sites])
            c = pts.mean(0)
            half = reading.panel.spacing_mm * px_per_mm * 0.5
            lo, hi = pts.min(0) - half, pts.max(0) + half
            lo, hi = np.maximum(lo, 0), np.minimum(hi, [w, h])
            if (hi - lo).min() < 3:
                lo, hi = c - 2, c + 2
            outline = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
        else:
            outline = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
        ms = []
        if reading.valid is not None:
            ms.append(NumericMeasurement(codes.PRICK_TEST_VALID, 1 if reading.valid else 0, codes.RESULT_UNIT))
        if reading.calibration == "pixel_spacing":
            ms.append(NumericMeasurement(codes.SCALE_FROM_PIXEL_SPACING, reading.mm_per_px, codes.MM_PER_PIXEL))
        elif reading.calibration == "panel_grid":
            ms.append(NumericMeasurement(codes.SCALE_FROM_PANEL_GRID, reading.mm_per_px, codes.MM_PER_PIXEL))
            ms.append(NumericMeasurement(codes.SCALE_UNCERTAINTY, 100 * reading.scale_uncertainty, codes.PERCENT))
        if not ms:  # nothing decided and no scale: say how many sites were read
            ms.append(NumericMeasurement(codes.PRICK_SITES_READ, sum(s.result != "not readable" for s in reading.sites),
                                         codes.SITES_UNIT))
        validity = {True: codes.POSITIVE, False: codes.NEGATIVE, None: codes.NOT_READABLE}[reading.valid]
        return MeasurementGroupResult(
            outline_xy=outline, tracking_label=f"Skin prick test: {reading.panel.name}"[:64],
            finding=codes.WHEAL, finding_site=None, measurements=ms,
            qualitative=[QualitativeFinding(codes.PRICK_TEST_VALID, validity)])

    @staticmethod
    def _low_contrast(case: PhotoCase) -> bool:
        """Dark skin (types V-VI): erythema is hard to see, flares may be under-read."""
        rgb = case.photo.pixels
        step = max(1, max(rgb.shape[:2]) // 256)
        small = rgb[::step, ::step].astype(np.float32)
        ery = case.findings.get("prick_erythema")
        lum = small @ np.array([0.299, 0.587, 0.114], np.float32)
        if ery is not None:
            lum = lum[~ery[::step, ::step]]
        return bool(np.median(lum) < LOW_CONTRAST_LUMINANCE) if lum.size else False


class SkinPrickPanelOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, panels: list | None = None, verifier="shipped", segmenter=None,
                 panel_name: str | None = None, **kwargs) -> None:
        super().__init__(fragment, *args, step=SkinPrickPanelStep(panels, verifier, segmenter, panel_name), **kwargs)
