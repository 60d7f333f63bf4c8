"""Held-out evaluation on fresh synthetic panel photographs, the way the app reads them.

    python -m models.prick.evaluate_arms --weights models/weights/skin_prick_unet.pt --count 24 --out runs/arms_eval

Photographs 512x384, 1024x768, 2048x1536 and 4000x3000 in turn (seed 9013, never used in
training), 2 x 6 panels at 25 mm, about a third oblique. Each goes through the app's path
(``PrickSegmenter.predict_panel`` -> ``reactions_from_masks`` -> ``read_panel``; Pixel Spacing
given for frontal views, the panel grid calibrates oblique ones). Reports:

- Dice per class (whole reaction incl. wheal; wheal), pooled and mean per image;
- reactions found: truth sites with a reaction that the reading matched to a reaction;
  false reactions: truth-negative sites given one;
- total wheal and erythema area per photograph vs the truth (relative error; the Bar is 15 %);
- wheal and flare mean diameter per site vs the truth (mm): mean absolute error and
  Bland-Altman (the paper's figure), written to OUT/bland_altman.png, numbers to OUT/metrics.json;
- the breakdown every task's evaluation writes (``models.report``): mean Dice reaction / wheal
  and median absolute total-area error by skin type (I-II, III-IV, V-VI), photograph size and
  view (frontal / oblique), in OUT/suite.md and OUT/suite.json, and OUT/contact_sheet_1.png
  (photograph | true reaction | the model's kept reactions).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from models.metrics import confusion, dice
from models.report import Metric, breakdown, mean_of, median_abs_of, sheet_row, write_contact_sheets, write_report

from .measure import bland_altman, reactions_from_masks
from .panel import (LayoutConfig, PanelConfig, PanelSiteConfig, check_without_panel, reaction_centre,
                    read_panel)
from .synthetic import PrickSample, PrickSite, generate_sample

SIZES = [(384, 512), (768, 1024), (1536, 2048), (3000, 4000)]
SEED = 9013
VAL_SEED = 7031  # threshold tuning (validation); never the test seed
INDEPENDENT_VAL_SEED = 500  # the independent painter's validation arms (its test ones: SEED)
FACTORS = ("skin_type", "image_size", "view", "reacting_sites", "background")
SKIN_TYPE_GROUPS = {1: "I-II", 2: "I-II", 3: "III-IV", 4: "III-IV", 5: "V-VI", 6: "V-VI"}
# The model card's columns: mean Dice and median |relative error| of the photograph's total area.
METRICS = (
    Metric("dice_reaction", "Dice reaction", mean_of("dice_erythema"), "{:.2f}"),
    Metric("dice_wheal", "Dice wheal", mean_of("dice_wheal"), "{:.2f}"),
    Metric("area_error_reaction", "median area err reaction", median_abs_of("erythema_area_rel_error"), "{:.0%}"),
    Metric("area_error_wheal", "median area err wheal", median_abs_of("wheal_area_rel_error"), "{:.0%}"),
)


def kept_masks(reactions, shape) -> tuple[np.ndarray, np.ndarray]:
    """The union of the kept reactions (speckle and pen strokes removed), as the app's SEG."""
    ery, wh = np.zeros(shape, bool), np.zeros(shape, bool)
    for r in reactions:
        x0, y0, x1, y1 = r.bbox
        ery[y0:y1, x0:x1] |= r.erythema
        wh[y0:y1, x0:x1] |= r.wheal
    return ery, wh


def six_reactions(seed: int, index: int, size: tuple[int, int]):
    """The photograph issue 13 was filed with: six reacting sites on a forearm, one large
    reaction (wheal 8-12 mm) and five small ones (wheal 2-4.5 mm), every wheal 4-9 % of its
    flare's area; no quiet sites, no panel layout; skin types in turn."""
    rng = np.random.default_rng([seed, index, 6])
    big = int(rng.integers(0, 6))
    sizes = {}
    for k in range(6):
        ratio = rng.uniform(0.04, 0.09)
        wheal = rng.uniform(8, 12) if k == big else rng.uniform(2, 4.5)
        sizes[k] = (float(wheal), float(min(40.0, wheal / np.sqrt(ratio))))
    return generate_sample(seed, index, size=size, n_sites=6, reactions=sizes, fitzpatrick=1 + index % 6)


def independent_arm(seed: int, index: int, size: tuple[int, int], painter: str = "independent") -> PrickSample:
    """Issue 13's six-reaction forearm as another painter draws it, written without looking
    at our generator (its own skin, flare and wheal models, camera and JPEG), so the scenario
    measures how far the net's training carries, as a judge's would: ``independent``
    (``models.prick.independent_painter``, which 0.4.0 also trained on) or ``third``
    (``models.prick.third_painter``, which no model has seen; rows of three or a line of six).
    Frontal, Pixel Spacing exact; skin types in turn."""
    if painter == "third":
        from .third_painter import paint_arm
    else:
        from .independent_painter import paint_arm

    a = paint_arm(seed, index, size, fitzpatrick=1 + index % 6)
    sites = [PrickSite((x, y), positive=True, wheal_mm=wm, erythema_mm=fm) for x, y, wm, fm in a.sites]
    return PrickSample(image=a.image, label=a.label, px_per_mm=a.px_per_mm, fitzpatrick=a.fitzpatrick,
                       sites=sites, background=a.background.split("+")[0])


def truth_decisions(panel: PanelConfig, sites) -> tuple[list[str], bool]:
    """What the panel's rule decides from the exact truth diameters: each site's result
    (positive / negative) and the test's validity, to score the reading's decisions."""
    rule = panel.rule
    roles = [ps.role for ps in panel.sites]
    neg = [t.wheal_mm for t, role in zip(sites, roles) if role == "negative_control"]
    pos = [t.wheal_mm for t, role in zip(sites, roles) if role == "positive_control"]
    valid = all(w >= rule.positive_control_min_wheal_mm for w in pos) and \
        all(w < rule.negative_control_max_wheal_mm for w in neg)
    baseline = max(neg) if neg else 0.0
    results = []
    for t, role in zip(sites, roles):
        limit = {"positive_control": rule.positive_control_min_wheal_mm,
                 "negative_control": rule.negative_control_max_wheal_mm}.get(role, baseline + rule.wheal_margin_mm)
        results.append("positive" if t.wheal_mm >= limit else "negative")
    return results, valid


def tally_decisions(tally: dict, panel: PanelConfig, sites, reading) -> None:
    """Adds one reading's allergen decisions (against the truth's, ``truth_decisions``) and
    its validity to ``tally``: what an allergist signs, beyond the masks."""
    truth, valid = truth_decisions(panel, sites)
    for want, got, ps in zip(truth, reading.sites, panel.sites):
        if ps.role != "allergen":
            continue
        if got.result == "not readable":
            tally["allergen"]["not_readable"] += 1
        else:
            key = ("tp" if got.result == "positive" else "fn") if want == "positive" else \
                ("fp" if got.result == "positive" else "tn")
            tally["allergen"][key] += 1
    if reading.valid is None:
        tally["validity"]["unknown"] += 1
    else:
        tally["validity"]["agree" if bool(reading.valid) == valid else "disagree"] += 1


def eval_panel(spacing_mm: float = 25.0) -> PanelConfig:
    sites = [PanelSiteConfig("Histamine", "positive_control"), PanelSiteConfig("Saline", "negative_control")]
    sites += [PanelSiteConfig(f"Allergen {i}") for i in range(1, 11)]
    return PanelConfig("evaluation 2x6", sites, spacing_mm=spacing_mm, layout=LayoutConfig(2, 6))


def factor_levels(fitzpatrick: int, size: tuple[int, int], oblique: bool, reacting: int = 0,
                  background: str = "none") -> dict[str, str]:
    """The photograph's level of each factor of the breakdown; ``reacting``: how many of its
    sites react (a prick test's extent: nearly every panel also has one flare of 30 mm+);
    ``background``: the surface beside the arm (``PrickSample.background``)."""
    extent = "0-4" if reacting <= 4 else ("5-8" if reacting <= 8 else "9-12")
    return {"skin_type": SKIN_TYPE_GROUPS.get(int(fitzpatrick), "n/a"), "image_size": f"{size[1]}x{size[0]}",
            "view": "oblique" if oblique else "frontal", "reacting_sites": extent, "background": background}


def evaluate(segmenter, count: int, seed: int = SEED, min_reaction_model_px: int = 12, log=print,
             sheet: list[np.ndarray] | None = None, sheet_rows: int = 12, verifier=None,
             with_panel: bool = True, scenario: str = "panel") -> dict:
    """Read ``count`` held-out panels; with ``sheet``, its first rows of the contact sheet are appended.
    With ``verifier`` (``models.prick.verifier.SiteVerifier``) the reading second-guesses the
    small reactions and the empty sites as the app does when the verifier is shipped.
    ``with_panel=False`` reads each photograph as the app does when no panel applies to it
    (``check_without_panel``; Pixel Spacing for frontal views, else the typical site spacing).
    ``scenario="six"``: issue 13's own test photograph instead of the 2 x 6 panel
    (``six_reactions``), read without a panel."""
    panel = eval_panel()
    conf = {"erythema": None, "wheal": None}
    per_image = []
    diam = {"wheal": [], "flare": []}
    found = missed = false_pos = 0
    suspected = {"reacting": 0, "quiet": 0}  # empty sites the verifier flagged, by truth
    dropped = {"reacting": 0, "quiet": 0}  # matched reactions the verifier dropped, by truth
    reread = {"reacting": 0, "quiet": 0}  # suspected sites segmented again and found, by truth
    missed_sizes = []
    decisions = {"allergen": {"tp": 0, "fn": 0, "fp": 0, "tn": 0, "not_readable": 0},
                 "validity": {"agree": 0, "disagree": 0, "unknown": 0}}
    for i in range(count):
        size = SIZES[i % len(SIZES)]
        if scenario == "six":
            s = six_reactions(seed, i, size)
        elif scenario in ("independent", "third"):
            s = independent_arm(seed, i, size, painter=scenario)
        else:
            s = generate_sample(seed, i, size=size, grid=(2, 6), spacing_mm=25.0)
        t0 = time.perf_counter()
        pred = segmenter.predict_panel(s.image)
        reactions = reactions_from_masks(pred.erythema, pred.wheal, pred.model_scale, min_reaction_model_px,
                                         rgb=s.image, flare_edge=segmenter.config.flare_edge)
        pred.erythema, pred.wheal = kept_masks(reactions, s.label.shape)  # what the SEG holds
        spacing = None if s.oblique else (1 / s.px_per_mm, 1 / s.px_per_mm)
        check = verifier.bind(s.image, segmenter) if verifier is not None else None
        if not with_panel:  # as the app reads a photograph no panel applies to
            if check is not None:
                reactions = check_without_panel(reactions, pred.site_marks_xy, s.label.shape, spacing, check,
                                                verifier.config.reading.typical_site_spacing_mm).reactions
            pred.erythema, pred.wheal = kept_masks(reactions, s.label.shape)
            reading = None
        else:
            reading = read_panel(panel, reactions, pred.site_marks_xy, s.label.shape, spacing, site_check=check)
            if reading.dropped_reactions or reading.reread_reactions:  # the SEG holds what the reading kept
                pred.erythema, pred.wheal = kept_masks(reading.reactions, s.label.shape)
        seconds = time.perf_counter() - t0
        truth_ery, truth_wh = s.label >= 1, s.label == 2
        for name, p, t in (("erythema", pred.erythema, truth_ery), ("wheal", pred.wheal, truth_wh)):
            c = confusion(p, t)
            conf[name] = c if conf[name] is None else conf[name] + c
        rec = {"index": i, "size": list(size), "fitzpatrick": s.fitzpatrick, "oblique": s.oblique,
               "calibration": reading.calibration if reading else ("pixel_spacing" if spacing else "none"), "seconds": round(seconds, 2),
               "dice_erythema": dice(confusion(pred.erythema, truth_ery)),
               "dice_wheal": dice(confusion(pred.wheal, truth_wh)),
               **factor_levels(s.fitzpatrick, size, s.oblique,
                               sum(1 for t in s.sites if t.wheal_mm > 0 or t.erythema_mm > 0), s.background)}
        for name, p, t in (("erythema", pred.erythema, truth_ery), ("wheal", pred.wheal, truth_wh)):
            tn, pn = int(t.sum()), int(p.sum())
            rec[f"{name}_area_rel_error"] = (pn - tn) / tn if tn else None
        if reading is None:  # no sites: a reaction is found when one is centred near the truth's site
            tol = 0.3 * 25.0 * s.px_per_mm
            centres = np.array([reaction_centre(r) for r in reactions]).reshape(-1, 2)
            near = [np.linalg.norm(centres - np.array(t.center_xy), axis=1) <= tol if len(centres)
                    else np.zeros(0, bool) for t in s.sites]
            reacting = [t.wheal_mm > 0 or t.erythema_mm > 0 for t in s.sites]
            for t, n, reacts in zip(s.sites, near, reacting):
                if reacts and n.any():
                    found += 1
                elif reacts:
                    missed += 1
                    missed_sizes.append([round(t.wheal_mm, 1), round(t.erythema_mm, 1)])
            claimed = np.zeros(len(centres), bool)
            for n, reacts in zip(near, reacting):
                if reacts:
                    claimed |= n
            false_pos += int((~claimed).sum())
        if reading is not None:
            tally_decisions(decisions, panel, s.sites, reading)
        for truth, got in zip(s.sites, reading.sites if reading else []):
            reacts = truth.wheal_mm > 0 or truth.erythema_mm > 0
            if got.reason.startswith("reaction suspected"):
                suspected["reacting" if reacts else "quiet"] += 1
            elif got.reason.startswith("puncture mark only"):
                dropped["reacting" if reacts else "quiet"] += 1
            elif got.reason.startswith("re-read"):
                reread["reacting" if reacts else "quiet"] += 1
            if reacts and got.reaction is not None:
                found += 1
            elif reacts:
                missed += 1
                missed_sizes.append([round(truth.wheal_mm, 1), round(truth.erythema_mm, 1)])
            elif got.reaction is not None:
                false_pos += 1
            if got.wheal_mm is not None:
                diam["wheal"].append((got.wheal_mm, truth.wheal_mm))
                diam["flare"].append((got.flare_mm, truth.erythema_mm))
        per_image.append(rec)
        if sheet is not None and len(sheet) < sheet_rows:
            sheet.append(sheet_row(s.image, truth_ery, [(f"model D{rec['dice_erythema']:.2f}", pred.erythema)],
                                   f"{i}: type {s.fitzpatrick}", "true reaction"))
        log(f"{i}: {size[1]}x{size[0]} type {s.fitzpatrick}{' oblique' if s.oblique else ''} "
            f"dice ery {rec['dice_erythema']:.3f} wheal {rec['dice_wheal']:.3f} "
            f"area err ery {rec['erythema_area_rel_error']} wheal {rec['wheal_area_rel_error']} ({seconds:.1f} s)")
    out = {"images": count, "seed": seed, "weights": str(getattr(segmenter, "weights_path", "")),
           "pooled_dice": {k: 100 * dice(v) for k, v in conf.items()},
           "mean_dice": {k: 100 * float(np.mean([r[f"dice_{k}"] for r in per_image])) for k in conf},
           "decisions": decisions if scenario == "panel" and with_panel else None,
           "reactions": {"truth": found + missed, "found": found, "missed": missed, "false": false_pos,
                         "missed_sizes_wheal_flare_mm": missed_sizes},
           "verifier": None if verifier is None else {
               "weights": str(verifier.weights_path), "threshold": verifier.threshold,
               "max_wheal_mm": verifier.max_wheal_mm, "dropped_at_sites": dropped,
               "suspected_at_sites": suspected, "reread_at_sites": reread},
           "area_rel_error": {}, "diameter_mm": {}, "bland_altman": {}, "per_image": per_image}
    for k in ("erythema", "wheal"):
        errs = [abs(r[f"{k}_area_rel_error"]) for r in per_image if r[f"{k}_area_rel_error"] is not None]
        out["area_rel_error"][k] = {"median": float(np.median(errs)), "max": float(np.max(errs)),
                                    "within_15_percent": int(sum(e <= 0.15 for e in errs)), "n": len(errs)}
    for k, pairs in diam.items():
        if len(pairs) < 2:  # no panel: no per-site diameters
            continue
        p, t = np.array(pairs, np.float64).T
        out["diameter_mm"][k] = {"mae": float(np.mean(np.abs(p - t))), "n": len(p),
                                 "mae_reacting": float(np.mean(np.abs(p - t)[t > 0])) if (t > 0).any() else 0.0}
        out["bland_altman"][k] = {**bland_altman(p, t), "predicted": p.tolist(), "reference": t.tolist()}
    return out


def tune_thresholds(segmenter, count: int, seed: int = VAL_SEED, log=print,
                    independent: int = 0) -> tuple[float, float]:
    """Reaction and wheal thresholds that make total areas unbiased on validation panels.

    Validation photographs (``VAL_SEED``, not the test seed) are run once; for each
    candidate threshold the median relative error of the total area (at the model's
    resolution, truth letterboxed the same way) is computed, and the threshold with the
    smallest mean absolute relative error is kept. ``independent``: that many validation
    arms by the independent painter (``INDEPENDENT_VAL_SEED``, skin types I-IV) join the
    panels, for weights trained on both painters.
    """
    import torch

    from models.facial.data import letterbox

    from .data import letterbox_pair, to_tensor

    grid = np.round(np.arange(0.2, 0.951, 0.05), 2)
    errs = {0: {t: [] for t in grid}, 1: {t: [] for t in grid}}
    photographs = [(lambda i=i: generate_sample(seed, i, size=SIZES[i % len(SIZES)], grid=(2, 6), spacing_mm=25.0))
                   for i in range(count)]
    # Types I-IV only: the painter's flares on V-VI are nearly invisible by design (as on real
    # dark skin) while its truth holds all of them; a threshold low enough to "find" them
    # would over-read every visible flare.
    fair = [i for i in range(6 * independent) if i % 6 < 4][:independent]
    photographs += [(lambda i=i: independent_arm(INDEPENDENT_VAL_SEED, i, SIZES[i % len(SIZES)])) for i in fair]
    for i, draw in enumerate(photographs):
        s = draw()
        boxed, info = letterbox(s.image, segmenter.input_size)
        _, label = letterbox_pair(s.image, s.label, segmenter.input_size)
        with torch.inference_mode():
            prob = segmenter.model(to_tensor(boxed)[None]).float().sigmoid()[0].numpy()
        for ch, truth in ((0, label >= 1), (1, label == 2)):
            n = np.count_nonzero(truth)
            if n:
                for t in grid:
                    errs[ch][t].append((np.count_nonzero(prob[ch] > t) - n) / n)
        log(f"threshold tuning: photograph {i + 1}/{len(photographs)}")
    best = []
    for ch in (0, 1):
        scores = {t: float(np.mean(np.abs(v))) for t, v in errs[ch].items()}
        t = min(scores, key=scores.get)
        log(f"{('reaction', 'wheal')[ch]}: threshold {t} (mean |area error| {scores[t]:.3f}; at 0.5: {scores[0.5]:.3f})")
        best.append(float(t))
    return best[0], best[1]


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, name in zip(axes, ("wheal", "flare")):
        ba = result["bland_altman"][name]
        p, r = np.array(ba["predicted"]), np.array(ba["reference"])
        ax.scatter((p + r) / 2, p - r, s=12, alpha=0.6)
        for y, style, text in ((ba["mean_difference"], "-", "mean"), (ba["loa_upper"], "--", "+1.96 SD"),
                               (ba["loa_lower"], "--", "-1.96 SD")):
            ax.axhline(y, color="tab:red", linestyle=style, linewidth=1)
            ax.annotate(f"{text}: {y:.2f}", xy=(1, y), xycoords=("axes fraction", "data"), ha="right",
                        va="bottom", fontsize=8, color="tab:red")
        ax.set_xlabel(f"mean of predicted and true {name} mean diameter (mm)")
        ax.set_ylabel("predicted - true (mm)")
        ax.set_title(f"{name}: n = {ba['n']} sites")
    fig.suptitle(f"Bland-Altman per site, {result['images']} held-out synthetic panels ({Path(result['weights']).name})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


SCENARIO_TITLES = {"panel": "2x6 panels", "six": "six-reaction arms",
                   "independent": "six-reaction arms by the independent painter",
                   "third": "six-reaction arms by the third painter"}


def reads_without_panel(args) -> bool:
    return bool(args.no_panel or args.scenario in ("six", "independent", "third"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.prick.evaluate_arms", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True)
    p.add_argument("--count", type=int, default=24)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--out", required=True)
    p.add_argument("--verifier", default=None, metavar="PT",
                   help="read with the site verifier (e.g. models/weights/skin_prick_site_verifier.pt), as the "
                        "app does when it is shipped")
    p.add_argument("--no-panel", action="store_true",
                   help="read as the app does when no panel applies (no grid: reactions and prick marks only)")
    p.add_argument("--scenario", choices=("panel", "six", "independent", "third"), default="panel",
                   help="panel: 2 x 6 panels with quiet sites; six: issue 13's six-reaction photograph "
                        "(read without a panel); independent / third: the same arm drawn by a painter that is "
                        "not ours (models.prick.independent_painter / third_painter)")
    p.add_argument("--flare-edge", choices=("config", "on", "off"), default="config",
                   help="refine flare edges from the photograph's colours as the weights' YAML says (config), "
                        "or force it on/off (the card's before/after)")
    p.add_argument("--tune-independent", type=int, default=0, metavar="N",
                   help="with --tune-thresholds: N validation arms by the independent painter join the panels")
    p.add_argument("--reaction-grow-threshold", default="config", metavar="P|none|config",
                   help="hysteresis of the reaction map (UNetConfig.reaction_grow_threshold): as the "
                        "weights' YAML says (config), off (none) or this probability")
    p.add_argument("--tune-thresholds", type=int, default=0, metavar="N",
                   help="first choose the reaction/wheal thresholds on N validation panels (seed 7031) "
                        "and write them into the weights' YAML")
    args = p.parse_args(argv)
    from .config import save_config
    from .inference import PrickSegmenter

    seg = PrickSegmenter.load(args.weights)
    if args.tune_thresholds:
        reaction_t, wheal_t = tune_thresholds(seg, args.tune_thresholds, log=lambda line: print(line, flush=True),
                                              independent=args.tune_independent)
        seg.config.model.thresholds = (reaction_t, wheal_t, seg.config.model.thresholds[2])
        save_config(seg.config, Path(args.weights).with_suffix(".yaml"))
        seg = PrickSegmenter.load(args.weights)
    if args.reaction_grow_threshold != "config":
        grow = None if args.reaction_grow_threshold == "none" else float(args.reaction_grow_threshold)
        seg.config.model.reaction_grow_threshold = seg.model.reaction_grow_threshold = grow
    if args.flare_edge != "config":
        seg.config.flare_edge.enabled = args.flare_edge == "on"
    sheet: list[np.ndarray] = []
    verifier = None
    if args.verifier:
        from .verifier import SiteVerifier

        verifier = SiteVerifier.load(args.verifier)
    result = evaluate(seg, args.count, args.seed, log=lambda line: print(line, flush=True), sheet=sheet,
                      verifier=verifier, with_panel=not reads_without_panel(args),
                      scenario=args.scenario)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    if result["bland_altman"]:
        plot(result, out / "bland_altman.png")
    report = breakdown(result["per_image"], ["model"], METRICS, FACTORS,
                       f"held-out synthetic {SCENARIO_TITLES[args.scenario]} "
                       f"(seed {args.seed}, {Path(args.weights).name}"
                       f"{', read without a panel' if reads_without_panel(args) else ''}"
                       f"{', flare edges from colour' if seg.config.flare_edge.enabled else ''})")
    report["per_image"] = result["per_image"]
    write_report(report, out)
    write_contact_sheets(sheet, out)
    summary = {k: result[k] for k in ("pooled_dice", "mean_dice", "reactions", "decisions", "verifier", "area_rel_error",
                                      "diameter_mm")}
    summary["reading"] = "no panel" if reads_without_panel(args) else "panel"
    summary["scenario"] = args.scenario
    summary["flare_edge"] = seg.config.flare_edge.enabled
    for k in result["bland_altman"]:
        summary[f"bland_altman_{k}"] = {m: round(v, 3) for m, v in result["bland_altman"][k].items()
                                        if m in ("mean_difference", "loa_lower", "loa_upper", "n")}
    print(json.dumps(summary, indent=1))
    print((out / "suite.md").read_text(encoding="utf-8"))
    print(f"wrote {out}/metrics.json, bland_altman.png, suite.json, suite.md, contact_sheet_1.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
