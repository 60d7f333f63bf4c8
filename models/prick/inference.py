"""Skin prick segmentation at inference time: the app's single entry point to the network.

    seg = PrickSegmenter.load()          # shipped weights, or .load(path_to_pt)
    erythema, wheal = seg.predict(rgb)   # bool (H, W) each, full resolution

The whole photograph is letterboxed to the config's ``input_size`` (512, as in the paper),
the U-Net runs once at that size, and only the two class masks (erythema = labels 1|2,
i.e. the whole reaction including the wheal; wheal = label 2) are mapped back to the
photograph (uint8 linear resize + 0.5 threshold: smooth borders, cheap at 4000 px).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from models.facial.data import letterbox
from models.facial.inference import file_sha256, load_state_dict

from . import ERYTHEMA_HALO, WHEAL
from .config import PrickConfig, load_config
from .data import to_tensor
from .unet import build_unet

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "skin_prick_unet.pt"


def predict_logits(model: torch.nn.Module, boxed: list[np.ndarray], bf16: bool = False) -> torch.Tensor:
    x = torch.stack([to_tensor(b) for b in boxed])
    with torch.inference_mode():
        if bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x).float()
        return model(x).float()


def label_maps_from_logits(model: torch.nn.Module, logits: torch.Tensor) -> np.ndarray:
    """Label maps (N, S, S) uint8 (0/1/2). A sigmoid head decides the wheal on its own map
    (a wheal pixel is a wheal whatever the reaction map says)."""
    if getattr(model, "head_kind", "softmax") == "sigmoid":
        p = logits.sigmoid()
        t = getattr(model, "thresholds", (0.5, 0.5, 0.5))
        out = (p[:, 0] > t[0]).to(torch.uint8).numpy()
        grow = getattr(model, "reaction_grow_threshold", None)
        if grow is not None and grow < t[0]:
            for k, sure in enumerate(out):
                out[k] = grown_from(sure.astype(bool), (p[k, 0] > grow).numpy())
        out[(p[:, 1] > t[1]).numpy()] = WHEAL
        return out
    return logits.argmax(1).to(torch.uint8).numpy()


def grown_from(seeds: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The connected parts of ``candidates`` (bool) that hold a ``seeds`` pixel (hysteresis)."""
    n, parts = cv2.connectedComponents((candidates | seeds).astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(parts[seeds])] = True
    keep[0] = False
    return keep[parts]


def predict_label_maps(model: torch.nn.Module, boxed: list[np.ndarray], bf16: bool = False) -> np.ndarray:
    """Label maps (N, S, S) uint8 (0/1/2) for letterboxed uint8 RGB squares."""
    return label_maps_from_logits(model, predict_logits(model, boxed, bf16))


@dataclass
class PrickPrediction:
    erythema: np.ndarray  # bool (H, W), whole reaction (wheal included)
    wheal: np.ndarray  # bool (H, W)
    site_marks_xy: list[tuple[float, float]]  # prick-site marks found (photo pixels)
    model_scale: float  # model pixels per photo pixel


class PrickSegmenter:
    """U-Net wheal/erythema segmenter with the identity the DICOM SR records."""

    def __init__(self, model: torch.nn.Module, config: PrickConfig, weights_path: Path, bf16: bool = False) -> None:
        self.model = model.eval()
        self.config = config
        self.weights_path = Path(weights_path)
        self.input_size = int(config.data.input_size)
        self.bf16 = bf16
        self.name: str = config.name
        self.version: str = str(config.version)
        self.weights_sha256: str = file_sha256(self.weights_path)
        m = config.model
        self.architecture = (f"U-Net (base width {m.base_width}, depth {m.depth}, "
                             f"{'batch norm' if m.batch_norm else 'no batch norm'}), "
                             f"input {self.input_size}x{self.input_size}")

    @classmethod
    def load(cls, path: str | Path | None = None, num_threads: int | None = None, bf16: bool = False) -> "PrickSegmenter":
        weights = Path(path) if path is not None else DEFAULT_WEIGHTS
        if not weights.exists():
            raise FileNotFoundError(f"skin prick weights not found: {weights}")
        cfg_path = weights.with_suffix(".yaml")
        if not cfg_path.exists():
            raise FileNotFoundError(f"config for {weights.name} not found: {cfg_path}")
        config = load_config(cfg_path)
        if num_threads is None:
            # One thread: the narrow 256 px U-Net runs in ~0.09 s on one core, while two
            # OpenMP threads on a busy 2-core host measured 2.2 s (a descheduled thread
            # stalls every layer's barrier). DERMPACS_PRICK_THREADS overrides.
            num_threads = int(os.environ.get("DERMPACS_PRICK_THREADS", "1"))
        torch.set_num_threads(num_threads)
        model = build_unet(config.model)
        model.load_state_dict(load_state_dict(weights))
        return cls(model, config, weights, bf16=bf16)

    def predict_boxed(self, rgb: np.ndarray) -> tuple[np.ndarray, object]:
        """(label map at input_size restricted to the content, letterbox info)."""
        boxed, info = letterbox(rgb, self.input_size)
        labels = predict_label_maps(self.model, [boxed], self.bf16)[0]
        return labels[info.y0:info.y0 + info.h, info.x0:info.x0 + info.w], info

    @property
    def has_site_map(self) -> bool:
        return self.config.model.head == "sigmoid"

    def predict_panel(self, rgb: np.ndarray) -> "PrickPrediction":
        """Full-resolution masks plus the prick-site marks (photo x, y) the net saw."""
        rgb = np.asarray(rgb)
        boxed, info = letterbox(rgb, self.input_size)
        logits = predict_logits(self.model, [boxed], self.bf16)
        labels = label_maps_from_logits(self.model, logits)[0][info.y0:info.y0 + info.h, info.x0:info.x0 + info.w]
        erythema, wheal = upsample_masks(labels, rgb.shape[:2])
        marks: list[tuple[float, float]] = []
        if self.has_site_map:
            site = (logits[0, 2].sigmoid().numpy() > self.config.model.thresholds[2])[info.y0:info.y0 + info.h, info.x0:info.x0 + info.w]
            n, _, stats, centroids = cv2.connectedComponentsWithStats(site.astype(np.uint8), connectivity=8)
            for k in range(1, n):
                if stats[k, cv2.CC_STAT_AREA] >= 2:
                    x, y = centroids[k]
                    marks.append(((x + 0.5) / info.scale - 0.5, (y + 0.5) / info.scale - 0.5))
        return PrickPrediction(erythema, wheal, marks, float(info.scale))

    def reread_site(self, rgb: np.ndarray, xy: tuple[float, float], px_per_mm: float, window_mm: float,
                    max_offset_mm: float, min_reaction_model_px: int = 12):
        """The reaction at one site, segmented again in a ``window_mm`` window around it.

        In a whole-arm photograph letterboxed to the model's input a 2 mm wheal is a few
        pixels and may fall under threshold; in the window it is several times larger. The
        reaction (``models.prick.measure.Reaction``, photograph coordinates) whose centre is
        within ``max_offset_mm`` of the site, the largest if several; None if there is none.
        """
        from .measure import Reaction, reactions_from_masks
        from .panel import reaction_centre

        h, w = rgb.shape[:2]
        half = max(8, int(round(window_mm * px_per_mm / 2)))
        cx, cy = int(round(xy[0])), int(round(xy[1]))
        x0, y0, x1, y1 = max(0, cx - half), max(0, cy - half), min(w, cx + half), min(h, cy + half)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        window = rgb[y0:y1, x0:x1]
        pred = self.predict_panel(window)
        best = None
        for r in reactions_from_masks(pred.erythema, pred.wheal, pred.model_scale, min_reaction_model_px,
                                      rgb=window, flare_edge=self.config.flare_edge):
            rx, ry = reaction_centre(r)
            if np.hypot(rx + x0 - xy[0], ry + y0 - xy[1]) / px_per_mm <= max_offset_mm:
                if best is None or r.erythema_pixels > best.erythema_pixels:
                    best = r
        if best is None:
            return None
        bx0, by0, bx1, by1 = best.bbox
        return Reaction(bbox=(bx0 + x0, by0 + y0, bx1 + x0, by1 + y0), erythema=best.erythema, wheal=best.wheal,
                        centroid_xy=(best.centroid_xy[0] + x0, best.centroid_xy[1] + y0))

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full-resolution (erythema incl. wheal, wheal) boolean masks of an RGB photograph."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError("rgb must be uint8 (H, W, 3)")
        labels, _ = self.predict_boxed(rgb)
        return upsample_masks(labels, rgb.shape[:2])


def upsample_masks(labels: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Label map (content part) -> full-size (erythema incl. wheal, wheal) boolean masks."""
    from .measure import resize_mask

    h, w = shape
    erythema, wheal = (resize_mask(sel, (w, h)) for sel in (labels >= ERYTHEMA_HALO, labels == WHEAL))
    return erythema | wheal, wheal
