"""Skin prick test: wheal and erythema segmentation (SEEDS.md, section C).

| module | what |
|---|---|
| `config.py` | typed run configuration (paper recipe / shipped CPU schedule), YAML round trip |
| `unet.py` | the paper's U-Net (3x3 conv+ReLU x2 per level, 2x2 max-pool, 2x2 up-conv, skip concat), base width configurable |
| `synthetic.py` | synthetic forearm panels with exact per-site truth (label map 0 background, 1 erythema halo, 2 wheal; site marks; mm diameters) |
| `data.py` | letterbox, the paper's augmentations, synthetic and folder datasets |
| `measure.py` | reactions (connected components, touching halos split), diameters, ratio, Bland-Altman |
| `train.py`, `evaluate.py` | CLIs (`python -m models.prick.train --help`, `python -m models.prick.evaluate --help`) |
| `inference.py` | `PrickSegmenter.load()` / `.predict(rgb)` -> full-resolution erythema and wheal masks; `.predict_panel(rgb)` adds prick-site marks |
| `panel.py` | panel YAML config, grid fit (calibration + uncertainty), site matching, positive/negative/not readable, validity |
| `evaluate_arms.py` | held-out panels read as the app reads them: Dice, reactions found, areas, diameters in mm, Bland-Altman; the `models.report` breakdown by skin type, size and view (`suite.md`/`suite.json`, contact sheet) |
"""

# Label map values (training masks, generator output, folder datasets).
BACKGROUND, ERYTHEMA_HALO, WHEAL = 0, 1, 2
CLASS_NAMES = ("background", "erythema_halo", "wheal")
