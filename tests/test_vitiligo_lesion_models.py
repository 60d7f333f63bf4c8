"""Close-up vitiligo models: architectures, severity maths, synthetic data, a tiny training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.lesion.networks import ARCHITECTURES, ENCODERS, build_encoder, build_model
from models.lesion.severity import ciede2000, measure, rgb_difference, srgb_to_lab


@pytest.mark.parametrize("encoder", ENCODERS)
def test_encoders_give_five_levels_at_strides_2_to_32(encoder):
    enc = build_encoder(encoder).eval()
    with torch.no_grad():
        feats = enc(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == list(enc.channels)
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    if encoder == "mobilenetv3_small":  # (ResNet-50's dilation is covered by the DeepLab shape test)
        dilated = build_encoder(encoder, dilate_last=True).eval()
        with torch.no_grad():
            assert dilated(torch.zeros(1, 3, 64, 64))[-1].shape[-1] == 4  # output stride 16 for DeepLab


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_architectures_output_class_logits_at_input_size(architecture, encoder):
    model = build_model(architecture, encoder, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 96, 64))
    assert out.shape == (1, 3, 96, 64)


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("fcn", "resnet50")
    with pytest.raises(ValueError, match="unknown encoder"):
        build_model("unet", "vgg16")


# Sharma, Wu, Dalal (2005), "The CIEDE2000 color-difference formula", test data pairs.
SHARMA_PAIRS = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((50.0, 2.5, 0.0), (61.0, -5.0, 29.0), 22.8977),
    ((50.0, 2.5, 0.0), (56.0, -27.0, -3.0), 31.9030),
    ((50.0, 2.5, 0.0), (58.0, 24.0, 15.0), 19.4535),
    ((50.0, 2.5, 0.0), (50.0, 3.1736, 0.5854), 1.0000),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
]


@pytest.mark.parametrize("lab1,lab2,expected", SHARMA_PAIRS)
def test_ciede2000_matches_sharma_reference_pairs(lab1, lab2, expected):
    assert float(ciede2000(lab1, lab2)) == pytest.approx(expected, abs=5e-5)
    assert float(ciede2000(lab2, lab1)) == pytest.approx(expected, abs=5e-5)  # symmetric


def test_srgb_to_lab_reference_values():
    assert srgb_to_lab([255, 255, 255]) == pytest.approx([100.0, 0.0, 0.0], abs=1e-3)
    assert srgb_to_lab([0, 0, 0]) == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    assert srgb_to_lab([255, 0, 0]) == pytest.approx([53.2408, 80.0925, 67.2032], abs=2e-3)


def test_rgb_difference_is_the_euclidean_distance_of_means():
    # (252-170, 236-120, 228-85) = (82, 116, 143): sqrt(6724 + 13456 + 20449) = sqrt(40629)
    assert rgb_difference((252, 236, 228), (170, 120, 85)) == pytest.approx(201.566, abs=1e-3)
    assert rgb_difference((10, 10, 10), (10, 10, 10)) == 0.0


def _scene():
    """200x300 photo: background on the right, skin, two 20x20 lesions and a 2x2 speck."""
    skin_rgb, lesion_rgb, bg_rgb = np.array([170, 120, 85]), np.array([230, 200, 185]), np.array([30, 60, 200])
    img = np.zeros((200, 300, 3), np.uint8)
    skin = np.zeros((200, 300), bool)
    skin[:, :250] = True
    lesion = np.zeros_like(skin)
    lesion[40:60, 40:60] = True
    lesion[120:140, 150:170] = True
    lesion[10:12, 200:202] = True  # 4 px: below the minimum lesion size
    img[skin] = skin_rgb
    img[~skin] = bg_rgb
    img[lesion] = lesion_rgb
    return img, skin, lesion, skin_rgb, lesion_rgb


def test_lesion_percent_count_and_colour_severity_on_a_synthetic_mask():
    img, skin, lesion, skin_rgb, lesion_rgb = _scene()
    r = measure(img, skin, lesion)
    assert r.skin_pixels == 200 * 250
    assert r.lesion_count == 2 and r.lesion_pixels == 800  # the speck is dropped
    assert r.lesion_percent == pytest.approx(100 * 800 / 50000)
    assert r.reference == "ring"
    # the ring stays on skin: the blue background never enters the reference colour
    assert r.skin_mean_rgb == pytest.approx(tuple(skin_rgb), abs=1e-9)
    assert r.rgb_difference == pytest.approx(float(np.linalg.norm(lesion_rgb - skin_rgb)))
    assert r.delta_e2000 == pytest.approx(float(ciede2000(srgb_to_lab(lesion_rgb), srgb_to_lab(skin_rgb))), abs=1e-6)
    assert r.skin_outline_xy is not None and r.skin_outline_xy[:, 0].max() <= 250
    hull = r.lesion_hull_xy  # both kept lesions (and the dropped speck's area excluded)
    assert hull[:, 0].min() == 40 and hull[:, 0].max() == 169 and hull[:, 1].min() == 40 and hull[:, 1].max() == 139


def test_no_lesion_gives_no_colour_severity_and_full_skin_lesion_falls_back():
    img, skin, lesion, *_ = _scene()
    r = measure(img, skin, np.zeros_like(lesion))
    assert r.lesion_count == 0 and r.lesion_percent == 0 and r.rgb_difference is None and r.reference == "none"
    almost_all = skin.copy()
    almost_all[:, 249:250] = False  # one column left, inside the gap: no ring
    r = measure(img, skin, almost_all)
    assert r.lesion_count == 1 and r.reference == "all skin" and r.rgb_difference is not None


def test_synthetic_closeups_have_about_five_percent_lesion_and_ordered_severity():
    from models.lesion.synthetic import SEVERITIES, generate_closeup

    fractions = [generate_closeup(0, i, size=160).lesion_mask.mean() for i in range(30)]
    assert 0.025 < float(np.mean(fractions)) < 0.09
    medians = []
    for severity in SEVERITIES:
        diffs = []
        for i in range(8):
            s = generate_closeup(5, i, size=160, severity=severity, lesion_prob=1.0)
            r = measure(s.image, s.skin_mask, s.lesion_mask)
            if r.rgb_difference is not None:
                diffs.append(r.rgb_difference)
        medians.append(np.median(diffs))
    assert medians[0] > medians[1] > medians[2]  # high > mid > low


def test_config_round_trip_and_paper_recipe():
    from models.config import from_dict, to_dict
    from models.lesion.config import LesionTrainConfig, load_lesion_config

    paper = load_lesion_config("vitiligo_lesion_paper")
    assert (paper.data.resize, paper.data.crop, paper.optim.epochs) == (312, 256, 20)
    assert tuple(paper.augment.brightness) == (0.7, 1.3) and paper.augment.hflip_p == paper.augment.vflip_p == 0.5
    assert from_dict(LesionTrainConfig, to_dict(paper)) == paper
    shipped = load_lesion_config("vitiligo_lesion_shipped")
    assert (shipped.model.architecture, shipped.model.encoder) == ("unet", "mobilenetv3_small")


def test_augmentation_crops_and_keeps_labels_aligned():
    from models.lesion.config import LesionAugmentConfig
    from models.lesion.data import augment

    img = np.zeros((312, 312, 3), np.uint8)
    lab = np.zeros((312, 312), np.uint8)
    img[100:150, 100:150] = 255
    lab[100:150, 100:150] = 2
    rng = np.random.default_rng(0)
    for _ in range(5):
        a_img, a_lab = augment(img, lab, 256, LesionAugmentConfig(), rng)
        assert a_img.shape == (256, 256, 3) and a_lab.shape == (256, 256)
        assert np.all((a_img[..., 0] > 0) == (a_lab == 2))


def test_tiny_training_run_writes_weights_config_and_metrics(tmp_path):
    from models.lesion.config import LesionTrainConfig
    from models.lesion.inference import CloseUpSegmenter
    from models.lesion.train import train

    cfg = LesionTrainConfig(name="vitiligo_lesion_tiny")
    cfg.model.architecture, cfg.model.encoder = "unet", "mobilenetv3_small"
    cfg.data.n_train, cfg.data.n_val, cfg.data.resize, cfg.data.crop = 4, 2, 96, 64
    cfg.optim.epochs, cfg.optim.batch_size, cfg.optim.threads = 1, 4, 1
    record = train(cfg, tmp_path, log=lambda *_: None)
    assert (tmp_path / "vitiligo_lesion_tiny.pt").is_file() and (tmp_path / "vitiligo_lesion_tiny.yaml").is_file()
    assert record["epochs_done"] == 1 and 0 <= record["val"]["f1"] <= 100
    seg = CloseUpSegmenter.load(tmp_path / "vitiligo_lesion_tiny.pt")
    skin, lesion = seg.predict(np.full((50, 70, 3), 128, np.uint8))
    assert skin.shape == lesion.shape == (50, 70) and skin.dtype == lesion.dtype == bool
    assert not (lesion & ~skin).any()
    assert len(seg.weights_sha256) == 64 and "U-Net" in seg.architecture


def test_user_folder_images_masks_and_optional_skin(tmp_path):
    import cv2

    from models.lesion.config import LesionDataConfig
    from models.lesion.data import build_pairs, read_folder

    for sub in ("images", "masks", "skin"):
        (tmp_path / sub).mkdir()
    for i in range(3):
        img = np.full((40, 60, 3), 120, np.uint8)
        mask = np.zeros((40, 60), np.uint8)
        mask[5:15, 5:15] = 255
        cv2.imwrite(str(tmp_path / "images" / f"p{i}.jpg"), img)
        cv2.imwrite(str(tmp_path / "masks" / f"p{i}.png"), mask)
    skin = np.zeros((40, 60), np.uint8)
    skin[:, :30] = 1
    cv2.imwrite(str(tmp_path / "skin" / "p0.png"), skin)
    pairs = read_folder(tmp_path)
    assert len(pairs) == 3
    assert pairs[0][1][10, 10] == 2 and pairs[0][1][30, 20] == 1 and pairs[0][1][30, 50] == 0  # with skin/
    assert pairs[1][1][30, 50] == 1  # without skin/: every pixel is skin
    train = build_pairs(LesionDataConfig(source="folder", folder=str(tmp_path), resize=32), "train")
    assert len(train) == 2 and train[0][0].shape == (32, 32, 3)
    (tmp_path / "masks" / "p2.png").unlink()
    with pytest.raises(ValueError, match="p2"):
        read_folder(tmp_path)


def test_evaluate_cli_writes_the_f1_table(tmp_path):
    import json

    from apps.vitiligo_lesion.app import SHIPPED_WEIGHTS
    from models.lesion.evaluate import main

    assert main(["--weights", str(SHIPPED_WEIGHTS), "--n", "3", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "metrics.json").read_text())["rows"]
    assert rows[0]["paper_f1"] == 83.88 and {"f1", "iou", "precision", "recall"} <= set(rows[0])
    assert (tmp_path / "f1_table.png").stat().st_size > 1000
