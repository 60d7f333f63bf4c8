"""models.scalp: generator, network shapes, focal loss, metrics, CSV data, training, evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.scalp import INDICATORS
from models.scalp.config import ScalpModelConfig, load_scalp_config
from models.scalp.data import CsvError, CsvScalpDataset, letterbox, prepare_image, read_grades_csv
from models.scalp.losses import MultiHeadFocalLoss, class_weights_from_labels
from models.scalp.metrics import confusion_matrix, hamming_accuracy, macro_f1, per_grade_f1, scalp_metrics
from models.scalp.synthetic import GRADE_FREQUENCIES, draw_grades, generate_sample, render, sample_rng, write_dataset


# ----------------------------------------------------------------------------- generator
def test_generator_is_deterministic_by_seed_and_index():
    a, b = generate_sample(7, 3), generate_sample(7, 3)
    assert a.image.shape == (480, 640, 3) and a.image.dtype == np.uint8
    assert np.array_equal(a.image, b.image) and np.array_equal(a.grades, b.grades)
    c = generate_sample(7, 4)
    assert not np.array_equal(a.image, c.image)
    assert generate_sample(7, 3).grades.tolist() == draw_grades(sample_rng(7, 3)).tolist()


def test_grade_frequencies_follow_the_configured_table():
    n = 20_000
    grades = np.stack([draw_grades(sample_rng(11, i)) for i in range(n)])
    for l, name in enumerate(INDICATORS):
        observed = np.bincount(grades[:, l], minlength=4) / n
        assert np.allclose(observed, GRADE_FREQUENCIES[name], atol=0.015), (name, observed)
    # SEEDS.md D: follicular erythema/pustules grade 0 in 16,963 of 17,785 images
    assert GRADE_FREQUENCIES["follicular_erythema_pustules"][0] == pytest.approx(16963 / 17785, abs=1e-3)


def test_rendered_signs_grow_with_the_grade():
    def draw(**grades):
        g = np.array([grades.get(k, 0) for k in INDICATORS])
        return render(g, np.random.default_rng(0)).astype(np.float32)

    base = draw()
    white = lambda im: np.count_nonzero(im.min(-1) > 225)  # noqa: E731
    assert white(draw(dandruff=3)) > white(draw(dandruff=1)) > white(base)
    redness = lambda im: float((im[..., 0] - im[..., 1]).mean())  # noqa: E731
    assert redness(draw(interfollicular_erythema=3)) > redness(base) + 10
    dark = lambda im: np.count_nonzero(im.mean(-1) < 60)  # noqa: E731
    assert dark(draw(hair_loss=3)) < 0.5 * dark(base)


# ----------------------------------------------------------------------------- network
def test_six_heads_of_four_grades():
    from models.scalp.network import ScalpNet

    torch.manual_seed(0)
    net = ScalpNet(ScalpModelConfig(backbone="efficientnet-b0")).eval()
    with torch.inference_mode():
        out = net(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 6, 4)
    with pytest.raises(ValueError, match="download"):
        ScalpNet(ScalpModelConfig(backbone="efficientnet-b0", pretrained=True))


def test_paper_config_is_the_papers_recipe():
    cfg = load_scalp_config("scalp_paper")
    assert (cfg.model.backbone, cfg.data.input_size) == ("efficientnet-b4", 448)
    assert (cfg.loss.name, cfg.loss.gamma) == ("focal", 2.0)
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.batch_size) == ("adamw", 1e-4, 16)
    assert (cfg.optim.epochs, cfg.optim.early_stop_patience) == (30, 5)
    shipped = load_scalp_config("scalp_shipped")
    assert shipped.model.backbone == "efficientnet-b0" and shipped.data.input_size == 224


# ----------------------------------------------------------------------------- loss
def test_focal_loss_matches_hand_computation():
    logits = torch.tensor([[[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]])  # (1, 2, 4)
    target = torch.tensor([[0, 1]])
    e = math.e
    p0 = e**2 / (e**2 + 3)  # true grade 0 of indicator 0
    p1 = 1 / (e + 3)  # true grade 1 of indicator 1
    fl = lambda p, g: -((1 - p) ** g) * math.log(p)  # noqa: E731
    expected = (fl(p0, 2) + fl(p1, 2)) / 2
    assert float(MultiHeadFocalLoss(2.0)(logits, target)) == pytest.approx(expected, rel=1e-5)
    # gamma 0 = cross-entropy
    ce = float(torch.nn.functional.cross_entropy(logits.reshape(-1, 4), target.reshape(-1)))
    assert float(MultiHeadFocalLoss(0.0)(logits, target)) == pytest.approx(ce, rel=1e-5)
    w = torch.ones(2, 4)
    w[1, 1] = 3.0
    expected_w = (fl(p0, 2) + 3 * fl(p1, 2)) / 2
    assert float(MultiHeadFocalLoss(2.0, w)(logits, target)) == pytest.approx(expected_w, rel=1e-5)


def test_class_weights_inverse_frequency():
    labels = np.array([[0], [0], [0], [1]])  # grade freq 0.75, 0.25, absent, absent
    assert class_weights_from_labels(labels, "none") is None
    w = class_weights_from_labels(labels, "inverse")[0]
    raw = np.array([1 / 0.75, 4, 4, 4])  # absent grades take the rarest present grade's weight
    assert np.allclose(w, raw / raw.mean())
    ws = class_weights_from_labels(labels, "inverse_sqrt")[0]
    raw = np.array([0.75**-0.5, 2, 2, 2])
    assert np.allclose(ws, raw / raw.mean())


# ----------------------------------------------------------------------------- metrics
def test_metrics_match_hand_computation():
    truth = np.array([0, 0, 1, 1, 2, 3])
    pred = np.array([0, 1, 1, 1, 3, 3])
    cm = confusion_matrix(truth, pred)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]]
    # F1_k = 2TP / (2TP + FP + FN): grade0 2/3, grade1 4/5, grade2 0, grade3 2/3
    assert np.allclose(per_grade_f1(cm), [2 / 3, 4 / 5, 0.0, 2 / 3])
    assert macro_f1(truth, pred) == pytest.approx((2 / 3 + 4 / 5 + 0 + 2 / 3) / 4)
    # a grade absent from truth and prediction has no F1 and is left out of the mean
    assert macro_f1(np.array([0, 0, 1]), np.array([0, 1, 1])) == pytest.approx((2 / 3 + 2 / 3) / 2)
    t = np.array([[0, 1], [2, 3], [1, 1]])
    p = np.array([[0, 1], [2, 0], [0, 1]])
    assert hamming_accuracy(t, p) == pytest.approx(4 / 6)
    m = scalp_metrics(t, p, ("a", "b"))
    a = (1 / (1 + 0.5 * 1) + 0 + 1) / 3  # grade0: tp1 fp1 -> 2/3; grade1: tp0 fn1 -> 0; grade2: 1
    b = (0 + 1 + 0) / 3  # grade0: fp1 -> 0; grade1: tp2 -> 1; grade3: fn1 -> 0
    assert m["per_indicator"]["a"]["macro_f1"] == pytest.approx(a)
    assert m["per_indicator"]["b"]["macro_f1"] == pytest.approx(b)
    assert m["overall_macro_f1"] == pytest.approx((a + b) / 2)
    assert m["hamming_accuracy"] == pytest.approx(4 / 6)


# ----------------------------------------------------------------------------- data
def test_letterbox_keeps_aspect_and_pads():
    img = np.full((480, 640, 3), 200, np.uint8)
    boxed = letterbox(img, 224)
    assert boxed.shape == (224, 224, 3)
    assert boxed[:10].max() == 0 and boxed[-10:].max() == 0 and boxed[112, :].min() == 200
    assert prepare_image(img, 64).shape == (3, 64, 64)


def test_csv_dataset_loads_the_public_layout(tmp_path):
    csv_path = write_dataset(tmp_path / "ds", n=3, seed=5)
    header = csv_path.read_text().splitlines()[0]
    assert header == "image," + ",".join(INDICATORS)
    ds = CsvScalpDataset(csv_path)
    assert len(ds) == 3
    image, grades = ds.get(1)
    s = generate_sample(5, 1)
    assert image.shape == (480, 640, 3) and grades.tolist() == s.grades.tolist()
    assert np.array_equal(image, s.image)  # PNG is lossless
    # images relative to another root
    moved = tmp_path / "labels_elsewhere.csv"
    moved.write_text(csv_path.read_text())
    assert len(CsvScalpDataset(moved, image_root=tmp_path / "ds")) == 3


@pytest.mark.parametrize(
    "content, message",
    [
        ("image,micro_keratin\nimages/scalp_000000.png,1\n", "missing column"),
        ("image," + ",".join(INDICATORS) + "\nimages/scalp_000000.png,0,0,4,0,0,0\n", "0-3"),
        ("image," + ",".join(INDICATORS) + "\nimages/scalp_000000.png,0,x,0,0,0,0\n", "integers"),
        ("image," + ",".join(INDICATORS) + "\nimages/missing.png,0,0,0,0,0,0\n", "not found"),
    ],
)
def test_csv_errors_name_the_problem(tmp_path, content, message):
    write_dataset(tmp_path, n=1, seed=0)
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    with pytest.raises(CsvError, match=message):
        read_grades_csv(bad)


# ----------------------------------------------------------------------------- train + evaluate
def test_training_from_csv_writes_loadable_weights_and_evaluation_outputs(tmp_path):
    from models.scalp import evaluate, train
    from models.scalp.inference import ScalpGrader

    csv_path = write_dataset(tmp_path / "ds", n=10, seed=2)
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(
        "name: scalp_tiny\nmodel: {backbone: efficientnet-b0}\n"
        "data: {input_size: 64, val_fraction: 0.2}\noptim: {batch_size: 4, epochs: 1, lr: 0.001}\n"
        "loss: {class_weighting: inverse_sqrt}\n"
    )
    summary = train.main(["--config", str(cfg_path), "--csv", str(csv_path), "--out", str(tmp_path / "run")])
    weights = tmp_path / "run" / "scalp_tiny.pt"
    assert weights.is_file() and weights.with_suffix(".yaml").is_file()
    assert summary["best_epoch"] == 1 and len(summary["history"]) == 1
    grader = ScalpGrader.load(weights, num_threads=2)
    r = grader.predict(generate_sample(2, 0).image)
    assert r.grades.shape == (6,) and r.probabilities.shape == (6, 4)
    assert np.allclose(r.probabilities.sum(1), 1, atol=1e-5)
    metrics = evaluate.main(["--weights", str(weights), "--csv", str(csv_path), "--out", str(tmp_path / "eval")])
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(saved["per_indicator"]) == set(INDICATORS)
    assert saved["overall_macro_f1"] == pytest.approx(metrics["overall_macro_f1"])
    assert saved["paper"]["overall_macro_f1"] == 0.518
    figure = cv2.imread(str(tmp_path / "eval" / "confusion_matrices.png"))
    assert figure is not None and figure.shape[1] > figure.shape[0]  # 2 rows x 3 columns
    assert len((tmp_path / "eval" / "predictions.csv").read_text().splitlines()) == 11
