"""Skin prick test models: generator, U-Net, measurements, Bland-Altman, training/evaluation CLIs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from models.prick import ERYTHEMA_HALO, WHEAL
from models.prick.config import PrickConfig, UNetConfig, load_config, save_config
from models.prick.losses import soft_dice_loss
from models.prick.measure import bland_altman, diameters, drop_strokes, find_reactions, reading_order
from models.prick.synthetic import generate_sample
from models.prick.unet import UNet, build_unet

# --------------------------------------------------------------------------- generator


def test_generator_is_deterministic_and_varies_with_the_index():
    a, b = generate_sample(3, 7, size=(192, 256)), generate_sample(3, 7, size=(192, 256))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    c = generate_sample(3, 8, size=(192, 256))
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (192, 256, 3) and a.image.dtype == np.uint8
    assert a.label.shape == (192, 256) and a.label.dtype == np.uint8


def test_generator_labels_sites_tones_and_sizes():
    tones, counts, ratios, wheal_only, flare_only = set(), set(), [], 0, 0
    for i in range(40):
        s = generate_sample(0, i, size=(256, 320))
        tones.add(s.fitzpatrick)
        counts.add(len(s.sites))
        assert set(np.unique(s.label)) <= {0, ERYTHEMA_HALO, WHEAL}
        assert 2 <= len(s.sites) <= 12 and s.sites[0].positive  # histamine control
        assert len(s.sites) <= s.rows * s.cols and 20 <= s.spacing_mm <= 35
        for site in s.sites:
            # Measured on the drawn outlines: wheals 0-15 mm, flares up to 40 mm drawn
            # (an irregular outline's mean diameter a little more).
            assert 0 <= site.wheal_mm <= 17 and 0 <= site.erythema_mm <= 46
            assert site.wheal_mm <= site.erythema_mm + 1e-9  # the whole reaction holds the wheal
            if site.wheal_mm > 0 and site.erythema_mm > site.wheal_mm:
                ratios.append(site.wheal_area_mm2 / site.erythema_area_mm2)
            wheal_only += site.wheal_mm > 0 and site.erythema_mm == site.wheal_mm
            flare_only += site.wheal_mm == 0 and site.erythema_mm > 0
        # the site map marks the punctures (all but those beyond the arm's edge or the frame)
        marked = [bool(s.site_mask[max(0, y - 2):y + 3, max(0, x - 2):x + 3].any())
                  for x, y in ((int(round(v[0])), int(round(v[1]))) for v in (t.center_xy for t in s.sites))]
        assert sum(marked) >= 0.7 * len(marked)
    assert len(tones) >= 4 and len(counts) >= 4
    # Real tests: the wheal is typically 4-9 % of the flare's area.
    assert 0.04 <= float(np.median(ratios)) <= 0.10
    assert wheal_only >= 1 and flare_only >= 1


def test_generator_forced_reactions_extra_reactions_and_sizes_up_to_12_mp():
    s = generate_sample(2, 3, size=(300, 400), grid=(2, 3), spacing_mm=25, oblique=False,
                        reactions={0: (0.0, 0.0), 2: (6.0, 24.0)}, extra=[(10.0, 0.0, 4.0, 10.0)])
    assert not s.sites[0].positive and s.sites[0].wheal_mm == 0
    assert s.sites[2].wheal_mm == pytest.approx(6.0, rel=0.2) and s.sites[2].erythema_mm == pytest.approx(24, rel=0.2)
    assert len(s.extra) == 1 and s.extra[0].row == -1 and s.extra[0].wheal_mm > 0
    big = generate_sample(2, 4, size=(3000, 4000), grid=(2, 6))
    assert big.image.shape == (3000, 4000, 3) and big.px_per_mm > 15


def test_negative_sites_carry_no_label_and_a_photo_without_reaction_is_possible():
    s = generate_sample(1, 2, size=(256, 320), n_sites=4, negative_fraction=1.0, positive_control=False)
    assert s.positive_sites == 0 and not s.label.any()
    assert s.image.std() > 3  # skin texture, lighting, punctures and pen marks are still there


# --------------------------------------------------------------------------- U-Net


def test_unet_keeps_the_input_size_and_rejects_odd_sizes():
    net = UNet(num_classes=3, base_width=4, depth=4, batch_norm=True).eval()
    with torch.inference_mode():
        assert net(torch.zeros(2, 3, 64, 96)).shape == (2, 3, 64, 96)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.zeros(1, 3, 40, 64))


def test_paper_config_is_the_papers_recipe_and_builds_the_full_width_unet():
    cfg = load_config("skin_prick_paper")
    assert (cfg.model.base_width, cfg.model.depth, cfg.model.batch_norm) == (64, 4, False)
    assert cfg.data.input_size == 512 and cfg.data.split == (0.7, 0.1, 0.2)
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.batch_size) == ("adam", 0.001, 32)
    assert (cfg.optim.epochs, cfg.optim.early_stopping_patience, cfg.loss.name) == (100, 15, "dice")
    a = cfg.data.augment
    assert (a.rotation_deg, a.hflip, a.vflip, a.shift, a.zoom) == (30.0, 0.5, 0.5, 0.3, 0.3)
    net = build_unet(cfg.model)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 18 and convs[0].out_channels == 64 and max(c.out_channels for c in convs) == 1024
    ups = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(ups) == 4 and all(u.kernel_size == (2, 2) and u.stride == (2, 2) for u in ups)
    shipped = load_config("skin_prick_shipped")
    assert shipped.model.base_width < 64


def test_config_round_trips_through_yaml(tmp_path):
    cfg = PrickConfig(name="x", model=UNetConfig(base_width=8))
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_dice_loss_is_zero_for_a_perfect_prediction_and_high_for_a_wrong_one():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6] = 1
    target[0, 3:5, 3:5] = 2
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(perfect, target).item() < 0.02
    assert soft_dice_loss(perfect.flip(1), target).item() > 0.5


# --------------------------------------------------------------------------- measurements


def test_rectangle_diameters_by_hand():
    mask = np.zeros((100, 100), bool)
    mask[10:40, 20:60] = True  # 40 wide, 30 high
    d = diameters(mask)
    assert d.longest == pytest.approx(50.0)  # the diagonal
    assert d.perpendicular == pytest.approx(48.0)  # 2 * 40 * 30 / 50
    assert d.mean == pytest.approx(49.0)
    # Pixel Spacing (row 0.2 mm, column 0.1 mm): 4 mm wide, 6 mm high.
    dm = diameters(mask, spacing=(0.2, 0.1))
    assert dm.longest == pytest.approx(np.hypot(4, 6))
    assert dm.perpendicular == pytest.approx(2 * 4 * 6 / np.hypot(4, 6))
    assert diameters(np.zeros((5, 5), bool)).mean == 0.0


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
def test_ellipse_diameters_match_its_axes_whatever_the_rotation(angle):
    mask = np.zeros((200, 200), np.uint8)
    cv2.ellipse(mask, (100, 100), (40, 20), angle, 0, 360, 1, -1)
    d = diameters(mask.astype(bool))
    assert d.longest == pytest.approx(81.0, abs=1.5)  # 2a + one pixel (outer pixel corners)
    assert d.perpendicular == pytest.approx(41.0, abs=1.5)
    assert d.mean == pytest.approx(61.0, abs=1.5)


def test_wheal_erythema_ratio_and_nesting():
    erythema = np.zeros((60, 60), bool)
    erythema[10:30, 10:30] = True  # 400 px
    wheal = np.zeros_like(erythema)
    wheal[15:25, 15:25] = True  # 100 px
    (r,) = find_reactions(erythema & ~wheal, wheal)  # erythema given without the wheal: it is added
    assert (r.erythema_pixels, r.wheal_pixels, r.ratio) == (400, 100, 0.25)
    outline = r.outline_xy()
    assert outline[:, 0].min() >= 9 and outline[:, 0].max() <= 30


def test_reactions_are_numbered_in_reading_order_and_speckle_is_dropped():
    erythema = np.zeros((200, 300), bool)
    wheal = np.zeros_like(erythema)
    centres = [(250, 52), (50, 48), (150, 55), (60, 150), (240, 148)]  # x, y; two rows
    for x, y in centres:
        cv2.circle(erythema.view(np.uint8), (x, y), 20, 1, -1)
        cv2.circle(wheal.view(np.uint8), (x, y), 6, 1, -1)
    erythema[195:197, 5:7] = True  # 4 px speckle
    reactions = find_reactions(erythema, wheal, min_area_px=20)
    xs_ys = [tuple(round(v, -1) for v in r.centroid_xy) for r in reactions]
    assert xs_ys == [(50, 50), (150, 60), (250, 50), (60, 150), (240, 150)]
    assert reading_order([]) == []


def test_touching_halos_are_split_between_their_wheals():
    erythema = np.zeros((100, 160), np.uint8)
    wheal = np.zeros_like(erythema)
    cv2.circle(erythema, (50, 50), 30, 1, -1)
    cv2.circle(erythema, (105, 50), 28, 1, -1)  # overlaps the first halo
    cv2.circle(wheal, (50, 50), 8, 1, -1)
    cv2.circle(wheal, (105, 50), 7, 1, -1)
    left, right = find_reactions(erythema.astype(bool), wheal.astype(bool), min_area_px=10)
    assert left.erythema_pixels + right.erythema_pixels == np.count_nonzero(erythema)
    assert left.centroid_xy[0] < 75 < right.centroid_xy[0]
    assert left.wheal_pixels == np.count_nonzero(wheal[:, :78]) and right.wheal_pixels == np.count_nonzero(wheal[:, 78:])
    # One halo with one wheal and an erythema-only halo stay one reaction each; no wheal -> ratio 0.
    only = np.zeros((60, 60), bool)
    only[10:40, 10:40] = True
    (r,) = find_reactions(only, np.zeros_like(only))
    assert r.wheal_pixels == 0 and r.ratio == 0.0


def test_merged_flares_of_a_12_mp_photograph_split_on_blocks_as_at_full_resolution():
    """Two touching 40 mm flares at ~15 px/mm: split on 3 x 3 blocks, the parts cover the
    component exactly, each holds its wheal, and they agree with the full-resolution split."""
    from models.prick.measure import _split_by_wheals

    erythema = np.zeros((700, 1300), np.uint8)
    wheal = np.zeros_like(erythema)
    cv2.circle(erythema, (340, 350), 300, 1, -1)
    cv2.ellipse(erythema, (900, 350), (330, 280), 15, 0, 360, 1, -1)
    cv2.circle(wheal, (340, 350), 90, 1, -1)
    cv2.circle(wheal, (920, 330), 6, 1, -1)  # a 1 mm wheal: still a seed on the coarse grid
    component, wheal = erythema.astype(bool), wheal.astype(bool)
    blocks = _split_by_wheals(component, wheal, min_wheal_px=4)
    full = _split_by_wheals(component, wheal, min_wheal_px=4, max_side=10_000)
    assert len(blocks) == len(full) == 2
    assert np.array_equal(blocks[0] | blocks[1], component) and not (blocks[0] & blocks[1]).any()
    assert blocks[0][350, 340] and blocks[1][330, 920]
    for b, f in zip(blocks, full):
        assert np.count_nonzero(b & f) / np.count_nonzero(b | f) > 0.99


def test_bland_altman_by_hand():
    ba = bland_altman([10, 12, 14, 16], [9, 13, 12, 15])  # differences 1, -1, 2, 1
    assert ba["n"] == 4
    assert ba["mean_difference"] == pytest.approx(0.75)
    sd = np.sqrt(4.75 / 3)
    assert ba["sd_difference"] == pytest.approx(sd)
    assert ba["loa_lower"] == pytest.approx(0.75 - 1.96 * sd)
    assert ba["loa_upper"] == pytest.approx(0.75 + 1.96 * sd)
    with pytest.raises(ValueError):
        bland_altman([1.0], [1.0])


# --------------------------------------------------------------------------- training / evaluation


def _tiny_config(tmp_path):
    cfg = PrickConfig(name="skin_prick_tiny", version="0.0.1")
    cfg.model = UNetConfig(base_width=4, depth=2, batch_norm=True)
    cfg.data.input_size, cfg.data.train_crop = 64, 32
    cfg.data.synthetic_pool, cfg.data.val_samples = 4, 2
    cfg.optim.batch_size, cfg.optim.epochs, cfg.optim.iterations_per_epoch = 2, 2, 1
    cfg.loss.name = "dice_ce"
    path = tmp_path / "tiny.yaml"
    save_config(cfg, path)
    return path


def test_train_writes_weights_config_and_history_that_inference_loads(tmp_path):
    from models.prick.inference import PrickSegmenter
    from models.prick.train import main as train_main

    assert train_main(["--config", str(_tiny_config(tmp_path)), "--out", str(tmp_path / "run")]) == 0
    weights = tmp_path / "run" / "skin_prick_tiny.pt"
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["epochs_run"] == 2 and history["iterations"] == 2
    seg = PrickSegmenter.load(weights, num_threads=1)
    assert seg.name == "skin_prick_tiny" and len(seg.weights_sha256) == 64
    assert all(v.dtype == torch.float16 for v in torch.load(weights).values() if torch.is_floating_point(v))
    erythema, wheal = seg.predict(generate_sample(0, 1, size=(90, 130)).image)
    assert erythema.shape == wheal.shape == (90, 130) and not (wheal & ~erythema).any()


def test_sigmoid_head_trains_on_site_marks_resumes_and_predicts_a_panel(tmp_path):
    from models.prick.data import SITE_BIT, SITE_KNOWN, SyntheticPrickDataset, decode_targets
    from models.prick.inference import PrickSegmenter
    from models.prick.losses import sigmoid_maps_loss
    from models.prick.train import main as train_main

    image, label = SyntheticPrickDataset(1, 0, 96, with_sites=True, scale=(0.8, 1.2)).get(0)
    assert image.shape == (96, 96, 3) and (label & SITE_KNOWN).any() and (label & SITE_BIT).any()
    t, known = decode_targets(torch.from_numpy(label[None]).long())
    assert known.tolist() == [True] and t.shape == (1, 3, 96, 96)
    assert torch.equal(t[0, 1].bool(), torch.from_numpy((label & 3) == WHEAL))
    # A perfect prediction scores far lower than its opposite.
    perfect = (t * 2 - 1) * 20
    assert sigmoid_maps_loss(perfect, torch.from_numpy(label[None]).long()) < 0.05
    assert sigmoid_maps_loss(-perfect, torch.from_numpy(label[None]).long()) > 1.0

    cfg = load_config(_tiny_config(tmp_path))
    cfg.model.head, cfg.loss.name = "sigmoid", "sigmoid_dice_bce"
    cfg.data.synthetic_scale = (0.8, 1.2)
    cfg.optim.epochs = 1
    save_config(cfg, tmp_path / "sig.yaml")
    out = tmp_path / "run"
    assert train_main(["--config", str(tmp_path / "sig.yaml"), "--out", str(out)]) == 0
    assert (out / "checkpoint.pt").exists()
    assert train_main(["--config", str(tmp_path / "sig.yaml"), "--out", str(out), "--epochs", "2", "--resume"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert history["epochs_run"] == 2 and history["iterations"] == 2  # epoch 1 was not repeated
    seg = PrickSegmenter.load(out / "skin_prick_tiny.pt", num_threads=1)
    assert seg.has_site_map
    pred = seg.predict_panel(generate_sample(0, 1, size=(90, 130)).image)
    assert pred.erythema.shape == (90, 130) and not (pred.wheal & ~pred.erythema).any()
    assert isinstance(pred.site_marks_xy, list)


def test_folder_dataset_training_and_evaluation_with_cross_validation(tmp_path, capsys):
    from models.prick.evaluate import main as evaluate_main
    from models.prick.evaluate import write_synthetic_folder

    root = tmp_path / "data"
    write_synthetic_folder(root, 4, seed=5, size=96, offset=0)
    assert sorted(p.name for p in (root / "masks").iterdir())[0] == "prick_0000.png"
    out = tmp_path / "cv"
    code = evaluate_main(["--cv", "2", "--config", str(_tiny_config(tmp_path)), "--data", "folder",
                          "--folder", str(root), "--epochs", "1", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["folds"]) == 2 and set(metrics["classes"]) == {"erythema", "wheal"}
    assert "2-fold cross-validation" in capsys.readouterr().out
    # Evaluate one fold's weights on the folder: JSON + Bland-Altman figure.
    code = evaluate_main(["--weights", str(out / "fold1" / "skin_prick_tiny_fold1.pt"), "--data", "folder",
                          "--folder", str(root), "--out", str(tmp_path / "eval")])
    assert code == 0
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["images"] == 4 and 0 <= result["classes"]["erythema"]["dice_mean"] <= 100
    assert (tmp_path / "eval" / "bland_altman.png").stat().st_size > 1000


def test_folder_split_is_the_papers_7_1_2_and_keeps_a_training_sample():
    from models.prick.data import kfold, split_names

    names = [f"n{i}" for i in range(20)]
    train, val, test = split_names(names, (0.7, 0.1, 0.2), seed=0)
    assert (len(train), len(val), len(test)) == (14, 2, 4) and sorted(train + val + test) == sorted(names)
    train, val, test = split_names(["a", "b"], (0.7, 0.1, 0.2), seed=0)
    assert len(train) >= 1 and sorted(train + val + test) == ["a", "b"]
    folds = kfold(names, 5, seed=0)
    assert len(folds) == 5 and sorted(n for _, t in folds for n in t) == sorted(names)
    assert all(not set(tr) & set(te) for tr, te in folds)


def test_flare_only_strips_along_the_arm_edge_are_dropped_flares_kept():
    """The net reads the shading where the arm meets a skin-coloured background as a long
    band of faint erythema (one 1024 px photograph: +97 % erythema area); it is no reaction."""
    ery = np.zeros((400, 1200), bool)
    ery[10:40, 20:1180] = True  # a band along the edge, solid and convex
    cv2.circle(ery.view(np.uint8), (300, 250), 60, 1, -1)  # a flare without a wheal
    cv2.circle(ery.view(np.uint8), (700, 250), 50, 1, -1)
    wheal = np.zeros_like(ery)
    cv2.circle(wheal.view(np.uint8), (700, 250), 15, 1, -1)  # a flare with its wheal
    kept = drop_strokes(find_reactions(ery, wheal, min_area_px=10))
    centres = sorted((round(r.centroid_xy[0]), round(r.centroid_xy[1])) for r in kept)
    assert centres == [(300, 250), (700, 250)]


def test_pieces_of_a_flare_join_the_reaction_beside_them_not_a_reaction_with_its_own_mark():
    from models.prick.measure import merge_flare_fragments

    ery = np.zeros((300, 600), np.uint8)
    wheal = np.zeros_like(ery)
    cv2.circle(ery, (150, 150), 60, 1, -1)
    cv2.circle(wheal, (150, 150), 15, 1, -1)
    cv2.ellipse(ery, (150, 150), (75, 75), 0, 300, 360, 1, 8)  # a piece of the same flare, 5-10 px out
    cv2.circle(ery, (450, 150), 40, 1, -1)  # a flare-only reaction at its own prick mark
    cv2.circle(ery, (330, 150), 10, 1, -1)  # redness between them, touching neither
    reactions = find_reactions(ery.astype(bool), wheal.astype(bool), min_area_px=10)
    assert len(reactions) == 4
    merged = merge_flare_fragments(reactions, [(150, 150), (450, 150)], max_gap_px=12)
    assert len(merged) == 3
    big = max(merged, key=lambda r: r.erythema_pixels)
    assert big.wheal.any()
    assert big.erythema_pixels == sum(r.erythema_pixels for r in reactions
                                      if abs(r.centroid_xy[0] - 150) < 100)


def _arm_with_a_faint_flare(skin_rgb, redness: float, seed: int = 0):
    """Skin with one flare (radius 100 px, blurred edge) and its pale wheal (radius 20 px);
    the arm ends 20 px inside the flare's right edge, on a pink sheet. Returns the photograph,
    the flare on the skin (the truth) and the wheal."""
    rng = np.random.default_rng(seed)
    h, w = 360, 480
    img = np.ones((h, w, 3), np.float32) * np.array(skin_rgb, np.float32)
    img *= 1 + rng.normal(0, 0.015, (h, w, 1)).astype(np.float32)
    flare = np.zeros((h, w), np.float32)
    cv2.circle(flare, (240, 180), 100, 1.0, -1)
    red = redness * np.clip(cv2.GaussianBlur(flare, (0, 0), 8) * 1.1, 0, 1)
    img[..., 0] *= 1 + 0.06 * red
    img[..., 1] *= 1 - 0.32 * red
    img[..., 2] *= 1 - 0.26 * red
    wheal = np.zeros((h, w), np.uint8)
    cv2.circle(wheal, (240, 180), 20, 1, -1)
    img[wheal.astype(bool)] *= np.array([1.05, 1.12, 1.10], np.float32)
    img[:, 320:] = (225, 150, 200)  # a pink sheet
    flare[:, 320:] = 0
    return np.clip(img, 0, 255).astype(np.uint8), flare.astype(bool), wheal.astype(bool)


def test_a_faint_flare_the_net_read_in_part_is_taken_to_its_edge_not_into_a_pink_sheet():
    from models.prick.config import FlareEdgeConfig
    from models.prick.measure import refine_flare_edges

    rgb, flare, wheal = _arm_with_a_faint_flare((232, 196, 178), redness=0.35)
    net = np.zeros_like(wheal, np.uint8)
    cv2.circle(net, (240, 180), 70, 1, -1)  # the net saw the flare's redder middle only
    cv2.circle(net, (100, 60), 12, 1, -1)  # another reaction beside it, left alone
    reactions = find_reactions(net.astype(bool), wheal, min_area_px=10)
    config = FlareEdgeConfig(enabled=True)
    refined = refine_flare_edges(reactions, rgb, config)
    big = max(refined, key=lambda r: r.erythema_pixels)
    ery, wh = big.full_masks(flare.shape)
    assert abs(np.count_nonzero(ery) / np.count_nonzero(flare) - 1) < 0.10  # 70 px in: -51 %
    assert np.count_nonzero(ery[:, 320:]) == 0  # the pink sheet is not flare
    assert np.array_equal(wh, wheal)  # the wheal is the net's
    small = min(refined, key=lambda r: r.erythema_pixels)
    assert small.erythema_pixels == min(r.erythema_pixels for r in reactions)


def test_a_flare_hardly_redder_than_dark_skin_is_kept_as_the_net_read_it():
    from models.prick.config import FlareEdgeConfig
    from models.prick.measure import refine_flare_edges

    rgb, flare, wheal = _arm_with_a_faint_flare((92, 60, 44), redness=0.05)
    net = np.zeros_like(wheal, np.uint8)
    cv2.circle(net, (240, 180), 70, 1, -1)
    reactions = find_reactions(net.astype(bool), wheal, min_area_px=10)
    refined = refine_flare_edges(reactions, rgb, FlareEdgeConfig(enabled=True))
    assert [r.erythema_pixels for r in refined] == [r.erythema_pixels for r in reactions]


def test_a_ragged_part_read_of_a_flare_has_its_gaps_filled_but_grows_no_further():
    """The net's read of a faint flare with deep gaps in it (solidity under 0.6, like a flare
    run together with a sheet): the gaps that are flare are filled, nothing beyond its outline."""
    from models.prick.config import FlareEdgeConfig
    from models.prick.measure import refine_flare_edges, solidity

    rgb, flare, wheal = _arm_with_a_faint_flare((232, 196, 178), redness=0.35)
    net = np.zeros_like(wheal, np.uint8)
    cv2.circle(net, (240, 180), 85, 1, -1)
    for angle in range(0, 360, 45):  # eight deep wedges cut out of the read
        cv2.ellipse(net, (240, 180), (85, 85), 0, angle, angle + 30, 0, -1)
    cv2.circle(net, (240, 180), 25, 1, -1)
    net = net.astype(bool) | wheal
    assert solidity(net) < 0.6
    (read,) = find_reactions(net, wheal, min_area_px=10)
    (refined,) = refine_flare_edges([read], rgb, FlareEdgeConfig(enabled=True))
    ery, _ = refined.full_masks(flare.shape)
    hull = np.zeros_like(net, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero(net.astype(np.uint8))), 1)
    hull = cv2.dilate(hull, np.ones((5, 5), np.uint8)).astype(bool)  # the read's resampling: 2 px
    assert np.count_nonzero(ery & ~hull) == 0
    assert np.count_nonzero(ery & flare) > 1.5 * np.count_nonzero(net & flare)  # the wedges were flare


def test_reaction_hysteresis_keeps_unsure_pixels_only_where_they_join_a_sure_reaction():
    from models.prick.inference import grown_from

    sure = np.zeros((40, 40), bool)
    sure[10:14, 10:14] = True
    unsure = np.zeros((40, 40), bool)
    unsure[6:20, 6:20] = True  # a faint flare around the sure core
    unsure[30:34, 30:34] = True  # an unsure blob on its own: no reaction
    grown = grown_from(sure, unsure)
    assert grown[6:20, 6:20].all() and not grown[30:34, 30:34].any()
    assert grown_from(np.zeros_like(sure), unsure).sum() == 0


def test_the_sigmoid_head_applies_the_grow_threshold_from_its_config():
    from models.prick.inference import label_maps_from_logits

    net = build_unet(UNetConfig(base_width=4, depth=2, num_classes=3, head="sigmoid"))
    net.thresholds = (0.7, 0.8, 0.5)
    p = torch.full((1, 3, 16, 16), 0.1)
    p[0, 0, 4:12, 4:12] = 0.5  # unsure flare ...
    p[0, 0, 7:9, 7:9] = 0.9  # ... around a sure centre
    p[0, 0, 0:2, 14:16] = 0.5  # unsure, alone
    logits = torch.logit(p)
    assert (label_maps_from_logits(net, logits)[0] > 0).sum() == 4
    net.reaction_grow_threshold = 0.4
    grown = label_maps_from_logits(net, logits)[0] > 0
    assert grown[4:12, 4:12].all() and not grown[0:2, 14:16].any()


def test_independent_painter_is_deterministic_and_its_truth_matches_the_issue_arm():
    from models.prick.independent_painter import paint_arm

    a, b = paint_arm(3, 1, (384, 512)), paint_arm(3, 1, (384, 512))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.image, paint_arm(3, 2, (384, 512)).image)
    assert len(a.sites) == 6 and set(np.unique(a.label)) <= {0, 1, 2}
    wheals = sorted(s[2] for s in a.sites)
    assert 7 <= wheals[-1] <= 13 and all(1.5 <= w <= 5 for w in wheals[:-1])
    for x, y, wheal_mm, flare_mm in a.sites:
        assert a.label[int(round(y)), int(round(x))] == 2  # the prick sits in its wheal
        assert flare_mm > wheal_mm
    portrait = paint_arm(3, 4, (512, 384), fitzpatrick=6)
    assert portrait.image.shape == (512, 384, 3) and portrait.fitzpatrick == 6


def test_training_pool_mixes_in_the_independent_painter_without_site_marks():
    from models.prick.data import SITE_KNOWN, SyntheticPrickDataset

    d = SyntheticPrickDataset(5, 13, 128, with_sites=True, independent_fraction=0.4)
    painter = [d._independent(i) for i in range(5)]
    assert sum(painter) == 2
    for i, by_painter in enumerate(painter):
        image, label = d.get(i)
        assert image.shape == (128, 128, 3)
        assert bool((label & SITE_KNOWN).any()) is (not by_painter)  # its sites are not trained on
    assert not any(SyntheticPrickDataset(5, 13, 128, independent_fraction=0.0)._independent(i) for i in range(5))


def test_reading_decisions_are_scored_against_the_rule_applied_to_the_truth():
    from types import SimpleNamespace

    from models.prick.evaluate_arms import eval_panel, tally_decisions, truth_decisions

    panel = eval_panel()  # histamine, saline, 10 allergens; positive: wheal >= saline + 3 mm
    wheals = [6.0, 1.0, 4.5, 3.9, 0.0, 8.0] + [0.0] * 6
    sites = [SimpleNamespace(wheal_mm=w) for w in wheals]
    truth, valid = truth_decisions(panel, sites)
    assert valid and truth[:6] == ["positive", "negative", "positive", "negative", "negative", "positive"]
    got = ["positive", "negative", "negative", "positive", "negative", "positive"] + ["negative"] * 5 + ["not readable"]
    reading = SimpleNamespace(sites=[SimpleNamespace(result=r) for r in got], valid=True)
    tally = {"allergen": {"tp": 0, "fn": 0, "fp": 0, "tn": 0, "not_readable": 0},
             "validity": {"agree": 0, "disagree": 0, "unknown": 0}}
    tally_decisions(tally, panel, sites, reading)
    assert tally["allergen"] == {"tp": 1, "fn": 1, "fp": 1, "tn": 6, "not_readable": 1}
    assert tally["validity"] == {"agree": 1, "disagree": 0, "unknown": 0}
    sites[1].wheal_mm = 3.5  # a reacting saline: the truth's test is invalid
    assert truth_decisions(panel, sites)[1] is False
