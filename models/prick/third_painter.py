"""Third, independent painter of skin-prick-test forearm photographs with exact truth.

Written without reading the other painters in this package: its only job is to check how a
prick-test segmenter generalises to photographs drawn by someone else.

Truth is a uint8 label map: 0 background / normal skin, 1 erythema (flare outside the wheal),
2 wheal. Both are defined by the very fields that drive the colours:

* flare: each site's erythema intensity is I = E * G * M * A. E is a logistic-edged irregular
  star-shaped region (1 inside, 0.5 on its outline) merged by max with a few logistic satellite
  spots near its border, G a mild centre-to-edge gradient (1.15 -> 0.85), M = 1 + a * noise * E^2
  a blotch field with mean 1 whose swing fades toward the edge, A the arm's alpha. Redness is
  applied proportionally to I (max over sites), so the truth flare is exactly I >= 0.5: where the
  rendered erythema is at least half its typical inner intensity (1).
* wheal: a height field H with a logistic wall around an irregular outline (sometimes with
  pseudopods) drives pallor, slope shading, drop shadow and highlight; the truth wheal is H >= 0.5,
  the raised area. The drop shadow outside it is an elevation cue, not wheal.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

SKIN = {1: (0.95, 0.83, 0.77), 2: (0.90, 0.74, 0.63), 3: (0.80, 0.61, 0.47),
        4: (0.66, 0.47, 0.33), 5: (0.47, 0.31, 0.21), 6: (0.29, 0.19, 0.14)}
RED = {1: 0.9, 2: 0.82, 3: 0.7, 4: 0.56, 5: 0.45, 6: 0.36}    # erythema is faint on dark skin
PALE = {1: 0.4, 2: 0.36, 3: 0.3, 4: 0.24, 5: 0.17, 6: 0.12}
SURFACES = ("table", "paper towel", "blue drape", "green drape", "white sheet", "wooden desk")
WORDS = ("H", "NC", "Dp", "Df", "Cat", "Dog", "Gr", "Bi", "Alt", "Ol", "Amb", "Asp", "Lx", "Hor")
INKS = ((30, 45, 140), (20, 20, 26), (85, 30, 115), (25, 75, 50))
FONTS = (cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_SIMPLEX | cv2.FONT_ITALIC,
         cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX)
PHI = np.linspace(0, 2 * np.pi, 720, endpoint=False)
Box = tuple[int, int, int, int]     # y0, y1, x0, x1


@dataclass
class ThirdPainterArm:
    image: np.ndarray              # uint8 RGB photograph
    label: np.ndarray              # uint8 truth: 0 skin/background, 1 erythema, 2 wheal
    px_per_mm: float
    fitzpatrick: int
    sites: list[tuple[float, float, float, float]]   # x, y px; wheal, flare(+wheal) eq. diam mm
    background: str


def _sig(x: np.ndarray) -> np.ndarray:
    """Logistic without overflow; its value 0.5 at 0 is what the truth thresholds rely on."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth noise (std ~0.6) with features ~cell px: a random lattice upsampled bicubically."""
    cell = max(float(cell), 1.0)
    g = rng.standard_normal((int(shape[0] / cell) + 3, int(shape[1] / cell) + 3)).astype(np.float32)
    return cv2.resize(g, None, fx=cell, fy=cell, interpolation=cv2.INTER_CUBIC)[:shape[0], :shape[1]]


def _outline(rng: np.random.Generator, harmonics: int, amp: float, pods: int) -> np.ndarray:
    """Irregular star-shaped radius r(phi) on PHI, scaled so the area equals the unit circle's."""
    f = np.ones_like(PHI)
    for k in range(2, 2 + harmonics):
        f += amp * rng.uniform(0.3, 1.0) / k ** 0.6 * np.cos(k * PHI + rng.uniform(0, 2 * np.pi))
    for _ in range(pods):   # pseudopods: narrow radial lobes
        d = np.angle(np.exp(1j * (PHI - rng.uniform(0, 2 * np.pi))))
        f += rng.uniform(0.35, 0.75) * np.exp(-(d / rng.uniform(0.1, 0.2)) ** 2)
    f = np.clip(f, 0.35, 1.6)
    return f / np.sqrt(np.mean(f ** 2))     # area = pi R^2 mean(f^2)


def _radial(f: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.hypot(dx, dy), np.interp(np.arctan2(dy, dx), PHI, f, period=2 * np.pi)


def _clip_box(x: float, y: float, r: float, size: tuple[int, int]) -> Box:
    return max(int(y - r), 0), min(int(y + r) + 1, size[0]), max(int(x - r), 0), min(int(x + r) + 1, size[1])


def _paste(dst: np.ndarray, dbox: Box, src: np.ndarray, sbox: Box, op: Callable = np.maximum) -> None:
    """dst (covering dbox) = op(dst, src (covering sbox)) over the overlap of the two boxes."""
    y0, y1, x0, x1 = max(dbox[0], sbox[0]), min(dbox[1], sbox[1]), max(dbox[2], sbox[2]), min(dbox[3], sbox[3])
    if y1 > y0 and x1 > x0:
        d = dst[y0 - dbox[0]:y1 - dbox[0], x0 - dbox[2]:x1 - dbox[2]]
        op(d, src[y0 - sbox[0]:y1 - sbox[0], x0 - sbox[2]:x1 - sbox[2]], out=d)


class _Arm:
    """Forearm geometry: axis frame (u along the arm, v across, in mm) and gently wobbling edges."""

    def __init__(self, rng: np.random.Generator, cx: float, cy: float, theta: float, ppm: float, width: float,
                 span: float) -> None:
        self.cx, self.cy, self.c, self.s, self.ppm = cx, cy, np.cos(theta), np.sin(theta), ppm
        self.ug = ug = np.linspace(-span, span, 512)
        wob = lambda: sum(rng.uniform(0.3, 1.6) * np.sin(ug / rng.uniform(12, 60) + rng.uniform(0, 7)) for i in "abc")
        half = np.maximum(width - rng.uniform(0.05, 0.12) * ug, 48) / 2     # narrowing toward the wrist
        self.top, self.bot = half + wob(), -half + wob()

    def uv(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = (x - self.cx) / self.ppm, (y - self.cy) / self.ppm
        return dx * self.c + dy * self.s, -dx * self.s + dy * self.c

    def xy(self, u: float, v: float) -> tuple[float, float]:
        return self.cx + self.ppm * (u * self.c - v * self.s), self.cy + self.ppm * (u * self.s + v * self.c)

    def frame(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Arm alpha and across-arm position t (-1 .. 1 between the edges)."""
        top, bot = np.interp(u, self.ug, self.top), np.interp(u, self.ug, self.bot)
        soft = max(0.35, 0.7 / self.ppm)
        return _sig((top - v) / soft) * _sig((v - bot) / soft), (2 * v - top - bot) / (top - bot)


def _surface(rng: np.random.Generator, kind: str, shape: tuple[int, int], ppm: float) -> np.ndarray:
    """The surface beside the arm (grain, embossing, folds, weave), at ppm px per mm."""
    n = lambda mm: _noise(rng, shape, mm * ppm)
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32) / ppm
    ang = rng.uniform(0, np.pi)
    across, along = -xs * np.sin(ang) + ys * np.cos(ang), xs * np.cos(ang) + ys * np.sin(ang)
    if kind == "wooden desk":
        base = [(0.58, 0.4, 0.24), (0.7, 0.52, 0.33), (0.42, 0.27, 0.16)][rng.integers(3)]
        lum = 1 + 0.09 * np.sin(2 * np.pi * across / rng.uniform(2, 6) + 3 * n(50)) + 0.05 * n(1.0)
    elif kind == "paper towel":
        base, p = (0.93, 0.93, 0.9), rng.uniform(4, 7)
        lum = 1 + 0.03 * np.sin(2 * np.pi * along / p) * np.sin(2 * np.pi * across / p) + 0.03 * n(0.4)
    elif kind in ("blue drape", "green drape", "white sheet"):
        base = {"b": (0.22, 0.43, 0.66), "g": (0.3, 0.55, 0.45), "w": (0.88, 0.88, 0.9)}[kind[0]]
        lum = 1 + 0.11 * np.tanh(2 * n(rng.uniform(15, 50))) + 0.03 * n(0.3)
    else:
        base = [(0.78, 0.76, 0.72), (0.62, 0.63, 0.64), (0.86, 0.8, 0.7)][rng.integers(3)]
        lum = 1 + 0.03 * n(40) + 0.02 * n(0.6)
    base = np.array(base) * rng.uniform(0.85, 1.08) * (1 + rng.normal(0, 0.03, 3))
    return (lum[..., None] * base).astype(np.float32)


def _wheal(rng: np.random.Generator, arm: _Arm, x: float, y: float, wheal_mm: float, l2: np.ndarray,
           size: tuple[int, int]) -> tuple[Box, np.ndarray, np.ndarray, np.ndarray, Callable]:
    """Wheal height H, shading S (slope + drop shadow), highlight P in a small box; and H's formula."""
    rw, sw = wheal_mm / 2 * arm.ppm, max(rng.uniform(0.1, 0.22) * arm.ppm, 0.45)
    fw = _outline(rng, 4, rng.uniform(0.08, 0.2), rng.poisson(1.0 if wheal_mm > 6 else 0.25))
    height = lambda dx, dy: _sig((rw * _radial(fw, dx, dy)[1] - np.hypot(dx, dy)) / sw)
    box = _clip_box(x, y, rw * fw.max() * 1.3 + 8 * sw + 3, size)
    ys, xs = np.mgrid[box[0]:box[1], box[2]:box[3]].astype(np.float32)
    dx, dy = xs - x, ys - y
    H = height(dx, dy)
    sd = rng.uniform(0.1, 0.25) * rw + sw          # drop shadow on the side away from the light
    rho2, fr2 = _radial(fw, dx + sd * l2[0], dy + sd * l2[1])
    drop = np.maximum(_sig((rw * fr2 - rho2) / (2.5 * sw)) - H, 0)
    slope = (cv2.Sobel(H, -1, 1, 0) * l2[0] + cv2.Sobel(H, -1, 0, 1) * l2[1]) / 2 * sw
    S = -rng.uniform(0.12, 0.25) * slope - rng.uniform(0.12, 0.25) * drop
    hx, hy = dx - 0.3 * rw * l2[0], dy - 0.3 * rw * l2[1]
    P = rng.uniform(8, 40) * H * np.exp(-(hx ** 2 + hy ** 2) / (2 * (0.3 * rw) ** 2))
    return box, H, S, P, height


def _flare(rng: np.random.Generator, arm: _Arm, x: float, y: float, wheal_mm: float, ratio: float,
           height: Callable, size: tuple[int, int]) -> tuple[Box, np.ndarray]:
    """Erythema intensity I in a box, grown or shrunk until wheal / (flare u wheal) = ratio. Computed at
    <= 8 px/mm (I is smooth there) and upsampled bilinearly: the upsampled field is painted and thresholded."""
    ppm, rf = arm.ppm, min(40.0, wheal_mm / np.sqrt(ratio)) / 2 * arm.ppm
    ff, el = _outline(rng, 6, rng.uniform(0.12, 0.3), 0), rng.uniform(1.0, 1.3)   # spreads along the arm
    ox, oy = rng.normal(0, 0.08, 2) * rf
    sf = min(rng.uniform(0.7, 1.8) * ppm, 0.3 * rf)
    sats = [(rng.uniform(0, 2 * np.pi), rng.uniform(0.85, 1.12), min(rng.uniform(0.8, 2.5) * ppm, 0.3 * rf))
            for _ in range(rng.integers(0, 5))]
    box = _clip_box(x, y, el * rf * (1.6 * ff.max() + 0.3) + 3 * sf + abs(ox) + abs(oy) + 2, size)
    bh, bw, g = box[1] - box[0], box[3] - box[2], min(1.0, 8 / ppm)
    nh, nw = max(2, int(np.ceil(bh * g))), max(2, int(np.ceil(bw * g)))
    X, Y = np.meshgrid(box[2] + (np.arange(nw, dtype=np.float32) + 0.5) * bw / nw - 0.5,
                       box[0] + (np.arange(nh, dtype=np.float32) + 0.5) * bh / nh - 0.5)
    A, wheal = arm.frame(*arm.uv(X, Y))[0], height(X - x, Y - y) >= 0.5
    fdx, fdy = X - x - ox, Y - y - oy
    pu, pv = (fdx * arm.c + fdy * arm.s) / el, (-fdx * arm.s + fdy * arm.c) * el
    rho_f, fr_f = _radial(ff, pu, pv)
    blot = (rng.uniform(0.1, 0.25) * _noise(rng, (nh, nw), rng.uniform(2, 5) * ppm * nh / bh)
            + rng.uniform(0.05, 0.12) * _noise(rng, (nh, nw), 0.8 * ppm * nh / bh))
    px, k = bh * bw / (nh * nw), 1.0
    target = min(wheal.sum() * px / ratio, np.pi * (20 * ppm) ** 2)
    for _ in range(6):
        E = _sig((k * rf * fr_f - rho_f) / sf)
        for ang, q, rs in sats:
            r_at = k * rf * q * np.interp(ang, PHI, ff, period=2 * np.pi)
            E = np.maximum(E, _sig((rs - np.hypot(pu - r_at * np.cos(ang), pv - r_at * np.sin(ang))) / (0.5 * sf)))
        I = E * (1 + blot * E * E) * A * (1.15 - 0.3 * np.minimum(rho_f / (k * rf * fr_f), 1))
        if abs((af := float(((I >= 0.5) | wheal).sum()) * px) / target - 1) < 0.02:
            break
        k = float(np.clip(k * np.sqrt(target / af), 0.6, 1.3))
    return box, (cv2.resize(I, (bw, bh), interpolation=cv2.INTER_LINEAR) if g < 1 else I)


def _blend(img: np.ndarray, mask: np.ndarray, col: tuple[float, ...], k: float, blur: float, a8: np.ndarray) -> None:
    """Blend colour col into img by the uint8 mask (blurred, x k, x arm alpha), touching only its pixels."""
    x, y, w, h = cv2.boundingRect(mask)
    y0, x0, pad = max(y - int(3 * blur) - 1, 0), max(x - int(3 * blur) - 1, 0), 2 * int(3 * blur) + 2
    m = cv2.multiply(cv2.GaussianBlur(mask[y0:y + h + pad, x0:x + w + pad], (0, 0), blur),
                     a8[y0:y + h + pad, x0:x + w + pad], scale=1 / 255)
    ys, xs = np.nonzero(m)
    sub, m = img[ys + y0, xs + x0].astype(np.float32), m[ys, xs, None] * np.float32(k / 255)
    img[ys + y0, xs + x0] = (sub + (np.float32(col) - sub) * m + 0.5).astype(np.uint8)


def _base(rng: np.random.Generator, arm: _Arm, fz: int, size: tuple[int, int], view: float,
          uv_s: list[tuple[float, float]], l2: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Surface, skin (mottling, freckles, moles, veins), optional sleeve and lighting, painted at <= 1024 px
    and upsampled (all smooth), then full-resolution pores; returns uint8 image, uint8 arm alpha, surface."""
    (Hh, Ww), f, ppm, elev = size, min(1.0, 1024 / max(size)), arm.ppm, rng.uniform(0.6, 1.35)
    h0, w0 = round(Hh * f), round(Ww * f)
    ys, xs = np.mgrid[0:h0, 0:w0].astype(np.float32)
    u, v = arm.uv((xs + 0.5) / f - 0.5, (ys + 0.5) / f - 0.5)
    (a, t), d = arm.frame(u, v), rng.uniform(3, 12)
    lu, lv = l2[0] * arm.c + l2[1] * arm.s, -l2[0] * arm.s + l2[1] * arm.c
    n = lambda mm: _noise(rng, (h0, w0), mm * ppm * f)
    cast = cv2.GaussianBlur(arm.frame(u + d * lu, v + d * lv)[0], (0, 0), 0.7 * d * ppm * f)   # arm's shadow
    bg = _surface(rng, kind, (h0, w0), ppm * f) * (1 - rng.uniform(0.25, 0.5) * cast)[..., None]
    lum, rd = 1 + 0.04 * n(20), 1 - 0.04 * np.maximum(n(12), 0)       # mottling, patchy redness
    skin = np.float32(SKIN[fz]) * np.float32(rng.uniform(0.92, 1.05) * (1 + rng.normal(0, 0.025, 3)))
    skin = skin * np.dstack([lum, lum * rd, lum * rd])
    spots = np.zeros((h0, w0), np.float32)
    nfr = rng.integers(20, 160) if fz <= 3 and rng.random() < 0.55 else 0
    for i in range(nfr + rng.integers(0, 4)):     # freckles, then a few moles away from the sites
        mole = i >= nfr
        uu, vv = rng.uniform(-view, view) / (1 + mole), rng.uniform(-40, 40) * (0.6 if mole else 1)
        if not mole or min(np.hypot(uu - su, vv - sv) for su, sv in uv_s) > 28:
            p, rad = arm.xy(uu, vv), rng.uniform(1, 2.5) if mole else rng.uniform(0.3, 0.8)
            cv2.circle(spots, (int(p[0] * f), int(p[1] * f)), max(1, int(rad * ppm * f)),
                       1.6 if mole else float(rng.uniform(0.3, 0.8)), -1, cv2.LINE_AA)
    spots = np.minimum(cv2.GaussianBlur(spots, (0, 0), max(0.3 * ppm * f, 0.5)), 1.6)[..., None]
    skin *= 1 - np.minimum(spots, 1) * np.float32((0.35, 0.5, 0.55)) * (0.6 + 0.25 * spots)
    if fz <= 3 and rng.random() < 0.75:       # veins, faint and bluish
        vein = np.zeros((h0, w0), np.float32)
        for _ in range(rng.integers(2, 5)):
            vs = rng.uniform(-22, 22) + np.cumsum(rng.normal(0, 1.5, 40))
            q = np.array([arm.xy(a_, b_) for a_, b_ in zip(np.linspace(-view, view, 40), vs)]) * f
            cv2.polylines(vein, [np.int32(q)], False, 1.0, max(1, int(rng.uniform(1.5, 3) * ppm * f)))
        skin *= 1 - cv2.GaussianBlur(vein, (0, 0), 1.2 * ppm * f)[..., None] * rng.uniform(0.05, 0.12) * (1, 0.55, 0.1)
    if rng.random() < 0.25:                   # a rolled-up sleeve at one end
        sg, kind, us = rng.choice((-1, 1)), kind + "+sleeve", [p[0] for p in uv_s]
        edge = (u - np.mean(us)) * sg - (max(us) - min(us) + rng.uniform(70, 110)) / 2 + 3 * n(8)
        top, bot = np.interp(u, arm.ug, arm.top), np.interp(u, arm.ug, arm.bot)
        ms = _sig(edge / 0.6) * _sig(top + 8 - v) * _sig(v - bot + 8)
        cloth = [(0.1, 0.12, 0.2), (0.08, 0.08, 0.09), (0.45, 0.45, 0.47), (0.25, 0.35, 0.55)][rng.integers(4)]
        bg = bg + (np.float32(cloth) * (1 + 0.25 * np.tanh(2 * n(6)))[..., None] - bg) * ms[..., None]
        a = a * (1 - ms)
    nv = np.sign(t) * np.minimum(np.abs(t), 0.995) ** 1.6       # flattened elliptic cross-section
    nz, ce, se, amb = np.sqrt(1 - nv ** 2), np.cos(elev), np.sin(elev), rng.uniform(0.35, 0.55)
    hl = np.maximum(nv * ce * lv + nz * (se + 1), 0) / np.hypot(ce * lv, se + 1)   # broad highlight along the arm
    skin = (skin * (amb + (1 - amb) * np.maximum(nv * ce * lv + nz * se, 0))[..., None]
            + (rng.uniform(0.03, 0.16) * hl ** rng.uniform(8, 30))[..., None])
    img = bg * (1 - a[..., None]) + skin * a[..., None]
    lx, ly = w0 * (0.5 + rng.normal(0, 0.15)), h0 * (0.5 + rng.normal(0, 0.15))
    img *= (1 - rng.uniform(0.1, 0.35) * ((xs - lx) ** 2 + (ys - ly) ** 2) / ((w0 ** 2 + h0 ** 2) / 4))[..., None]
    img *= rng.uniform(0.9, 1.15) * (1 + rng.normal(0, 0.04, 3)).astype(np.float32)   # exposure, colour cast
    img = cv2.resize(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), (Ww, Hh), interpolation=cv2.INTER_LINEAR)
    cv2.randn(pores := np.empty(size, np.uint8), 128, rng.uniform(6, 14) * float(np.clip(ppm / 12, 0.3, 1)))
    img = cv2.multiply(img, cv2.merge([cv2.GaussianBlur(pores, (0, 0), max(0.07 * ppm, 0.6))] * 3), scale=1 / 128)
    return img, cv2.resize((a * 255 + 0.5).astype(np.uint8), (Ww, Hh), interpolation=cv2.INTER_LINEAR), kind


def _marks(rng: np.random.Generator, img: np.ndarray, a8: np.ndarray, arm: _Arm, fz: int, pts: list, uv_s: list,
           sites: list) -> None:
    """Puncture dots; a handwritten number or allergen and/or a short dash beside each site; fine hair."""
    ppm, (Hh, Ww) = arm.ppm, img.shape[:2]
    ink = np.zeros((Hh, Ww), np.uint8)
    style, side, upright = rng.integers(3), rng.choice((-1, 1)), rng.random() < 0.6   # text / both / dash
    words = [str(i + 1) for i in range(6)] if rng.random() < 0.5 else list(rng.choice(WORDS, 6, replace=False))
    font, thick = FONTS[rng.integers(4)], max(1, int(round(rng.uniform(0.3, 0.6) * ppm)))
    for (x, y), (su, sv), s, word in zip(pts, uv_s, sites, words):
        sd = side if abs(sv) < 5 else int(np.sign(sv))
        room = float(np.interp(su, arm.ug, arm.top if sd > 0 else -arm.bot)) - abs(sv) - 4
        dist = min(max(s[3] / 2 + 3, 9) + 5 * (style >= 1), room)
        if style >= 1:
            d0 = min(max(s[3] / 2 + 1, 5), room - 5)
            p0, p1 = arm.xy(su, sv + sd * d0), arm.xy(su, sv + sd * (d0 + rng.uniform(4, 7)))
            cv2.line(ink, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 255, thick, cv2.LINE_AA)
        if style <= 1:
            (tw, th), _ = cv2.getTextSize(word, font, 1.0, 1)
            sc = rng.uniform(3.5, 6) * ppm / max(th, 1)
            pw = int((tw + th) * sc * 1.6 + 4 * thick)
            patch = np.zeros((pw, pw), np.uint8)
            org = (int((pw - tw * sc) / 2), int((pw + th * sc) / 2))
            cv2.putText(patch, word, org, font, sc, 255, thick, cv2.LINE_AA)
            ang = ((0.0 if upright else -np.degrees(np.arctan2(arm.s, arm.c))) + rng.normal(0, 8) + 90) % 180 - 90
            R = cv2.getRotationMatrix2D((pw / 2, pw / 2), ang, 1.0)
            R[0, 1] += rng.normal(0, 0.15)       # a handwritten slant
            tx, ty = arm.xy(su + rng.normal(0, 1.5), sv + sd * (dist + 0.3 * pw / ppm))
            x0, y0 = int(tx - pw / 2), int(ty - pw / 2)
            _paste(ink, (0, Hh, 0, Ww), cv2.warpAffine(patch, R, (pw, pw)), (y0, y0 + pw, x0, x0 + pw))
        sg, iy, ix = max(0.2 * ppm, 0.7), int(round(y)), int(round(x))      # the puncture
        yy, xx = np.mgrid[iy - int(3 * sg) - 1:iy + int(3 * sg) + 2, ix - int(3 * sg) - 1:ix + int(3 * sg) + 2]
        dot = rng.uniform(0.5, 0.9) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sg ** 2))
        win = img[yy[0, 0]:yy[-1, 0] + 1, xx[0, 0]:xx[0, -1] + 1]
        win[:] = win * (1 - dot[..., None] * np.float32((0.6, 0.8, 0.8)))
    _blend(img, ink, INKS[rng.integers(4)], rng.uniform(0.7, 0.95), max(0.08 * ppm, 0.3), a8)
    if rng.random() < 0.6:                # sparse fine hair, leaning one way along the arm
        hair, span = np.zeros((Hh, Ww), np.uint8), max(Hh, Ww) / ppm
        for _ in range(int(rng.uniform(0.3, 3) * span)):
            hx, hy = arm.xy(rng.uniform(-span, span), rng.uniform(-40, 40))
            if 0 <= hx < Ww and 0 <= hy < Hh and a8[int(hy), int(hx)] > 230:
                ha, L, b = np.arctan2(arm.s, arm.c) + rng.normal(0, 0.5), rng.uniform(3, 10) * ppm, rng.normal(0, 0.3)
                q = [(hx + L * s * np.cos(ha + b * s), hy + L * s * np.sin(ha + b * s)) for s in np.linspace(0, 1, 6)]
                cv2.polylines(hair, [np.int32(q)], False, 255, 1, cv2.LINE_AA)
        _blend(img, hair, tuple(127 * np.array(SKIN[min(fz + 3, 6)])), min(1.0, 0.08 * ppm) * rng.uniform(0.25, 0.6),
               0.3, a8)


def paint_arm(seed: int, index: int, size: tuple[int, int], fitzpatrick: int | None = None) -> ThirdPainterArm:
    """Paint one photograph of shape size = (height, width); deterministic in (seed, index)."""
    rng, (Hh, Ww) = np.random.default_rng([seed, index, 0x7A3]), size
    cv2.setRNGSeed(int(rng.integers(2 ** 31)))
    fz = int(fitzpatrick or rng.integers(1, 7))
    sp, ac, width, two = rng.uniform(20, 35), rng.uniform(20, 26), rng.uniform(60, 78), rng.random() < 0.5
    uv = ([((j - 1) * sp, (i - 0.5) * ac) for i in range(2) for j in range(3)] if two
          else [((j - 2.5) * sp, rng.normal(0, 1.0)) for j in range(6)])    # two rows of three, or a line of six
    extent = (2 if two else 5) * sp
    view = max(rng.uniform(extent + 45, extent + 95), rng.uniform(1.35, 1.8) * width * max(size) / min(size))
    ppm, big = max(size) / view, int(rng.integers(6))
    wheals = [rng.uniform(8, 11.5) if i == big else rng.uniform(2, 4.5) for i in range(6)]
    ratios = [rng.uniform(max(0.045, (w / 40) ** 2 * 1.02), 0.085) for w in wheals]   # flare <= 40 mm
    for attempt in range(40):     # keep every flare inside the frame; the last try is centred
        j = float(attempt < 39)
        theta = (0.0 if Ww >= Hh else np.pi / 2) + j * (rng.normal(0, 0.2) + np.pi * rng.integers(2))
        arm = _Arm(rng, Ww / 2 * (1 + j * rng.normal(0, 0.12)), Hh / 2 * (1 + j * rng.normal(0, 0.12)), theta, ppm,
                   width, 2 * view)
        shift = j * rng.uniform(-0.5, 0.5) * max(view - extent - 45, 0)
        uv_s = [(u + shift, v) for u, v in uv]
        pts = [arm.xy(u, v) for u, v in uv_s]
        if all(min(x, y, Ww - x, Hh - y) > (min(40, w / r ** 0.5) / 2 + 6) * ppm
               for (x, y), w, r in zip(pts, wheals, ratios)):
            break
    l2 = np.float32([np.cos(la := rng.uniform(0, 2 * np.pi)), np.sin(la)])    # light direction in the image
    img, a8, kind = _base(rng, arm, fz, size, view, uv_s, l2, str(SURFACES[rng.integers(len(SURFACES))]))

    # reactions at full resolution, in boxes around the sites
    whs = [_wheal(rng, arm, x, y, w, l2, size) for (x, y), w in zip(pts, wheals)]
    fls = [_flare(rng, arm, x, y, w, r, wh[4], size) for (x, y), w, r, wh in zip(pts, wheals, ratios, whs)]
    bb = tuple(fn(b[i] for b, _ in fls) for i, fn in enumerate((min, max, min, max)))
    Itot, Htot = (np.zeros((bb[1] - bb[0], bb[3] - bb[2]), np.float32) for _ in range(2))
    sites = []
    for (x, y), (wb, H, *_), (fb, I) in zip(pts, whs, fls):
        _paste(Itot, bb, I, fb)
        _paste(Htot, bb, H, wb)
        _paste(own := I >= 0.5, fb, H >= 0.5, wb, np.logical_or)        # this site's flare u wheal
        sites.append((float(x), float(y), float(np.sqrt(4 * (H >= 0.5).sum() / np.pi) / ppm),
                      float(np.sqrt(4 * own.sum() / np.pi) / ppm)))
    reg, dk = img[bb[0]:bb[1], bb[2]:bb[3]], (fz - 1) / 5    # on dark skin erythema reads as dusky darkening
    bases = [img[wb[0]:wb[1], wb[2]:wb[3]].astype(np.float32) for wb, *_ in whs]
    red, It = RED[fz] * rng.uniform(0.85, 1.1) * np.array((0.03 + 0.2 * dk, 0.4, 0.4 - 0.05 * dk)), np.minimum(Itot, 2)
    reg[:] = cv2.multiply(reg, cv2.merge([1 - It * np.float32(r) for r in red]), dtype=cv2.CV_8U)
    for (wb, H, S, P, _), base in zip(whs, bases):
        pale = base + (255 - base) * PALE[fz] * np.float32((1.0, 0.95, 0.78))    # pale, yellowish
        al, win = (H * rng.uniform(0.7, 0.95))[..., None], img[wb[0]:wb[1], wb[2]:wb[3]]
        tex = 1 + S + 0.05 * H * _noise(rng, H.shape, 0.35 * ppm)                # peau d'orange
        win[:] = np.clip((win * (1 - al) + pale * al) * tex[..., None] + P[..., None] + 0.5, 0, 255)
    label = np.zeros(size, np.uint8)
    label[bb[0]:bb[1], bb[2]:bb[3]] = np.where(Htot >= 0.5, 2, Itot >= 0.5)
    _marks(rng, img, a8, arm, fz, pts, uv_s, sites)

    # camera: defocus, sometimes slight motion blur, sensor noise, JPEG (exposure and colour cast went in above)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.9) * max(1.0, max(size) / 1500))
    if rng.random() < 0.2:                # slight motion blur, along x or y
        L = int(rng.integers(2, 5) * max(1.0, max(size) / 1500))
        img = cv2.blur(img, (L, 1) if rng.random() < 0.5 else (1, L))
    cv2.randn(noise := np.empty(img.shape, np.int16), (0, 0, 0), (sn := rng.uniform(1, 5),) * 3)
    jpg = cv2.imencode(".jpg", cv2.cvtColor(cv2.add(img, noise, dtype=cv2.CV_8U), cv2.COLOR_RGB2BGR),
                       [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 96))])[1]
    img = cv2.cvtColor(cv2.imdecode(jpg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return ThirdPainterArm(img, label, float(ppm), fz, sites, kind)


def _panel(img: np.ndarray, label: np.ndarray | None, P: int) -> np.ndarray:
    """Letterbox img into a P x P tile; with label, draw flare (yellow) and wheal (cyan) outlines."""
    s = P / max(img.shape[:2])
    small = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                       interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    for m, col in (() if label is None else ((label >= 1, (255, 230, 0)), (label == 2, (0, 220, 255)))):
        cs = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)[0]
        cv2.drawContours(small, [np.int32(np.round((c + 0.5) * s - 0.5)) for c in cs], -1, col, 1, cv2.LINE_AA)
    tile = np.full((P, P, 3), 40, np.uint8)
    y0, x0 = (P - small.shape[0]) // 2, (P - small.shape[1]) // 2
    tile[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return tile


def main() -> None:
    """Paint --count arms; write a contact sheet: photograph | truth outlines | large-site zoom."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args, rows = ap.parse_args(), []
    sizes = [(384, 512), (512, 384), (768, 1024), (1200, 1600), (1600, 1200), (2250, 3000), (3000, 4000), (4000, 3000)]
    for i in range(args.count):
        size = sizes[np.random.default_rng([args.seed, i]).integers(len(sizes))]
        t0, arm = time.perf_counter(), paint_arm(args.seed, i, size)
        dt, (x, y, _, fl) = time.perf_counter() - t0, max(arm.sites, key=lambda s: s[2])
        r = int(0.9 * fl * arm.px_per_mm) + 4
        crop = (slice(max(int(y) - r, 0), int(y) + r), slice(max(int(x) - r, 0), int(x) + r))
        row = np.hstack([_panel(arm.image, None, 420), _panel(arm.image, arm.label, 420),
                         _panel(arm.image[crop], arm.label[crop], 420)])
        cap = (f"#{i} {size[0]}x{size[1]} FP{arm.fitzpatrick} {arm.background} {arm.px_per_mm:.1f}px/mm {dt:.2f}s"
               " wheal/flare mm: " + " ".join(f"{s[2]:.1f}/{s[3]:.0f}" for s in arm.sites))
        cv2.putText(row, cap, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(row)
        print(cap, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"third_painter_seed{args.seed}.png"
    cv2.imwrite(str(path), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
    print(path)


if __name__ == "__main__":
    main()
