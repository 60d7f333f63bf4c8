"""Scalp condition grading (SEEDS.md, D): six indicators x four grades from one close-up.

Shared EfficientNet backbone (MONAI ``EfficientNetBN``) + six 4-class heads, focal loss,
letterboxed square input. Modules:

| module | what |
|---|---|
| ``synthetic`` | microscope-style scalp close-ups (640x480) with grades drawn at SEEDS.md-like frequencies |
| ``data`` | letterbox, normalisation, augmentation, CSV(+image folder) and synthetic datasets |
| ``network`` | ``ScalpNet``: backbone + six heads, logits (B, 6, 4) |
| ``losses`` | multi-head focal loss (gamma 2), optional per-grade class weights |
| ``metrics`` | confusion matrices, per-indicator macro-F1, overall macro-F1, Hamming accuracy |
| ``config`` | run configuration (YAML in ``models/configs/scalp_*.yaml``) |
| ``train`` / ``evaluate`` | CLIs: ``python -m models.scalp.train``, ``python -m models.scalp.evaluate`` |
| ``inference`` | ``ScalpGrader.load(path).predict(rgb)``: the app's entry point |
"""

from __future__ import annotations

INDICATORS: tuple[str, ...] = (
    "micro_keratin",
    "excess_sebum",
    "interfollicular_erythema",
    "follicular_erythema_pustules",
    "dandruff",
    "hair_loss",
)
"""Indicator keys, in head order; also the CSV column names (public scalp dataset layout)."""

INDICATOR_LABELS: dict[str, str] = {
    "micro_keratin": "Micro-keratin",
    "excess_sebum": "Excess sebum",
    "interfollicular_erythema": "Erythema between follicles",
    "follicular_erythema_pustules": "Follicular erythema/pustules",
    "dandruff": "Dandruff",
    "hair_loss": "Hair loss",
}
NUM_GRADES = 4
GRADE_NAMES: tuple[str, ...] = ("none/good", "mild", "moderate", "severe")
