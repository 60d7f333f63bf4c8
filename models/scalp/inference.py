"""Scalp grading at inference time: the app's single entry point to the network.

    grader = ScalpGrader.load()                 # shipped weights, or .load(path_to_pt)
    result = grader.predict(rgb)                # ScalpGrades: grades (6,), probabilities (6, 4)

The photograph is letterboxed to the config's ``input_size`` exactly like training.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.facial.inference import file_sha256, load_state_dict

from . import INDICATORS
from .config import ScalpTrainConfig, load_scalp_config
from .data import prepare_image
from .network import build_scalp_model

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "scalp_efficientnet_b0.pt"


@dataclass(frozen=True)
class ScalpGrades:
    grades: np.ndarray  # int (6,), INDICATORS order
    probabilities: np.ndarray  # float (6, 4)

    def as_dict(self) -> dict[str, int]:
        return {name: int(g) for name, g in zip(INDICATORS, self.grades)}


class ScalpGrader:
    """Shared-backbone six-head grader with the identity the DICOM SR records."""

    def __init__(self, model: torch.nn.Module, config: ScalpTrainConfig, weights_path: Path,
                 num_threads: int = 1) -> None:
        self.model = model.eval()
        self.num_threads = max(1, int(num_threads))
        self.config = config
        self.weights_path = Path(weights_path)
        self.input_size = int(config.data.input_size)
        self.name: str = config.name
        self.version: str = str(config.version)
        self.weights_sha256: str = file_sha256(self.weights_path)
        self.architecture: str = (f"MONAI EfficientNetBN {config.model.backbone} shared backbone + "
                                  f"{config.model.num_indicators} {config.model.num_grades}-class heads, "
                                  f"letterbox {self.input_size}x{self.input_size}")

    @classmethod
    def load(cls, path: str | Path | None = None, num_threads: int = 1) -> "ScalpGrader":
        """Weights (fp16 state dict) + the YAML beside them.

        One intra-op thread by default: B0 at 224 is ~0.4 GFLOP (0.04 s on one core), and on
        a shared 2-core host two threads measured 0.1-3 s per image (threads wait on each
        other). ``predict`` sets the thread count for its own call only and restores it, so
        other apps in the same worker process keep theirs.
        """
        weights = Path(path) if path is not None else DEFAULT_WEIGHTS
        if not weights.is_file():
            raise FileNotFoundError(f"scalp weights not found: {weights}")
        cfg_path = weights.with_suffix(".yaml")
        if not cfg_path.is_file():
            raise FileNotFoundError(f"config for {weights.name} not found: {cfg_path}")
        config = load_scalp_config(cfg_path)
        model = build_scalp_model(config.model)
        model.load_state_dict(load_state_dict(weights))
        return cls(model, config, weights, num_threads=num_threads)

    @torch.inference_mode()
    def predict(self, rgb: np.ndarray) -> ScalpGrades:
        image = np.asarray(rgb)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("rgb must be uint8 (H, W, 3)")
        x = prepare_image(image, self.input_size).unsqueeze(0)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            prob = self.model(x).softmax(-1)[0].numpy()
        finally:
            torch.set_num_threads(previous)
        return ScalpGrades(prob.argmax(-1), prob.astype(np.float64))
