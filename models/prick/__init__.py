"""Skin prick test: wheal and erythema segmentation (SEEDS.md, section C).

| module | what |
|---|---|
| `config.py` | typed run configuration (paper recipe / shipped CPU schedule), YAML round trip |
| `unet.py` | the paper's U-Net (3x3 conv+ReLU x2 per level, 2x2 max-pool, 2x2 up-conv, skip concat), base width configurable |
| `synthetic.py` | synthetic forearm patches with prick sites (label map 0 background, 1 erythema halo, 2 wheal) |
| `data.py` | letterbox, the paper's augmentations, synthetic and folder datasets |
| `measure.py` | reactions (connected components, touching halos split), diameters, ratio, Bland-Altman |
| `train.py`, `evaluate.py` | CLIs (`python -m models.prick.train --help`, `python -m models.prick.evaluate --help`) |
| `inference.py` | `PrickSegmenter.load()` / `.predict(rgb)` -> full-resolution erythema and wheal masks |
"""

# Label map values (training masks, generator output, folder datasets).
BACKGROUND, ERYTHEMA_HALO, WHEAL = 0, 1, 2
CLASS_NAMES = ("background", "erythema_halo", "wheal")
