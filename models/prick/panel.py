"""Skin prick test panels: configuration, grid fitting, site matching and the reading.

An allergist reads a *panel*: every prick site is an allergen or a control, a site
without reaction is a result too, and positivity is the wheal's mean diameter in mm
against the negative (saline) control. A panel is YAML (``deploy/panels/*.yaml``)::

    name: Standard inhalant panel
    layout: {rows: 2, columns: 6}      # or {list: true}: one row, in the sites' order
    spacing_mm: 25                     # between neighbouring sites (row_spacing_mm: rows)
    sites:                             # row by row, as photographed (top-left first)
      - {name: Histamine, role: positive_control}
      - {name: Saline, role: negative_control}
      - {name: Birch pollen}           # role: allergen (default); code: {scheme, value, meaning}
    rule: {wheal_margin_mm: 3}         # positive: wheal >= negative control + 3 mm
    match: {series_description_regex: "inhalant"}   # chosen by DICOM attribute
                                                    # (or by name: the app's --option panel=NAME)

The grid is fitted to the detected reactions and prick-site marks (a similarity from two
correspondences, the best-supported one refined to an affine map, which also absorbs the
foreshortening of an oblique view); it maps panel millimetres to photo pixels, so without
Pixel Spacing it is the calibration (with an uncertainty from the residuals and the hand
placement of the pricks).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from models.config import load_yaml_config

Role = Literal["allergen", "positive_control", "negative_control"]


@dataclass
class SiteCode:
    """A coded allergen (e.g. SCT); without one the site is named by its text only."""

    scheme: str
    value: str
    meaning: str


@dataclass
class PanelSiteConfig:
    name: str
    role: Role = "allergen"
    code: SiteCode | None = None

    def __post_init__(self) -> None:
        if isinstance(self.code, dict):  # the YAML loader leaves an optional dataclass as a dict
            self.code = SiteCode(**{k: str(v) for k, v in self.code.items()})
        if self.role not in ("allergen", "positive_control", "negative_control"):
            raise ValueError(f"site {self.name!r}: role must be allergen, positive_control or negative_control")


@dataclass
class LayoutConfig:
    rows: int = 1
    columns: int = 0  # 0: as many as the sites (one row)
    list: bool = False  # an ordered list: one row of sites in order


@dataclass
class RuleConfig:
    """Positivity and validity (common practice; configure to the clinic's)."""

    wheal_margin_mm: float = 3.0  # allergen positive: wheal >= negative control + margin
    positive_control_min_wheal_mm: float = 3.0  # histamine must reach this or the test is invalid
    negative_control_max_wheal_mm: float = 3.0  # saline at or above this: invalid (dermographism)


@dataclass
class MatchConfig:
    """Which photographs this panel reads (regexes searched case-insensitively)."""

    series_description_regex: str | None = None
    protocol_name_regex: str | None = None
    default: bool = False  # used when no panel's regexes match


@dataclass
class PanelConfig:
    name: str
    sites: list[PanelSiteConfig]
    spacing_mm: float = 25.0
    row_spacing_mm: float | None = None
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    rule: RuleConfig = field(default_factory=RuleConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    max_rotation_deg: float = 30.0  # the panel is photographed roughly upright (site 1 top-left)
    placement_sd_mm: float = 1.5  # hand placement of the pricks around the nominal grid

    def __post_init__(self) -> None:
        if not self.sites:
            raise ValueError(f"panel {self.name!r}: no sites")
        if self.spacing_mm <= 0:
            raise ValueError(f"panel {self.name!r}: spacing_mm must be positive")
        if self.layout.list or self.layout.columns <= 0:
            self.layout = LayoutConfig(rows=1, columns=len(self.sites), list=self.layout.list)
        if self.layout.rows * self.layout.columns < len(self.sites):
            raise ValueError(f"panel {self.name!r}: {len(self.sites)} sites do not fit "
                             f"{self.layout.rows} x {self.layout.columns}")
        roles = [s.role for s in self.sites]
        if "negative_control" not in roles or "positive_control" not in roles:
            raise ValueError(f"panel {self.name!r}: needs a positive and a negative control site")

    def grid_mm(self) -> np.ndarray:
        """(S, 2) nominal x, y of every site in mm (row-major order of ``sites``)."""
        cols = self.layout.columns
        dy = self.row_spacing_mm or self.spacing_mm
        return np.array([[(i % cols) * self.spacing_mm, (i // cols) * dy] for i in range(len(self.sites))],
                        np.float64)

    def grid_position(self, index: int) -> tuple[int, int]:
        return index // self.layout.columns, index % self.layout.columns


def load_panel(path: str | Path) -> PanelConfig:
    return load_yaml_config(PanelConfig, path)


def load_panels(folder: str | Path) -> list[PanelConfig]:
    return [load_panel(p) for p in sorted(Path(folder).glob("*.yaml"))]


def choose_panel(panels: list[PanelConfig], series_description: str = "",
                 protocol_name: str = "") -> PanelConfig | None:
    """The first panel whose regexes match the photograph's attributes, else the default."""
    return panel_choice(panels, series_description, protocol_name)[0]


def panel_choice(panels: list[PanelConfig], series_description: str = "",
                 protocol_name: str = "") -> tuple[PanelConfig | None, str | None]:
    """``choose_panel`` and how it chose, for results.json: "series description",
    "protocol name", both joined by "and" (a panel that gives both regexes), or "default"."""
    for p in panels:
        m = p.match
        tests = [(m.series_description_regex, series_description, "series description"),
                 (m.protocol_name_regex, protocol_name, "protocol name")]
        given = [(rx, value, what) for rx, value, what in tests if rx]
        if given and all(re.search(rx, value or "", re.IGNORECASE) for rx, value, _ in given):
            return p, " and ".join(what for _, _, what in given)
    default = next((p for p in panels if p.match.default), None)
    return default, None if default is None else "default"


def panel_named(panels: list[PanelConfig], name: str) -> PanelConfig | None:
    """The panel whose ``name`` is ``name`` (case-insensitive): a routing rule's choice."""
    return next((p for p in panels if p.name.casefold() == name.strip().casefold()), None)


# --------------------------------------------------------------------------- grid fitting


@dataclass
class GridFit:
    """Affine map of panel mm -> photo pixels: ``xy = A @ mm + t``."""

    A: np.ndarray  # (2, 2)
    t: np.ndarray  # (2,)
    assigned: dict[int, int]  # point index -> site index
    residual_rms_mm: float
    scale_uncertainty: float  # relative (1 SD) of the mm/pixel scale

    def sites_xy(self, grid_mm: np.ndarray) -> np.ndarray:
        return grid_mm @ self.A.T + self.t

    @property
    def px_per_mm(self) -> float:
        return float(np.sqrt(abs(np.linalg.det(self.A))))

    def px_to_mm(self) -> np.ndarray:
        """2x2 linear map of pixel offsets (x, y) to mm (undoes rotation, scale and tilt)."""
        return np.linalg.inv(self.A)


def _similarity_from_pairs(q: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Similarities (scale*rotation (H, 2, 2), translation (H, 2)) mapping q[:, 0]->p[:, 0], q[:, 1]->p[:, 1]."""
    dq = q[:, 1] - q[:, 0]
    dp = p[:, 1] - p[:, 0]
    zq = dq[:, 0] + 1j * dq[:, 1]
    zp = dp[:, 0] + 1j * dp[:, 1]
    z = zp / zq
    a, b = z.real, z.imag
    R = np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], -2)
    t = p[:, 0] - np.einsum("hij,hj->hi", R, q[:, 0])
    return R, t


def _assign(pred: np.ndarray, points: np.ndarray, tol: float) -> dict[int, int]:
    """Greedy one-to-one nearest assignment of points to predicted sites within ``tol`` px."""
    d = np.linalg.norm(points[:, None, :] - pred[None, :, :], axis=-1)
    out: dict[int, int] = {}
    used: set[int] = set()
    for flat in np.argsort(d, axis=None):
        i, k = np.unravel_index(int(flat), d.shape)
        if d[i, k] > tol:
            break
        if i in out or k in used:
            continue
        out[int(i)] = int(k)
        used.add(int(k))
    return out


def fit_grid(points_xy, panel: PanelConfig, image_shape: tuple[int, int],
             px_per_mm_known: float | None = None, weights=None) -> GridFit | None:
    """Fit the panel's grid to detected site evidence (reaction centres, prick marks).

    Hypotheses: every pair of points against every pair of neighbouring sites, kept when
    the rotation is within ``max_rotation_deg`` and the scale plausible (within 20 % of
    ``px_per_mm_known`` when the photograph is calibrated). The hypothesis explaining the
    most points (then the smallest error) is refined by least squares (affine with >= 4
    non-collinear matches, similarity otherwise). None when fewer than two points fit.
    """
    pts = np.asarray(points_xy, np.float64).reshape(-1, 2)
    w = np.ones(len(pts)) if weights is None else np.asarray(weights, np.float64)
    grid = panel.grid_mm()
    S, P = len(grid), len(pts)
    if P < 2 or S < 2:
        return None
    h, wd = image_shape
    cols = panel.layout.columns
    rc = np.array([panel.grid_position(k) for k in range(S)])
    site_pairs = [(a, b) for a in range(S) for b in range(S) if a != b
                  and abs(rc[a, 0] - rc[b, 0]) <= 1 and abs(rc[a, 1] - rc[b, 1]) <= max(2, cols // 3)]
    point_pairs = [(i, j) for i in range(P) for j in range(i + 1, P)]
    if not site_pairs or not point_pairs:
        return None
    sp, pp = np.array(site_pairs), np.array(point_pairs)
    qa = grid[sp]  # (Hs, 2, 2)
    pa = pts[pp]  # (Hp, 2, 2)
    Q = np.repeat(qa, len(pp), axis=0)
    Pm = np.tile(pa, (len(sp), 1, 1))
    R, t = _similarity_from_pairs(Q, Pm)
    scale = np.sqrt(np.abs(np.linalg.det(R)))
    rot = np.degrees(np.arctan2(R[:, 1, 0], R[:, 0, 0]))
    if px_per_mm_known:
        ok_scale = np.abs(scale / px_per_mm_known - 1) < 0.2
    else:  # the panel spans 5-95 % of the photograph's long side
        span = max(np.ptp(grid[:, 0]), np.ptp(grid[:, 1]), panel.spacing_mm)
        ok_scale = (scale * span > 0.05 * max(h, wd)) & (scale * span < 1.2 * max(h, wd))
    keep = ok_scale & (np.abs(rot) <= panel.max_rotation_deg)
    if not keep.any():
        return None
    R, t, scale, rot = R[keep], t[keep], scale[keep], rot[keep]
    pred = np.einsum("hij,sj->hsi", R, grid) + t[:, None, :]  # (H, S, 2)
    d = np.linalg.norm(pts[None, :, None, :] - pred[:, None, :, :], axis=-1)  # (H, P, S)
    tol = 0.3 * panel.spacing_mm * scale  # px, per hypothesis
    near = d.min(-1)
    inlier = near < tol[:, None]
    support = (inlier * w[None]).sum(1)
    err = np.where(inlier, near / tol[:, None], 1.0).sum(1)
    # Ties (few points) go to the panel photographed whole and upright.
    outside = ((pred[..., 0] < 0) | (pred[..., 0] >= wd) | (pred[..., 1] < 0) | (pred[..., 1] >= h)).sum(1)
    score = support - 0.01 * err - 0.05 * outside - 0.002 * np.abs(rot) / max(panel.max_rotation_deg, 1)
    best = int(np.argmax(score))
    A, tt = R[best], t[best]
    assigned: dict[int, int] = {}
    for _ in range(3):  # refine: assign, then least squares
        pred_b = grid @ A.T + tt
        assigned = _assign(pred_b, pts, 0.35 * panel.spacing_mm * float(np.sqrt(abs(np.linalg.det(A)))))
        if len(assigned) < 2:
            break
        src = grid[list(assigned.values())]
        dst = pts[list(assigned.keys())]
        A, tt = _least_squares(src, dst, affine=len(assigned) >= 4 and _spread(src))
    if len(assigned) < (2 if px_per_mm_known else 3):  # two points fix a grid only with a known scale
        return None
    src = grid[list(assigned.values())]
    dst = pts[list(assigned.keys())]
    res_px = dst - (src @ A.T + tt)
    res_mm = res_px @ np.linalg.inv(A).T
    rms = float(np.sqrt((res_mm**2).sum(1).mean()))
    spread_mm = float(np.sqrt(((src - src.mean(0)) ** 2).sum(1).sum()))
    sd = max(rms, panel.placement_sd_mm)
    dof = max(1, len(assigned) - (3 if len(assigned) >= 4 else 2))
    unc = sd / max(spread_mm, 1e-6) * np.sqrt(len(assigned) / dof)
    return GridFit(A, tt, assigned, rms, float(unc))


def _spread(src: np.ndarray) -> bool:
    """Points not on one line (an affine fit needs two directions)."""
    c = src - src.mean(0)
    s = np.linalg.svd(c, compute_uv=False)
    return len(s) > 1 and s[1] > 0.2 * s[0]


def _least_squares(src: np.ndarray, dst: np.ndarray, affine: bool) -> tuple[np.ndarray, np.ndarray]:
    if affine:
        X = np.hstack([src, np.ones((len(src), 1))])
        sol, *_ = np.linalg.lstsq(X, dst, rcond=None)
        return sol[:2].T, sol[2]
    # similarity: x' = a x - b y + tx, y' = b x + a y + ty
    n = len(src)
    M = np.zeros((2 * n, 4))
    M[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    M[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    sol, *_ = np.linalg.lstsq(M, dst.reshape(-1), rcond=None)
    a, b, tx, ty = sol
    return np.array([[a, -b], [b, a]]), np.array([tx, ty])


# --------------------------------------------------------------------------- reading


Result = Literal["positive", "negative", "not readable"]


@dataclass
class SiteReading:
    index: int
    site: PanelSiteConfig
    xy: tuple[float, float]  # fitted site position in the photograph (px)
    reaction: int | None  # index into the reactions list, None: nothing at the site
    wheal_mm: float | None = None  # mean diameter (None: not in mm)
    flare_mm: float | None = None  # mean diameter of the whole reaction (wheal included)
    wheal_px: float = 0.0
    flare_px: float = 0.0
    result: Result = "not readable"
    reason: str = ""


@dataclass
class PanelReading:
    panel: PanelConfig
    sites: list[SiteReading]
    unmatched_reactions: list[int]  # reaction indices outside the grid
    valid: bool | None  # None: could not be decided
    validity_reasons: list[str]
    calibration: Literal["pixel_spacing", "panel_grid", "none"]
    mm_per_px: float | None
    scale_uncertainty: float | None  # relative, 1 SD
    fit: GridFit | None
    negative_control_wheal_mm: float | None = None
    reactions: list = field(default_factory=list)  # the reactions the indices refer to (merged ones split)
    dropped_reactions: list = field(default_factory=list)  # small ones the site verifier found to be puncture marks
    reread_reactions: list = field(default_factory=list)  # found by segmenting a suspected site again (in ``reactions``)


def read_panel(panel: PanelConfig, reactions: list, marks_xy, image_shape: tuple[int, int],
               pixel_spacing: tuple[float, float] | None = None, site_check=None) -> PanelReading:
    """Fit the grid, match reactions to sites, measure in mm, decide each site and validity.

    ``reactions`` are ``models.prick.measure.Reaction`` (full-resolution crops); a reaction
    is matched to the nearest fitted site within 0.4 x spacing (by its wheal's centre when
    it has one), one reaction per site.

    ``site_check`` (optional, ``models.prick.verifier.SiteCheck``: the site verifier bound
    to the photograph) second-guesses the segmentation once the grid is fitted and a scale
    is known (``verify_sites``): a matched reaction with a wheal below ``max_wheal_mm`` that
    it scores as puncture mark only (below ``drop_below``) is dropped (the site reads negative; the reaction is in
    ``dropped_reactions``), and a site with nothing matched that it scores as reacting reads
    "not readable" (reaction suspected, not measurable) rather than negative, unless the
    site check can re-read it (``SiteCheck.reread``: segmented again around the site) and
    finds the reaction there.
    """
    from .measure import diameters

    h, w = image_shape
    reactions = list(reactions)
    centres = np.array([reaction_centre(r) for r in reactions], np.float64).reshape(-1, 2)
    # Marks inside a reaction are that reaction's site; the others are sites of their own.
    marks = [m for m in (marks_xy or []) if not any(r.contains(m) for r in reactions)]
    points = np.vstack([centres, np.array(marks, np.float64).reshape(-1, 2)])
    known = None
    if pixel_spacing:
        known = 1.0 / float(np.sqrt(pixel_spacing[0] * pixel_spacing[1]))
    fit = fit_grid(points, panel, image_shape, known)
    grid = panel.grid_mm()

    if pixel_spacing:
        calibration, to_mm = "pixel_spacing", np.diag([pixel_spacing[1], pixel_spacing[0]])
        unc = None
    elif fit is not None:
        calibration, to_mm, unc = "panel_grid", fit.px_to_mm(), fit.scale_uncertainty
    else:
        calibration, to_mm, unc = "none", None, None
    mm_per_px = float(np.sqrt(abs(np.linalg.det(to_mm)))) if to_mm is not None else None

    site_xy = fit.sites_xy(grid) if fit is not None else np.full((len(grid), 2), np.nan)
    if fit is not None:  # where each site was really pricked: hand-placed, ~1.5 mm off the ideal grid
        site_xy = snap_to_marks(site_xy, grid, marks_xy, 0.2 * panel.spacing_mm * fit.px_per_mm)
    if fit is not None:  # merged flares: one region covering several sites is shared between them
        reactions = split_at_sites(reactions, site_xy, image_shape)
        centres = np.array([reaction_centre(r) for r in reactions], np.float64).reshape(-1, 2)
    matched: dict[int, int] = {}
    unmatched: list[int] = []
    if fit is not None:
        tol = 0.4 * panel.spacing_mm * fit.px_per_mm
        assign = _assign(site_xy, centres, tol) if len(centres) else {}
        matched = {k: i for i, k in assign.items()}
        unmatched = [i for i in range(len(reactions)) if i not in assign]
    else:
        unmatched = list(range(len(reactions)))

    verdicts: dict[int, tuple[str, float]] = {}
    dropped: list = []
    reread_sites: set[int] = set()
    if site_check is not None and fit is not None and to_mm is not None:
        verdicts = verify_sites(site_check, reactions, matched, site_xy, marks, image_shape, to_mm, mm_per_px,
                                0.2 * panel.spacing_mm / mm_per_px)
        gone = {matched.pop(k) for k, (v, _) in verdicts.items() if v == "puncture"}
        dropped = [reactions[i] for i in sorted(gone)]
        if gone:  # re-index what stays
            new_index = {i: n for n, i in enumerate(i for i in range(len(reactions)) if i not in gone)}
            reactions = [reactions[i] for i in new_index]
            matched = {k: new_index[i] for k, i in matched.items()}
            unmatched = [new_index[i] for i in unmatched]
        for k, (verdict, _) in verdicts.items():  # a reaction seen but not segmented: look again, closer
            if verdict == "suspected" and hasattr(site_check, "reread"):
                found = site_check.reread(tuple(site_xy[k]), 1.0 / mm_per_px)
                if found is not None:
                    matched[k] = len(reactions)
                    reactions.append(found)
                    reread_sites.add(k)

    readings: list[SiteReading] = []
    for k, site in enumerate(panel.sites):
        x, y = site_xy[k]
        sr = SiteReading(k, site, (float(x), float(y)), matched.get(k))
        if fit is None:
            sr.reason = "panel grid not found (fewer than two sites seen)"
        elif not (0 <= x < w and 0 <= y < h):
            sr.reason = "site outside the photograph"
        else:
            if sr.reaction is not None:
                r = reactions[sr.reaction]
                dw, df = diameters(r.wheal), diameters(r.erythema)
                sr.wheal_px, sr.flare_px = dw.mean, df.mean
                if to_mm is not None:
                    sr.wheal_mm = _mean_diameter_mm(r.wheal, to_mm)
                    sr.flare_mm = _mean_diameter_mm(r.erythema, to_mm)
                if k in reread_sites:
                    sr.reason = (f"re-read: the site verifier saw a reaction (p = {verdicts[k][1]:.2f}) the "
                                 "whole-photograph segmentation missed; segmented again around the site")
            elif k in verdicts and verdicts[k][0] == "suspected":
                sr.reason = (f"reaction suspected (site verifier p = {verdicts[k][1]:.2f}) but not segmented: "
                             "not measurable, read it by eye")
            elif to_mm is not None:
                sr.wheal_mm = sr.flare_mm = 0.0
                if k in verdicts and verdicts[k][0] == "puncture":
                    sr.reason = (f"puncture mark only (site verifier p = {verdicts[k][1]:.2f}): "
                                 "the segmentation's small reaction was dropped")
            if to_mm is None:
                sr.reason = "no scale: neither Pixel Spacing nor a fitted grid"
        readings.append(sr)

    # Controls, then the allergens against the negative control.
    rule = panel.rule
    reasons: list[str] = []
    neg = [s for s in readings if s.site.role == "negative_control"]
    pos = [s for s in readings if s.site.role == "positive_control"]
    neg_mm = [s.wheal_mm for s in neg if s.wheal_mm is not None]
    pos_mm = [s.wheal_mm for s in pos if s.wheal_mm is not None]
    valid: bool | None = True
    if len(neg_mm) < len(neg) or len(pos_mm) < len(pos):
        valid = None
        reasons.append("a control could not be read")
    for s in pos:
        if s.wheal_mm is not None:
            s.result = "positive" if s.wheal_mm >= rule.positive_control_min_wheal_mm else "negative"
            if s.result == "negative":
                valid = False
                reasons.append(f"positive control {s.site.name} did not react "
                               f"(wheal {s.wheal_mm:.1f} mm < {rule.positive_control_min_wheal_mm:g} mm)")
    for s in neg:
        if s.wheal_mm is not None:
            s.result = "positive" if s.wheal_mm >= rule.negative_control_max_wheal_mm else "negative"
            if s.result == "positive":
                valid = False
                reasons.append(f"negative control {s.site.name} reacted "
                               f"(wheal {s.wheal_mm:.1f} mm >= {rule.negative_control_max_wheal_mm:g} mm)")
    baseline = max(neg_mm) if neg_mm else None
    for s in readings:
        if s.site.role != "allergen":
            if s.wheal_mm is None:
                s.result = "not readable"
            continue
        if s.wheal_mm is None:
            s.result = "not readable"
        elif baseline is None:
            s.result, s.reason = "not readable", "negative control not readable"
        else:
            s.result = "positive" if s.wheal_mm >= baseline + rule.wheal_margin_mm else "negative"
    if valid and not reasons:
        reasons.append("positive control reacted and negative control did not")
    return PanelReading(panel, readings, unmatched, valid, reasons, calibration, mm_per_px, unc, fit, baseline,
                        reactions, dropped, [reactions[matched[k]] for k in sorted(reread_sites)])


@dataclass
class UnpanelledCheck:
    """The site verifier's second look at a photograph no panel applies to."""

    reactions: list  # kept and re-read ones, in the order given, re-read ones last
    dropped: list  # small ones scored as puncture mark only, and specks of redness without a wheal
    reread: list  # found by segmenting a suspected prick mark again (also in ``reactions``)
    suspected_xy: list  # prick marks scored as reacting where nothing could be segmented
    px_per_mm: float | None  # the scale used (None: no check was possible)
    scale_source: str  # "pixel_spacing", "site_spacing" (assumed typical spacing) or "none"
    merged: int = 0  # pieces of flares joined to the reaction beside them


def check_without_panel(reactions: list, marks_xy, image_shape: tuple[int, int],
                        pixel_spacing: tuple[float, float] | None, site_check,
                        typical_spacing_mm: float = 25.0, min_flare_only_mm: float = 3.0,
                        max_gap_mm: float = 3.0) -> UnpanelledCheck:
    """Second-guess the segmentation without a panel: every reaction and every prick mark
    outside them is a site. The scale is Pixel Spacing, else the median distance between
    neighbouring prick sites (``_puncture_evidence``) taken as ``typical_spacing_mm``
    (panels are pricked 2-3 cm apart); with fewer than three sites and no Pixel Spacing
    nothing is checked. Small reactions scored as puncture only are dropped, and so is redness without a wheal narrower than
    ``min_flare_only_mm``, once pieces of a flare within ``max_gap_mm`` of a reaction with a
    wheal are joined to it (``merge_flare_fragments``); marks scored as reacting are re-read."""
    from .measure import merge_flare_fragments

    reactions = list(reactions)
    marks = [m for m in (marks_xy or []) if not any(r.contains(m) for r in reactions)]

    def sites_of(reactions: list) -> np.ndarray:
        return np.array([reaction_centre(r) for r in reactions] + [tuple(m) for m in marks], np.float64).reshape(-1, 2)

    site_xy = sites_of(reactions)
    if pixel_spacing:
        mm_per_px, source = float(np.sqrt(pixel_spacing[0] * pixel_spacing[1])), "pixel_spacing"
    elif len(evidence := _puncture_evidence(reactions, marks_xy)) >= 3:
        d = np.linalg.norm(evidence[:, None] - evidence[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        mm_per_px, source = typical_spacing_mm / float(np.median(d.min(1))), "site_spacing"
    else:
        return UnpanelledCheck(reactions, [], [], [], None, "none")
    pieces = len(reactions)
    reactions = merge_flare_fragments(reactions, marks_xy, max_gap_mm / mm_per_px)
    merged = pieces - len(reactions)
    specks = [r for r in reactions if not r.wheal.any()
              and _mean_diameter_mm(r.erythema, np.eye(2) * mm_per_px) < min_flare_only_mm]
    # Redness without a wheal smaller than any flare: shading, hair roots, pen dots.
    reactions = [r for r in reactions if not any(r is s for s in specks)]
    site_xy = sites_of(reactions)
    matched = {i: i for i in range(len(reactions))}
    verdicts = verify_sites(site_check, reactions, matched, site_xy, [], image_shape,
                            np.eye(2) * mm_per_px, mm_per_px, 0.0)
    dropped = specks + [reactions[k] for k, (v, _) in sorted(verdicts.items()) if v == "puncture"]
    kept = [r for k, r in enumerate(reactions) if verdicts.get(k, ("",))[0] != "puncture"]
    reread, suspected = [], []
    for k, (v, _) in sorted(verdicts.items()):
        if v == "suspected":
            found = site_check.reread(tuple(site_xy[k]), 1.0 / mm_per_px) if hasattr(site_check, "reread") else None
            if found is not None:
                reread.append(found)
            else:
                suspected.append(tuple(float(c) for c in site_xy[k]))
    return UnpanelledCheck(kept + reread, dropped, reread, suspected, 1.0 / mm_per_px, source, merged)


def _puncture_evidence(reactions: list, marks_xy) -> np.ndarray:
    """Where sites were pricked, for the spacing: the detected prick marks when there are
    three or more (the net finds them reliably), else those and the wheals' centres.
    Wheal-less redness is left out: hair and shading come in numbers and would shrink it."""
    marks = np.asarray(marks_xy if marks_xy is not None else [], np.float64).reshape(-1, 2)
    if len(marks) >= 3:
        return marks
    wheals = [reaction_centre(r) for r in reactions if r.wheal.any()]
    wheals = [w for w in wheals if not len(marks) or np.linalg.norm(marks - w, axis=1).min() > 3]
    return np.vstack([marks, np.array(wheals, np.float64).reshape(-1, 2)])


def verify_sites(site_check, reactions: list, matched: dict[int, int], site_xy: np.ndarray, marks,
                 image_shape: tuple[int, int], to_mm: np.ndarray, mm_per_px: float,
                 mark_tol_px: float) -> dict[int, tuple[str, float]]:
    """The site verifier's verdict on the sites the segmentation may have got wrong.

    Checked: sites inside the photograph with a matched reaction whose wheal mean diameter
    is below ``site_check.max_wheal_mm`` and whose flare is below ``max_flare_mm`` (looked at
    on the reaction's centre; a reaction without any wheal only with ``check_flare_only``:
    the U-Net's bloomed puncture dot is always a "wheal" as wide as its "flare", and a 10 mm
    window inside a wider flare sees only even redness) and sites with
    nothing matched (looked at on the nearest prick mark within ``mark_tol_px``, else the
    fitted position). Returns {site: ("puncture" | "suspected" | "agrees", probability)}.
    """
    h, w = image_shape
    marks = np.asarray(marks if marks is not None else [], np.float64).reshape(-1, 2)
    sites, xys = [], []
    for k, (x, y) in enumerate(site_xy):
        if not (0 <= x < w and 0 <= y < h):
            continue
        i = matched.get(k)
        if i is not None:
            if not reactions[i].wheal.any() and not getattr(site_check, "check_flare_only", False):
                continue  # the bloomed puncture dot is always segmented as a wheal
            if _mean_diameter_mm(reactions[i].wheal, to_mm) >= site_check.max_wheal_mm:
                continue
            if _mean_diameter_mm(reactions[i].erythema, to_mm) >= site_check.max_flare_mm:
                continue  # a flare wider than the verifier's window: it would see only redness
            xy = reaction_centre(reactions[i])
        elif len(marks):
            d = np.linalg.norm(marks - (x, y), axis=1)
            xy = tuple(marks[int(d.argmin())]) if d.min() <= mark_tol_px else (x, y)
        else:
            xy = (x, y)
        sites.append(k)
        xys.append(xy)
    if not sites:
        return {}
    probs = site_check(np.array(xys, np.float64), 1.0 / mm_per_px)
    out: dict[int, tuple[str, float]] = {}
    for k, p in zip(sites, probs):
        if k in matched:
            out[k] = ("puncture" if p < getattr(site_check, "drop_below", site_check.threshold) else "agrees", float(p))
        else:
            out[k] = ("suspected" if p >= site_check.threshold else "agrees", float(p))
    return out


def snap_to_marks(site_xy: np.ndarray, grid_mm: np.ndarray, marks_xy, tol_px: float) -> np.ndarray:
    """Each fitted site moved onto its detected prick mark (within ``tol_px``), every mark
    counted, those inside reactions too; with four or more such sites the ones whose mark
    was not seen (hidden under a flare) follow an affine fit to the marks, which are more
    exact than the reaction centres the grid was first fitted to."""
    marks = np.asarray(marks_xy if marks_xy is not None else [], np.float64).reshape(-1, 2)
    if not len(marks):
        return site_xy
    out = site_xy.copy()
    on_mark = _assign(site_xy, marks, tol_px)  # mark index -> site index
    if len(on_mark) >= 4:
        src = grid_mm[list(on_mark.values())]
        if _spread(src):
            A, t = _least_squares(src, marks[list(on_mark.keys())], affine=True)
            out = grid_mm @ A.T + t
    for i, k in on_mark.items():
        out[k] = marks[i]
    return out


def reaction_centre(r) -> tuple[float, float]:
    """A reaction's site: its wheal's centre when it has one (a flare can be lopsided)."""
    if r.wheal.any():
        ys, xs = np.nonzero(r.wheal)
        return float(xs.mean() + r.bbox[0]), float(ys.mean() + r.bbox[1])
    return r.centroid_xy


def split_at_sites(reactions: list, site_xy: np.ndarray, shape: tuple[int, int]) -> list:
    """Share every connected region of erythema covering two or more fitted sites between
    them (each pixel to its nearest site).

    Two flares that touch are one region of erythema; the allergist reads each site's own
    part. A region with at most one site keeps its reactions as found (split by wheals).
    """
    import cv2

    from .measure import Reaction

    if not reactions:
        return []
    whole = np.zeros(shape, np.uint8)
    wheal = np.zeros(shape, bool)
    for r in reactions:
        x0, y0, x1, y1 = r.bbox
        whole[y0:y1, x0:x1] |= r.erythema
        wheal[y0:y1, x0:x1] |= r.wheal
    n, comp, stats, _ = cv2.connectedComponentsWithStats(whole, connectivity=8)
    h, w = shape
    sites_in: dict[int, list[int]] = {}
    for k, (x, y) in enumerate(site_xy):
        if np.isfinite(x) and 0 <= x < w and 0 <= y < h and comp[int(y), int(x)]:
            sites_in.setdefault(int(comp[int(y), int(x)]), []).append(k)
    out = []
    for r in reactions:
        cx, cy = (int(v) for v in reaction_centre(r))
        c = int(comp[min(cy, h - 1), min(cx, w - 1)]) or int(comp[r.bbox[1]:r.bbox[3], r.bbox[0]:r.bbox[2]].max())
        if len(sites_in.get(c, [])) < 2:
            out.append(r)
    for c, ks in sites_in.items():
        if len(ks) < 2:
            continue
        x0, y0, bw, bh = (int(v) for v in stats[c, :4])
        region = comp[y0:y0 + bh, x0:x0 + bw] == c
        yy, xx = np.mgrid[y0:y0 + bh, x0:x0 + bw]
        nearest = np.stack([(xx - site_xy[k][0]) ** 2 + (yy - site_xy[k][1]) ** 2 for k in ks]).argmin(0)
        wh = wheal[y0:y0 + bh, x0:x0 + bw]
        for j in range(len(ks)):
            part = region & (nearest == j)
            if not part.any():
                continue
            ys, xs = np.nonzero(part)
            py0, py1, px0, px1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            out.append(Reaction(bbox=(x0 + int(px0), y0 + int(py0), x0 + int(px1), y0 + int(py1)),
                                erythema=part[py0:py1, px0:px1].copy(),
                                wheal=(wh & part)[py0:py1, px0:px1].copy(),
                                centroid_xy=(float(xs.mean() + x0), float(ys.mean() + y0))))
    return out


def _mean_diameter_mm(mask: np.ndarray, to_mm: np.ndarray) -> float:
    """Mean diameter after mapping the outline to mm (handles rotation, anisotropy, tilt)."""
    from .measure import diameters_linear

    return diameters_linear(mask, to_mm).mean
