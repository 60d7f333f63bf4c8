"""Second stage of the skin prick reading: a small CNN that looks at each panel site at full
resolution and says "reaction" or "puncture mark only".

The U-Net sees the whole photograph letterboxed to 768 px, where the 0.6 mm dark-red puncture
dot of a negative site is a pixel or two; it blooms it into a ~2.7 mm "wheal" at most quiet
sites, and small true reactions read 2-3 mm too, so size alone cannot separate them. The
verifier gets a fixed physical window around the site (``crop_mm`` x ``crop_mm``, resampled
from the photograph itself to ``crop_px``), so it sees the same millimetres at 512 px and at
12 MP. The panel reading (``models.prick.panel.read_panel``) uses it once the grid is fitted:
a small matched reaction the verifier scores as puncture only is dropped (the site reads
negative), and a site with nothing matched that it scores as reacting is reported as
"reaction suspected, not measurable" instead of negative.

    python -m models.prick.verifier --config models/configs/skin_prick_site_verifier.yaml \
        --out runs/site_verifier [--resume] [--max-minutes 15]

Data: ``models.prick.synthetic.generate_sample`` (training seed 1313, validation 1314; never
the evaluation seeds 9013 / 7031 / 7032 or the bar test's 4242), a crop around every site
centre jittered by ``jitter_mm`` (the grid fit is not exact), label 1 when the site reacts.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from models.config import load_yaml_config, save_yaml_config

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "skin_prick_site_verifier.pt"


# --------------------------------------------------------------------------- config


@dataclass
class VerifierModelConfig:
    widths: list[int] = field(default_factory=lambda: [16, 32, 48])  # two 3x3 convs per width, 2x2 pool between
    crop_mm: float = 10.0  # the physical window around the site
    crop_px: int = 40  # the window resampled to crop_px x crop_px


@dataclass
class VerifierDataConfig:
    train_seed: int = 1313  # disjoint from the U-Net's 13 and the evaluation seeds 9013 / 7031 / 7032 / 4242
    val_seed: int = 1314
    train_photographs: int = 600
    val_photographs: int = 80
    jitter_mm: float = 1.0  # SD of the crop centre's offset from the true site (clipped at 2.5 SD)
    scale_jitter: float = 0.1  # the px/mm estimate is off by up to +-10 %
    # Photographs (height, width) drawn in turn; "hires" = a 1024 px window of a 12 MP
    # photograph (px/mm 12-25, a 2x2 grid), cheap to generate, same pixels per mm.
    sizes: list[str] = field(default_factory=lambda: ["384x512", "768x1024", "768x1024", "1536x2048", "hires"])
    small_reaction_fraction: float = 0.5  # photographs where some sites get forced tiny reactions
    negative_fraction: tuple[float, float] = (0.35, 0.6)


@dataclass
class VerifierOptimConfig:
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 128
    epochs: int = 12
    iterations_per_epoch: int = 150
    max_minutes: float = 12.0


@dataclass
class VerifierReadingConfig:
    """How the panel reading uses the verifier (chosen on validation crops, seed 1314)."""

    threshold: float = 0.5  # probability of a reaction at or above which an empty site is "reaction suspected"
    # A matched small reaction is dropped only below this (confidently puncture only): on the
    # validation panels (seed 7031) the bloomed puncture dots scored at most 0.06.
    drop_below: float = 0.2
    max_wheal_mm: float = 4.0  # only matched reactions with a smaller wheal mean diameter are checked
    # ... and a smaller flare (whole reaction) mean diameter: the bloomed puncture dot's
    # "flare" is its "wheal" (~2.7 mm), and inside a flare wider than the 10 mm window the
    # verifier sees only even redness (its input is relative to the window's mean colour).
    max_flare_mm: float = 5.0
    # Also check matched reactions without any wheal (flare only)? Off: the U-Net's bloomed
    # puncture dot is always a "wheal" (validation seed 7031: 2 small true flare-only
    # reactions dropped with it on, none with it off).
    check_flare_only: bool = False
    # A site scored as reacting with nothing segmented is segmented again by the U-Net in a
    # window of reread_window_mm around it (``PrickSegmenter.reread_site``): the reaction
    # centred within reread_max_offset_mm of the site is measured. 0 turns it off. Validation
    # panels (seed 7031): windows of 50 / 80 / 120 mm recovered all 4 suspected reacting
    # sites; 80 mm came closest to their true sizes.
    reread_window_mm: float = 80.0
    reread_max_offset_mm: float = 5.0
    # Without a panel (and without Pixel Spacing) the scale is the median distance between
    # neighbouring sites taken as this spacing: panels are pricked 2-3 cm apart.
    typical_site_spacing_mm: float = 25.0


@dataclass
class VerifierConfig:
    name: str = "skin_prick_site_verifier"
    version: str = "0.1.0"
    description: str = ""
    seed: int = 0
    num_threads: int = 1
    model: VerifierModelConfig = field(default_factory=VerifierModelConfig)
    data: VerifierDataConfig = field(default_factory=VerifierDataConfig)
    optim: VerifierOptimConfig = field(default_factory=VerifierOptimConfig)
    reading: VerifierReadingConfig = field(default_factory=VerifierReadingConfig)


def load_config(path: str | Path) -> VerifierConfig:
    return load_yaml_config(VerifierConfig, path)


# --------------------------------------------------------------------------- crops and model


def site_crop(rgb: np.ndarray, xy, px_per_mm: float, crop_mm: float = 10.0, crop_px: int = 40) -> np.ndarray:
    """uint8 (crop_px, crop_px, 3): the ``crop_mm`` square centred on ``xy`` (photo pixels),
    area-averaged when the photograph has more pixels per mm than the crop (no aliasing of
    the puncture dot at 12 MP), border replicated outside the photograph."""
    side = max(4, int(round(crop_mm * px_per_mm)))
    patch = cv2.getRectSubPix(np.ascontiguousarray(rgb), (side, side), (float(xy[0]), float(xy[1])))
    interp = cv2.INTER_AREA if side > crop_px else cv2.INTER_LINEAR
    return cv2.resize(patch, (crop_px, crop_px), interpolation=interp)


def crops_to_tensor(crops: np.ndarray) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float: colour relative to the crop's own mean skin
    (the reaction's redness and the wheal's pallor, whatever the skin type)."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).float().div_(255.0).permute(0, 3, 1, 2)
    return (x - x.mean(dim=(2, 3), keepdim=True)) * 4.0


class SiteVerifierNet(nn.Module):
    def __init__(self, widths=(16, 32, 48)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for i, w in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            for _ in range(2):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))[:, 0]


# --------------------------------------------------------------------------- inference


class SiteVerifier:
    """Loaded verifier; ``scores(rgb, xys, px_per_mm)`` -> probability that each site reacts."""

    def __init__(self, model: SiteVerifierNet, config: VerifierConfig, weights_path: Path) -> None:
        self.model = model.eval()
        self.config = config
        self.weights_path = Path(weights_path)
        self.threshold = float(config.reading.threshold)
        self.max_wheal_mm = float(config.reading.max_wheal_mm)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "SiteVerifier":
        weights = Path(path) if path is not None else DEFAULT_WEIGHTS
        config = load_config(weights.with_suffix(".yaml"))
        model = SiteVerifierNet(config.model.widths)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        return cls(model, config, weights)

    @classmethod
    def load_default(cls) -> "SiteVerifier | None":
        """The shipped verifier, or None when its weights are not there (the reading then works without)."""
        if not DEFAULT_WEIGHTS.exists() or not DEFAULT_WEIGHTS.with_suffix(".yaml").exists():
            return None
        return cls.load(DEFAULT_WEIGHTS)

    def scores(self, rgb: np.ndarray, xys, px_per_mm: float) -> np.ndarray:
        xys = np.asarray(xys, np.float64).reshape(-1, 2)
        if not len(xys):
            return np.zeros(0)
        m = self.config.model
        crops = np.stack([site_crop(rgb, xy, px_per_mm, m.crop_mm, m.crop_px) for xy in xys])
        with torch.inference_mode():
            return self.model(crops_to_tensor(crops)).sigmoid().numpy().astype(np.float64)

    def bind(self, rgb: np.ndarray, segmenter=None) -> "SiteCheck":
        """The verifier for one photograph; with ``segmenter`` (``PrickSegmenter``) the
        reading can re-read a suspected site (``SiteCheck.reread``)."""
        return SiteCheck(self, rgb, segmenter)


@dataclass
class SiteCheck:
    """The verifier bound to one photograph: what ``read_panel`` takes (it has no pixels)."""

    verifier: SiteVerifier
    rgb: np.ndarray
    segmenter: object = None  # models.prick.inference.PrickSegmenter, for ``reread``

    @property
    def threshold(self) -> float:
        return self.verifier.threshold

    @property
    def max_wheal_mm(self) -> float:
        return self.verifier.max_wheal_mm

    @property
    def drop_below(self) -> float:
        return float(self.verifier.config.reading.drop_below)

    @property
    def max_flare_mm(self) -> float:
        return float(self.verifier.config.reading.max_flare_mm)

    @property
    def check_flare_only(self) -> bool:
        return bool(self.verifier.config.reading.check_flare_only)

    def __call__(self, xys, px_per_mm: float) -> np.ndarray:
        return self.verifier.scores(self.rgb, xys, px_per_mm)

    def reread(self, xy: tuple[float, float], px_per_mm: float):
        """The reaction at a suspected site, segmented again around it; None without a
        segmenter, with re-reading off, or when nothing is there either."""
        reading = self.verifier.config.reading
        if self.segmenter is None or reading.reread_window_mm <= 0:
            return None
        return self.segmenter.reread_site(self.rgb, xy, px_per_mm, reading.reread_window_mm,
                                          reading.reread_max_offset_mm)


# --------------------------------------------------------------------------- data


def _draw_sample(seed: int, index: int, data: VerifierDataConfig):
    from .synthetic import generate_sample

    rng = np.random.default_rng([seed, index, 77])
    kind = data.sizes[index % len(data.sizes)]
    neg = float(rng.uniform(*data.negative_fraction))
    forced = None
    small = rng.random() < data.small_reaction_fraction
    if kind == "hires":
        grid, spacing = (2, 2), float(rng.uniform(20, 28))
        kw = dict(size=(1024, 1024), px_per_mm=float(rng.uniform(12, 25)))
    else:
        h, w = (int(v) for v in kind.split("x"))
        grid, spacing = (2, 6), 25.0
        kw = dict(size=(h, w))
    n = grid[0] * grid[1]
    if small:  # tiny reactions (the hard positives): wheal 0-3.5 mm, flare up to 10 mm or none
        forced = {}
        for k in rng.choice(np.arange(2, n), size=max(1, n // 4), replace=False):
            wheal = float(rng.uniform(0.8, 3.5)) if rng.random() < 0.85 else 0.0
            flare = float(rng.uniform(max(wheal, 2.0), 10.0)) if rng.random() < 0.8 else 0.0
            forced[int(k)] = (wheal, flare)
    return generate_sample(seed, index, grid=grid, spacing_mm=spacing, negative_fraction=neg, reactions=forced, **kw)


def make_crops(seed: int, count: int, data: VerifierDataConfig, model: VerifierModelConfig, jitter: bool = True,
               log=print) -> tuple[np.ndarray, np.ndarray]:
    """Crops (N, S, S, 3) uint8 and labels (N,) of every site of ``count`` photographs."""
    rng = np.random.default_rng([seed, 99])
    crops, labels = [], []
    t0 = time.time()
    for i in range(count):
        s = _draw_sample(seed, i, data)
        h, w = s.image.shape[:2]
        for site in s.sites:
            x, y = site.center_xy
            if not (0 <= x < w and 0 <= y < h):
                continue
            off = np.clip(rng.normal(0, data.jitter_mm, 2), -2.5 * data.jitter_mm, 2.5 * data.jitter_mm) if jitter \
                else np.zeros(2)
            ppm = s.px_per_mm * (1 + rng.uniform(-data.scale_jitter, data.scale_jitter) if jitter else 1)
            crops.append(site_crop(s.image, (x + off[0] * s.px_per_mm, y + off[1] * s.px_per_mm), ppm,
                                   model.crop_mm, model.crop_px))
            labels.append(int(site.wheal_mm > 0 or site.erythema_mm > 0))
        if (i + 1) % 50 == 0:
            log(f"seed {seed}: {i + 1}/{count} photographs, {len(crops)} crops ({time.time() - t0:.0f} s)")
    return np.stack(crops), np.array(labels, np.int64)


# --------------------------------------------------------------------------- training


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Flips, 90-degree turns, brightness/contrast: the site looks the same every way round."""
    if torch.rand(1, generator=g) < 0.5:
        x = x.flip(3)
    if torch.rand(1, generator=g) < 0.5:
        x = x.flip(2)
    k = int(torch.randint(0, 4, (1,), generator=g))
    x = torch.rot90(x, k, (2, 3))
    gain = 1 + 0.2 * (torch.rand(x.shape[0], 1, 1, 1, generator=g) - 0.5)
    return x * gain


def evaluate_crops(model: SiteVerifierNet, crops: np.ndarray, labels: np.ndarray) -> dict:
    model.eval()
    with torch.inference_mode():
        p = torch.cat([model(crops_to_tensor(crops[i:i + 512])).sigmoid() for i in range(0, len(crops), 512)]).numpy()
    pos, neg = p[labels == 1], p[labels == 0]
    out = {"n_reacting": int(len(pos)), "n_quiet": int(len(neg))}
    for t in (0.3, 0.5, 0.7):
        out[f"recall_at_{t}"] = float((pos >= t).mean())
        out[f"quiet_correct_at_{t}"] = float((neg < t).mean())
    out["accuracy_at_0.5"] = float(((p >= 0.5) == (labels == 1)).mean())
    return out, p


def train(cfg: VerifierConfig, out: Path, resume: bool = False, log=print) -> dict:
    from models.engine import append_log, load_checkpoint, run_epochs, save_checkpoint, save_weights_fp16

    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "crops.npz"
    if cache.exists():
        z = np.load(cache)
        xtr, ytr, xva, yva = z["xtr"], z["ytr"], z["xva"], z["yva"]
    else:
        xtr, ytr = make_crops(cfg.data.train_seed, cfg.data.train_photographs, cfg.data, cfg.model, log=log)
        xva, yva = make_crops(cfg.data.val_seed, cfg.data.val_photographs, cfg.data, cfg.model, log=log)
        np.savez(cache, xtr=xtr, ytr=ytr, xva=xva, yva=yva)
    log(f"train crops {len(ytr)} ({ytr.mean():.0%} reacting), validation {len(yva)} ({yva.mean():.0%} reacting)")
    model = SiteVerifierNet(cfg.model.widths)
    log(f"parameters: {sum(p.numel() for p in model.parameters())}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    o = cfg.optim
    total = o.epochs * o.iterations_per_epoch
    state = {"best": -1.0, "best_epoch": -1}
    start_epoch = 0
    ckpt = out / "checkpoint.pt"
    if resume and ckpt.exists():
        start_epoch = load_checkpoint(ckpt, model, opt, state) // o.iterations_per_epoch
    xt = torch.from_numpy(xtr)
    yt = torch.from_numpy(ytr).float()
    pos_weight = torch.tensor(float((ytr == 0).sum()) / max(1, (ytr == 1).sum()))
    g = torch.Generator().manual_seed(cfg.seed)
    t0 = time.time()

    def lr_at(it: int) -> float:
        return 0.5 * o.lr * (1 + np.cos(np.pi * min(1.0, it / total)))

    def begin(epoch: int) -> None:
        model.train()

    def step(it: int, lr: float) -> torch.Tensor:
        idx = torch.randint(0, len(yt), (o.batch_size,), generator=g)
        x = _augment(crops_to_tensor(xt[idx].numpy()), g)
        return nn.functional.binary_cross_entropy_with_logits(model(x), yt[idx], pos_weight=pos_weight)

    def on_epoch(epoch: int, losses: list[float]) -> bool:
        metrics, _ = evaluate_crops(model, xva, yva)
        score = metrics["accuracy_at_0.5"]
        if score > state["best"]:
            state.update(best=score, best_epoch=epoch)
            save_weights_fp16(model, out / f"{cfg.name}.pt")
        save_checkpoint(ckpt, model, opt, (epoch + 1) * o.iterations_per_epoch, state)
        append_log(out / "log.jsonl", {"epoch": epoch, "loss": float(np.mean(losses)), **metrics,
                                       "minutes": round((time.time() - t0) / 60, 2)})
        return o.max_minutes > 0 and (time.time() - t0) / 60 > o.max_minutes

    run_epochs(step, opt, lr_at, o.epochs, o.iterations_per_epoch, on_epoch, start_epoch=start_epoch,
               begin_epoch=begin)
    save_yaml_config(cfg, out / f"{cfg.name}.yaml")
    return state


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.prick.verifier", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs"
                                           / "skin_prick_site_verifier.yaml"))
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--max-minutes", type=float, default=None)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    if args.max_minutes is not None:
        cfg.optim.max_minutes = args.max_minutes
    state = train(cfg, Path(args.out), args.resume, log=lambda s: print(s, flush=True))
    print(json.dumps(state))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
