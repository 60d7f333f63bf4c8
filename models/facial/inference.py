"""Lesion segmentation at inference time: the app's single entry point to the network.

Contract (the app depends on it)::

    seg = LesionSegmenter.load()              # shipped weights, or .load(path_to_pt)
    prob = seg.predict(roi_rgb, roi_mask)     # float32 (H, W) in [0, 1], 0 outside mask

The model is loaded once and reused. ``predict`` zeroes the ROI outside the skin mask,
letterboxes it to the config's ``input_size`` exactly like training, runs the net at that
size and only then resizes the probability map back to the ROI, so a 2000x1600 ROI costs
about as much as a 384x384 one.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from ..config import TrainConfig, load_config
from .data import letterbox, letterbox_mask, model_input
from .ddrnet import build_model

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "facial_vitiligo_ddrnet23slim.pt"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_path_for(weights: str | Path) -> Path:
    """The YAML saved beside a weights file (same stem)."""
    return Path(weights).with_suffix(".yaml")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a saved state dict (fp16 on disk) as fp32 tensors."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a training checkpoint
    return {k: (v.float() if torch.is_floating_point(v) else v) for k, v in state.items()}


class LesionSegmenter:
    """DDRNet vitiligo segmenter with the identity the DICOM SR records."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig, weights_path: Path,
                 bf16: bool = False) -> None:
        self.model = model.eval()
        self.config = config
        self.weights_path = Path(weights_path)
        self.input_size = int(config.data.input_size)
        self.bf16 = bf16
        self.name: str = config.name
        self.version: str = str(config.version)
        self.weights_sha256: str = file_sha256(self.weights_path)
        m = config.model
        self.architecture: str = (f"DDRNet (planes {m.planes}, spp {m.spp_planes}, head {m.head_planes}, "
                                  f"layers {list(m.layers)}), input {self.input_size}x{self.input_size}")

    @classmethod
    def load(cls, path: str | Path | None = None, num_threads: int | None = None,
             bf16: bool = False) -> "LesionSegmenter":
        """Load weights (fp16 state dict) + the YAML config beside them."""
        weights = Path(path) if path is not None else DEFAULT_WEIGHTS
        if not weights.exists():
            raise FileNotFoundError(f"lesion weights not found: {weights}")
        cfg_path = config_path_for(weights)
        if not cfg_path.exists():
            raise FileNotFoundError(f"config for {weights.name} not found: {cfg_path}")
        config = load_config(cfg_path)
        if num_threads is None:
            num_threads = max(1, min(os.cpu_count() or 1, 8))
        torch.set_num_threads(num_threads)
        model = build_model(config.model)
        model.load_state_dict(load_state_dict(weights))
        return cls(model, config, weights, bf16=bf16)

    def _probability_square(self, boxed_rgb: np.ndarray, boxed_skin: np.ndarray) -> np.ndarray:
        """Vitiligo probability (input_size, input_size) for one letterboxed image."""
        x = model_input(boxed_rgb, boxed_skin, self.config.data.skin_relative_inputs).unsqueeze(0)
        with torch.inference_mode():
            if self.bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    logits = self.model(x, upsample=False)
            else:
                logits = self.model(x, upsample=False)
            logits = torch.nn.functional.interpolate(logits.float(), size=x.shape[-2:], mode="bilinear",
                                                     align_corners=False)
            prob = logits.softmax(1)[0, 1]
        return prob.numpy()

    def predict(self, roi_rgb: np.ndarray, roi_mask: np.ndarray) -> np.ndarray:
        """Probability of vitiligo per ROI pixel, float32 (H, W), 0 outside ``roi_mask``."""
        rgb = np.asarray(roi_rgb)
        mask = np.asarray(roi_mask, dtype=bool)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError("roi_rgb must be uint8 (H, W, 3)")
        if mask.shape != rgb.shape[:2]:
            raise ValueError(f"roi_mask shape {mask.shape} != image {rgb.shape[:2]}")
        h, w = mask.shape
        if not mask.any():
            return np.zeros((h, w), np.float32)
        masked = rgb * mask[..., None].view(np.uint8)
        boxed, info = letterbox(masked, self.input_size)
        boxed_skin = letterbox_mask(mask, self.input_size) if self.config.data.skin_relative_inputs \
            else boxed.any(axis=2)
        prob_sq = self._probability_square(boxed, boxed_skin)
        content = prob_sq[info.y0:info.y0 + info.h, info.x0:info.x0 + info.w]
        prob = cv2.resize(np.ascontiguousarray(content), (w, h), interpolation=cv2.INTER_LINEAR)
        prob[~mask] = 0.0
        return np.clip(prob, 0.0, 1.0).astype(np.float32, copy=False)
