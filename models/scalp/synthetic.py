"""Synthetic microscope-style scalp close-ups (640x480) graded on the six indicators.

Each image is drawn from its grades (0 = none/good .. 3 = severe), so a model can learn
them: skin base of varied tone with low-frequency mottling; diffuse redness between the
follicles (interfollicular erythema); follicle openings on a jittered grid, red halos and
yellow-white pustules on a share of them (follicular erythema/pustules); hair shafts whose
count and thickness fall with the hair-loss grade; fine grey-white scale (micro-keratin);
white flakes whose size and number grow with the dandruff grade; a yellowish specular
sebum sheen; the microscope's vignette, blur and sensor noise.

Grades are drawn independently per indicator with ``GRADE_FREQUENCIES``. Only follicular
erythema/pustules has a published count (grade 0 in 16,963 of 17,785 images, SEEDS.md D);
the split of its 822 other images and the other five rows are plausible, documented
assumptions (the paper reports a strongly imbalanced set, mostly grades 0-1).

Deterministic: sample ``i`` of seed ``s`` always uses ``np.random.default_rng([s, i])``.

CLI: ``python -m models.scalp.synthetic --out DIR --n 200 [--seed 0]`` writes
``DIR/images/*.png`` and ``DIR/labels.csv`` in the CSV layout training reads.
"""
from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import INDICATORS, NUM_GRADES

HEIGHT, WIDTH = 480, 640

GRADE_FREQUENCIES: dict[str, tuple[float, float, float, float]] = {
    "micro_keratin": (0.30, 0.42, 0.21, 0.07),
    "excess_sebum": (0.35, 0.38, 0.20, 0.07),
    "interfollicular_erythema": (0.45, 0.33, 0.17, 0.05),
    # 16,963 / 17,785 = 0.9538 grade 0 (SEEDS.md D); 822 others split 0.030 / 0.012 / 0.0042
    "follicular_erythema_pustules": (0.9538, 0.0300, 0.0120, 0.0042),
    "dandruff": (0.55, 0.28, 0.13, 0.04),
    "hair_loss": (0.50, 0.30, 0.15, 0.05),
}


@dataclass(frozen=True)
class ScalpSample:
    image: np.ndarray  # uint8 (480, 640, 3) RGB
    grades: np.ndarray  # int64 (6,) in INDICATORS order


def sample_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index)])


def draw_grades(rng: np.random.Generator, frequencies: dict[str, tuple[float, ...]] | None = None) -> np.ndarray:
    freq = frequencies or GRADE_FREQUENCIES
    out = np.empty(len(INDICATORS), np.int64)
    for l, name in enumerate(INDICATORS):
        p = np.asarray(freq[name], np.float64)
        out[l] = rng.choice(NUM_GRADES, p=p / p.sum())
    return out


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1] (a coarse random grid upsampled bicubically)."""
    small = rng.random((cells, max(2, int(cells * w / h)))).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    big -= big.min()
    return big / max(1e-6, big.max())


def render(grades: np.ndarray, rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    mk, sebum, ife, fep, dandruff, hair_loss = (int(g) for g in grades)
    h, w = height, width
    # --- skin base of varied tone, mottled
    tone = rng.uniform(0.0, 1.0)
    light, dark = np.array([236, 204, 184], np.float32), np.array([150, 104, 80], np.float32)
    base = light * (1 - tone) + dark * tone
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    img *= (0.93 + 0.14 * _smooth_noise(rng, h, w, 6))[..., None]
    # --- erythema between follicles: diffuse redness in blotches
    if ife:
        field = 0.45 + 0.55 * _smooth_noise(rng, h, w, 5)
        alpha = (0.0, 0.16, 0.30, 0.46)[ife] * field
        red = np.array([205, 72, 72], np.float32)
        img = img * (1 - alpha[..., None]) + red * alpha[..., None]
    # --- follicles on a jittered grid
    step = rng.uniform(52, 66)
    ys, xs = np.meshgrid(np.arange(step / 2, h, step), np.arange(step / 2, w, step), indexing="ij")
    follicles = np.stack([xs.ravel(), ys.ravel()], 1) + rng.normal(0, step * 0.18, (xs.size, 2))
    n_f = len(follicles)
    red_share = (0.0, 0.12, 0.30, 0.55)[fep]
    pustule_share = (0.0, 0.0, 0.10, 0.30)[fep]
    halo = np.zeros((h, w), np.float32)
    inflamed = rng.random(n_f) < red_share
    if fep and not inflamed.any():
        inflamed[rng.integers(n_f)] = True
    for (x, y), on in zip(follicles, inflamed):
        if on:
            cv2.circle(halo, (int(x), int(y)), int(rng.uniform(9, 15)), 1.0, -1, cv2.LINE_AA)
    if inflamed.any():
        halo = cv2.GaussianBlur(halo, (0, 0), 4) * 0.85
        img = img * (1 - halo[..., None]) + np.array([190, 40, 50], np.float32) * halo[..., None]
    canvas = np.clip(img, 0, 255).astype(np.uint8)
    for (x, y), on in zip(follicles, inflamed):
        r = int(rng.uniform(3, 5))
        cv2.circle(canvas, (int(x), int(y)), r, tuple(int(v) for v in base * 0.55), -1, cv2.LINE_AA)
        if on and rng.random() < pustule_share / max(red_share, 1e-6):
            cv2.circle(canvas, (int(x + rng.normal(0, 2)), int(y + rng.normal(0, 2))), int(rng.uniform(5, 8)),
                       (246, 236, 180), -1, cv2.LINE_AA)
    # --- hair shafts: fewer and thinner with hair loss
    keep = (0.95, 0.70, 0.45, 0.22)[hair_loss]
    thickness = ((4, 6), (3, 4), (2, 3), (1, 2))[hair_loss]
    hair_color = np.array([40, 28, 22]) * rng.uniform(0.5, 1.6)
    angle0 = rng.uniform(0, 2 * np.pi)
    for x, y in follicles:
        for _ in range(int(rng.integers(1, 3))):
            if rng.random() > keep:
                continue
            length = rng.uniform(120, 420)
            a = angle0 + rng.normal(0, 0.35)
            bend = rng.normal(0, 0.004)
            t = np.linspace(0, length, 12)
            ang = a + bend * t
            pts = np.stack([x + np.cumsum(np.cos(ang)) * (length / 12), y + np.cumsum(np.sin(ang)) * (length / 12)], 1)
            pts = np.vstack([[x, y], pts]).astype(np.int32)
            col = tuple(int(np.clip(c * rng.uniform(0.8, 1.25), 0, 255)) for c in hair_color)
            cv2.polylines(canvas, [pts], False, col, int(rng.integers(thickness[0], thickness[1] + 1)), cv2.LINE_AA)
    img = canvas.astype(np.float32)
    # --- micro-keratin: fine grey-white scale, many small translucent patches
    if mk:
        scale = np.zeros((h, w), np.float32)
        for _ in range((0, 140, 420, 900)[mk]):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            axes = (int(rng.uniform(2, 6)), int(rng.uniform(1, 3)))
            cv2.ellipse(scale, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, rng.uniform(0.5, 1.0), -1, cv2.LINE_AA)
        scale = cv2.GaussianBlur(scale, (0, 0), 0.8) * (0.0, 0.45, 0.55, 0.65)[mk]
        img = img * (1 - scale[..., None]) + np.array([232, 230, 222], np.float32) * scale[..., None]
    # --- dandruff: white flakes, bigger and more with the grade
    if dandruff:
        count = (0, int(rng.integers(4, 9)), int(rng.integers(12, 20)), int(rng.integers(24, 36)))[dandruff]
        size = ((0, 0), (5, 10), (9, 18), (14, 30))[dandruff]
        flakes = np.zeros((h, w), np.float32)
        for _ in range(count):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(*size)
            n = int(rng.integers(5, 9))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = r * rng.uniform(0.55, 1.0, n)
            poly = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
            cv2.fillPoly(flakes, [poly], rng.uniform(0.8, 0.97), cv2.LINE_AA)
        flakes = cv2.GaussianBlur(flakes, (0, 0), 0.7)
        img = img * (1 - flakes[..., None]) + np.array([250, 250, 246], np.float32) * flakes[..., None]
    # --- excess sebum: yellowish gloss + specular highlights
    if sebum:
        gloss = _smooth_noise(rng, h, w, 4) * (0.0, 0.10, 0.20, 0.32)[sebum]
        img = img * (1 - gloss[..., None]) + np.array([226, 200, 110], np.float32) * gloss[..., None]
        spec = np.zeros((h, w), np.float32)
        for _ in range((0, 10, 28, 60)[sebum]):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            cv2.ellipse(spec, (int(cx), int(cy)), (int(rng.uniform(4, 14)), int(rng.uniform(2, 6))),
                        rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
        spec = cv2.GaussianBlur(spec, (0, 0), 3) * (0.0, 0.5, 0.7, 0.85)[sebum]
        img = img + (np.array([255, 252, 225], np.float32) - img) * spec[..., None]
    # --- microscope optics: vignette, slight blur, sensor noise
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rr = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    img *= (1.0 - rng.uniform(0.15, 0.35) * np.clip(rr - 0.3, 0, None))[..., None]
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.0))
    img += rng.normal(0, 2.5, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def generate_sample(seed: int, index: int, frequencies: dict[str, tuple[float, ...]] | None = None) -> ScalpSample:
    rng = sample_rng(seed, index)
    grades = draw_grades(rng, frequencies)
    return ScalpSample(render(grades, rng), grades)


def write_dataset(out: Path, n: int, seed: int = 0, start: int = 0) -> Path:
    """Write ``out/images/scalp_XXXXXX.png`` + ``out/labels.csv``; returns the CSV path."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    csv_path = out / "labels.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", *INDICATORS])
        for i in range(start, start + n):
            s = generate_sample(seed, i)
            name = f"images/scalp_{i:06d}.png"
            cv2.imwrite(str(out / name), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
            writer.writerow([name, *(int(g) for g in s.grades)])
    return csv_path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write synthetic scalp close-ups + labels.csv")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first sample index")
    args = ap.parse_args(argv)
    print(write_dataset(Path(args.out), args.n, args.seed, args.start))


if __name__ == "__main__":
    main()
