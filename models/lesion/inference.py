"""Close-up segmenter at inference time: one forward pass gives the visible-skin mask and
the lesion mask.

    seg = CloseUpSegmenter.load(path)            # or .load() for the shipped weights
    skin, lesion = seg.predict(rgb)              # bool (H, W) each, lesion inside skin

The photograph is resized to the training resolution (``data.resize``, 312, aspect not
kept, like the paper's preprocessing), padded to a multiple of 32, and the class
probabilities are resized back to the full resolution.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.facial.inference import file_sha256, load_state_dict

from .config import LesionTrainConfig, load_lesion_config
from .data import to_tensor
from .networks import build_model, describe

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "vitiligo_lesion_unet_mobilenetv3.pt"


class CloseUpSegmenter:
    def __init__(self, model: torch.nn.Module, config: LesionTrainConfig, weights_path: Path) -> None:
        self.model = model.eval()
        self.config = config
        self.weights_path = Path(weights_path)
        self.name = config.name
        self.version = config.version
        self.architecture = describe(config.model.architecture, config.model.encoder)
        self.weights_sha256 = file_sha256(self.weights_path)
        self.input_size = int(config.data.resize)
        # The MobileNet net costs ~0.3 GFLOP at 312 px: one thread is as fast as two on an
        # idle machine and avoids OpenMP spin-wait stalls (10x) when the cores are shared.
        self.threads = 1 if config.model.encoder == "mobilenetv3_small" else torch.get_num_threads()

    @classmethod
    def load(cls, path: str | Path | None = None, num_threads: int | None = None) -> "CloseUpSegmenter":
        weights = Path(path) if path else DEFAULT_WEIGHTS
        if not weights.is_file():
            raise FileNotFoundError(f"weights not found: {weights}")
        config_path = weights.with_suffix(".yaml")
        if not config_path.is_file():
            raise FileNotFoundError(f"the config {config_path.name} must lie beside {weights.name}")
        config = load_lesion_config(config_path)
        model = build_model(config.model.architecture, config.model.encoder, config.model.num_classes)
        model.load_state_dict(load_state_dict(weights))
        segmenter = cls(model, config, weights)
        if num_threads:
            segmenter.threads = int(num_threads)
        return segmenter

    @torch.inference_mode()
    def probabilities(self, rgb: np.ndarray) -> np.ndarray:
        """Class probabilities (C, s, s) at the network resolution."""
        s = self.input_size
        small = cv2.resize(np.ascontiguousarray(rgb), (s, s), interpolation=cv2.INTER_AREA)
        x = to_tensor(small)[None]
        pad = (-s) % 32
        if pad:
            x = F.pad(x, (0, pad, 0, pad), mode="reflect")
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            logits = self.model(x)[..., :s, :s]
        finally:
            torch.set_num_threads(previous)
        return torch.softmax(logits, 1)[0].numpy()

    def predict(self, rgb: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """Full-resolution masks: visible skin (skin or vitiligo) and vitiligo (inside skin).

        Probabilities are resized bilinearly as 8-bit maps (4x less memory traffic than
        float on a 12-megapixel photograph), then thresholded.
        """
        h, w = rgb.shape[:2]
        prob = self.probabilities(rgb)
        skin8 = np.clip((1.0 - prob[0]) * 255 + 0.5, 0, 255).astype(np.uint8)
        lesion8 = np.clip(prob[2] * 255 + 0.5, 0, 255).astype(np.uint8)
        level = int(round(threshold * 255))
        skin = cv2.resize(skin8, (w, h), interpolation=cv2.INTER_LINEAR) > 127
        lesion = cv2.resize(lesion8, (w, h), interpolation=cv2.INTER_LINEAR) >= level
        return skin, lesion & skin
