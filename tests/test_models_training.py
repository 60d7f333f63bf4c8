"""Training (synthetic and user folder), evaluation and the LesionSegmenter contract on
tiny runs: 2 iterations of a narrow DDRNet on 64-px inputs."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.facial import evaluate as evaluate_mod
from models.facial import train as train_mod
from models.config import DataConfig, LossConfig, ModelConfig, OptimConfig, TrainConfig, load_config
from models.facial.inference import LesionSegmenter, load_state_dict
from models.facial.synthetic import render_face, sample_rng


def tiny_config(seed: int = 0, **data_kw) -> TrainConfig:
    return TrainConfig(
        name="tiny", version="0.0.1", seed=seed, num_threads=2, checkpoint_every=1,
        model=ModelConfig(planes=8, spp_planes=16, head_planes=8, layers=[1, 1, 1, 1]),
        data=DataConfig(input_size=64, astronaut_fraction=0.0, val_samples=2, **data_kw),
        optim=OptimConfig(batch_size=2, iterations=2, warmup_iters=1),
        loss=LossConfig(min_kept=256),
    )


def _run(cfg: TrainConfig, out: Path) -> dict[str, torch.Tensor]:
    path = train_mod.train(cfg, out, progress=False)
    assert path == out / "tiny.pt"
    return load_state_dict(path)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    state = _run(tiny_config(seed=3), out)
    return out, state


def test_training_writes_weights_config_and_log(tiny_run):
    out, state = tiny_run
    assert (out / "tiny.pt").exists() and (out / "tiny.yaml").exists() and (out / "checkpoint.pt").exists()
    saved = torch.load(out / "tiny.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in saved.values() if torch.is_floating_point(v))
    cfg = load_config(out / "tiny.yaml")
    assert cfg.model.planes == 8 and cfg.data.input_size == 64 and cfg.optim.total_iterations == 2
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2]
    assert all(np.isfinite(r["loss"]) and 0 <= r["val_f1"] <= 1 for r in log)
    assert all(v.dtype == torch.float32 for v in state.values() if torch.is_floating_point(v))


def test_training_is_reproducible_with_the_same_seed(tiny_run, tmp_path):
    _, first = tiny_run
    again = _run(tiny_config(seed=3), tmp_path / "again")
    other = _run(tiny_config(seed=4), tmp_path / "other")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if torch.is_floating_point(first[k]))


def _write_folder_dataset(root: Path, n: int = 3) -> None:
    for sub in ("images", "masks", "skin"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        s = render_face(80, 64, sample_rng(21, i), lesion_prob=1.0)
        ext = "jpg" if i == 0 else "png"
        cv2.imwrite(str(root / "images" / f"case{i}.{ext}"), s.image[..., ::-1])
        cv2.imwrite(str(root / "masks" / f"case{i}.png"), s.lesion_mask.astype(np.uint8) * 255)
        if i != 1:  # skin mask optional
            cv2.imwrite(str(root / "skin" / f"case{i}.png"), s.skin_mask.astype(np.uint8) * 255)
    cv2.imwrite(str(root / "images" / "unlabelled.png"), np.zeros((8, 8, 3), np.uint8))  # no mask: skipped


def test_training_on_a_user_folder_dataset(tmp_path):
    data_root = tmp_path / "dataset"
    _write_folder_dataset(data_root)
    cfg = tiny_config(seed=1, source="folder", folder=str(data_root), val_fraction=0.34)
    data = train_mod.TrainingData(cfg)
    assert len(data.train.names) == 2 and data.n_val == 1 and "unlabelled" not in data.train.names
    images, targets = data.batch(0)
    assert images.shape == (2, 3, 64, 64) and set(torch.unique(targets).tolist()) <= {0, 1, 255}
    a = _run(cfg, tmp_path / "a")
    b = _run(cfg, tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_config(tmp_path / "a" / "tiny.yaml").data.source == "folder"


def test_fine_tuning_starts_from_given_weights(tiny_run, tmp_path):
    out, state = tiny_run
    cfg = replace(tiny_config(seed=3), init_weights=str(out / "tiny.pt"),
                  optim=OptimConfig(batch_size=2, iterations=1, lr=1e-12, warmup_iters=0))
    tuned = _run(cfg, tmp_path / "tuned")
    # a near-zero learning rate keeps the start point: weights equal up to fp16 rounding
    # (BatchNorm running statistics still move, so compare conv weights only)
    convs = [k for k in state if k.endswith("conv1.weight")]
    assert convs and all(torch.allclose(tuned[k], state[k], atol=1e-3) for k in convs)
    fresh = _run(replace(cfg, init_weights=None), tmp_path / "fresh")
    assert not all(torch.allclose(fresh[k], state[k], atol=1e-3) for k in convs)


def test_fine_tuning_with_frozen_batchnorm_keeps_the_running_statistics(tiny_run, tmp_path):
    """Few-photograph fine-tuning (dermpacs learn) must not replace the statistics the model was trained with."""
    out, state = tiny_run
    optim = OptimConfig(batch_size=2, iterations=2, lr=1e-3, warmup_iters=0, freeze_batchnorm=True)
    tuned = _run(replace(tiny_config(seed=3), init_weights=str(out / "tiny.pt"), optim=optim), tmp_path / "frozen")
    stats = [k for k in state if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(tuned[k], state[k]) for k in stats)
    convs = [k for k in state if k.endswith("conv1.weight")]
    assert any(not torch.allclose(tuned[k], state[k], atol=1e-4) for k in convs), "nothing was learnt"
    moving = _run(replace(tiny_config(seed=3), init_weights=str(out / "tiny.pt"),
                          optim=replace(optim, freeze_batchnorm=False)), tmp_path / "moving")
    assert any(not torch.equal(moving[k], state[k]) for k in stats)


def test_generator_mix_in_the_config_reaches_the_samples():
    """skin_type_weights / no_lesion_fraction steer what the v2 training pool contains."""
    from models.facial.data import SyntheticSource

    cfg = DataConfig(generator="v2", roi_long_side=(96, 96), skin_type_weights=(1, 0, 0, 0, 0, 0),
                     no_lesion_fraction=1.0)
    samples = [SyntheticSource(cfg, seed=5).get(i) for i in range(6)]
    assert [s.meta["skin_type"] for s in samples] == [1] * 6
    assert all(not s.lesion_mask.any() for s in samples)


def test_folder_dataset_errors_are_clear(tmp_path):
    cfg = tiny_config(source="folder", folder=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="images/ and masks/"):
        train_mod.TrainingData(cfg)


def test_train_cli_overrides_reach_the_saved_config(tmp_path):
    args = train_mod.build_parser().parse_args(
        ["--config", "facial_vitiligo_paper", "--out", str(tmp_path), "--iterations", "7", "--seed", "5",
         "--input-size", "256", "--pool-size", "0"])
    cfg = train_mod.config_from_args(args)
    assert cfg.optim.total_iterations == 7 and cfg.seed == 5 and cfg.data.input_size == 256
    paper = load_config("facial_vitiligo_paper")
    assert (paper.optim.lr, paper.optim.weight_decay, paper.optim.epochs, paper.loss.name) == (1e-3, 0.01, 500, "ohem_ce")
    assert "--data-folder" in train_mod.build_parser().format_help()


def test_config_rejects_unknown_keys(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(p)


def test_segmenter_contract_and_evaluate_outputs(tiny_run, tmp_path):
    out, _ = tiny_run
    seg = LesionSegmenter.load(out / "tiny.pt", num_threads=2)
    assert seg.name == "tiny" and seg.version == "0.0.1" and len(seg.weights_sha256) == 64
    assert "DDRNet" in seg.architecture and seg.input_size == 64
    rng = np.random.default_rng(0)
    roi = rng.integers(0, 255, (150, 97, 3), dtype=np.uint8)
    mask = np.zeros((150, 97), bool)
    mask[20:130, 10:90] = True
    prob = seg.predict(roi, mask)
    assert prob.shape == (150, 97) and prob.dtype == np.float32
    assert prob.min() >= 0 and prob.max() <= 1 and (prob[~mask] == 0).all() and prob[mask].max() > 0
    # pixels outside the mask do not influence the result (predict zeroes them itself)
    roi2 = roi.copy()
    roi2[~mask] = 0
    assert np.array_equal(seg.predict(roi2, mask), prob)
    assert (seg.predict(roi, np.zeros_like(mask)) == 0).all()

    r = evaluate_mod.main(["--weights", str(out / "tiny.pt"), "--n", "3", "--long-side", "96",
                           "--out", str(tmp_path / "eval")])
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["n_images"] == 3 and saved["weights_sha256"] == seg.weights_sha256
    for key in ("f1", "iou", "miou", "dice", "precision", "recall"):
        assert 0.0 <= saved["pooled"][key] <= 1.0
    assert saved["f_vitiligo_abs_error_pp"]["median"] >= 0
    assert r["pooled"] == saved["pooled"]
    assert cv2.imread(str(tmp_path / "eval" / "figure.png")) is not None
    assert "--data" in evaluate_mod.build_parser().format_help()


def test_overlay_uses_the_paper_colours():
    img = np.zeros((1, 3, 3), np.uint8)
    pred = np.array([[True, True, False]])
    truth = np.array([[True, False, True]])
    ov = evaluate_mod.overlay(img, pred, truth, alpha=1.0)
    assert ov[0, 0].tolist() == [0, 255, 0] and ov[0, 1].tolist() == [255, 0, 0] and ov[0, 2].tolist() == [0, 0, 255]


def test_engine_run_epochs_stops_early_cuts_an_epoch_short_and_checkpoints_task_state(tmp_path):
    from models.engine import load_checkpoint, run_epochs, save_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen, ends = [], []

    def step(it: int, _lr: float) -> torch.Tensor:
        seen.append(it)
        return model(torch.ones(1, 2)).pow(2).sum()

    def on_epoch(epoch: int, losses: list[float]) -> bool:
        ends.append((epoch, len(losses)))
        return epoch == 2  # early stopping after the third epoch

    begun: list[int] = []
    assert run_epochs(step, opt, None, 10, 3, on_epoch, start_epoch=1, begin_epoch=begun.append) == 3
    assert begun == [1, 2] and ends == [(1, 3), (2, 3)] and seen == [3, 4, 5, 6, 7, 8]
    # after_step returning True ends the epoch early; its end still runs.
    ends.clear()
    assert run_epochs(step, opt, None, 4, 3, lambda e, l: ends.append((e, len(l))),
                      after_step=lambda it, losses: len(losses) == 2) == 1
    assert ends == [(0, 2)]
    save_checkpoint(tmp_path / "c.pt", model, opt, 6, {"best_epoch": 2})
    extra: dict = {}
    assert load_checkpoint(tmp_path / "c.pt", model, opt, extra) == 6 and extra == {"best_epoch": 2}


def test_weight_average_interpolates_floats_and_refuses_other_networks(tiny_run, tmp_path):
    from models.average_weights import interpolate_state_dicts, main as average_main

    out, state = tiny_run
    other = {k: (v + 1 if torch.is_floating_point(v) else v) for k, v in state.items()}
    mixed = interpolate_state_dicts(state, other, 0.25)
    key = next(k for k in state if k.endswith("conv1.weight"))
    assert torch.allclose(mixed[key].float(), state[key] + 0.25, atol=2e-3) and mixed[key].dtype == torch.float16
    counters = [k for k in state if not torch.is_floating_point(state[k])]
    assert all(torch.equal(mixed[k], other[k]) for k in counters)
    with pytest.raises(ValueError, match="different tensors"):
        interpolate_state_dicts(state, {k: v for k, v in state.items() if k != key}, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        interpolate_state_dicts(state, other, 1.5)
    torch.save(other, tmp_path / "b.pt")
    average_main([str(out / "tiny.pt"), str(tmp_path / "b.pt"), "--alpha", "0", "--out", str(tmp_path / "c.pt")])
    same = torch.load(tmp_path / "c.pt", weights_only=True)
    assert torch.allclose(same[key].float(), state[key], atol=2e-3)
