"""Step 8: a PNG preview per photograph with the segments drawn over it (for people, not PACS)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from monai.deploy.core import Fragment

from .base import StepOperator
from .cases import PhotoCase


def render_overlay(rgb: np.ndarray, case: PhotoCase, max_side: int = 1600) -> np.ndarray:
    """Downscaled RGB copy: the first segment outlined, the others filled and outlined."""
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    canvas = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    for index, segment in enumerate(case.segments):
        small = cv2.resize(segment.mask.view(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        color = np.array(segment.spec.color_rgb or (255, 255, 0), dtype=np.float32)
        if index > 0:
            sel = small.astype(bool)
            canvas[sel] = canvas[sel] * 0.55 + color * 0.45
        contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        out = canvas.astype(np.uint8)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), max(1, round(3 * scale / 0.38)))
        canvas = out.astype(np.float32)
    out = np.ascontiguousarray(canvas.astype(np.uint8))
    lines = [f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}" for k, v in case.summary.items() if v is not None]
    y = 40
    for line in lines[:6]:
        cv2.putText(out, line, (20, y), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 5, cv2.LINE_AA)
        cv2.putText(out, line, (20, y), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
        y += 38
    return out


class OverlayWriterStep:
    step_name = "overlay writer"

    def __init__(self, output_folder: Path) -> None:
        self.output_folder = Path(output_folder)
        self._count = 0

    def process(self, case: PhotoCase) -> None:
        if not case.segments:
            return
        self._count += 1
        view = case.summary.get("view")
        name = f"overlay_{self._count:03d}" + (f"_{view}" if view else "") + ".png"
        self.output_folder.mkdir(parents=True, exist_ok=True)
        path = self.output_folder / name
        image = render_overlay(case.photo.pixels, case)
        if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
        case.outputs.append(path)


class OverlayWriterOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, output_folder: Path, **kwargs) -> None:
        super().__init__(fragment, *args, step=OverlayWriterStep(output_folder), **kwargs)
