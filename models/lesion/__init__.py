"""Vitiligo lesion segmentation and severity on close-up skin photographs (SEEDS.md, B).

| module | what |
|---|---|
| `networks.py` | encoders (ResNet-50 from MONAI, own MobileNetV3-Small) + heads (DeepLabv3/ASPP, U-Net) |
| `synthetic.py` | close-up skin patches of any body site with depigmented patches (reuses models.facial.synthetic) |
| `data.py` | the paper's preprocessing/augmentation, synthetic and folder datasets |
| `config.py`, `../configs/vitiligo_lesion_*.yaml` | run configuration (paper recipe, shipped CPU recipe) |
| `train.py`, `evaluate.py` | CLIs |
| `inference.py` | `CloseUpSegmenter.load()` / `.predict(rgb)` -> visible-skin mask + lesion mask |
| `severity.py` | RGB difference, CIEDE2000, surrounding-skin ring, lesion area % and count |
"""
