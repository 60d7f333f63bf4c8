"""Train the facial-vitiligo DDRNet (synthetic data or a user folder dataset).

    python -m models.facial.train --config facial_vitiligo_shipped --out runs/shipped
    python -m models.facial.train --config facial_vitiligo_paper --data-folder /data/vitiligo --out runs/local

Writes into ``--out``: ``NAME.pt`` (fp16 state dict, loadable by
``LesionSegmenter.load``), ``NAME.yaml`` (the exact config), ``checkpoint.pt`` (fp32
model + optimizer, for ``--resume``) and ``train_log.jsonl`` (loss and validation F1 /
F-Vitiligo error at each checkpoint). Weights are written at every checkpoint, so an
interrupted run is still usable. Runs are reproducible: every sample and augmentation
draws from a generator seeded by (seed, sample index).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..engine import (append_log, load_checkpoint, run_iterations, save_checkpoint, save_weights_fp16,  # noqa: F401
                      set_training)
from ..config import TrainConfig, load_config, save_config
from .data import FolderSource, SyntheticSource, list_folder_dataset, prepare, split_folder
from .ddrnet import build_model
from ..losses import OhemCrossEntropy
from ..metrics import Confusion, confusion, f_vitiligo, metrics_from_confusion
from .synthetic import sample_rng

AUG_SEED_OFFSET = 1_000_003
VAL_SEED_OFFSET = 10_000_019


def load_init_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Start from saved weights. A network with more input channels than the saved one
    (RGB weights -> RGB + skin-relative channels) gets the RGB filters copied and the
    new channels' filters zeroed, so it starts out computing exactly the old function."""
    from .inference import load_state_dict

    state = load_state_dict(path)
    own = model.state_dict()
    for key, value in state.items():
        if key in own and value.ndim == 4 and own[key].shape != value.shape \
                and own[key].shape[0] == value.shape[0] and own[key].shape[1] > value.shape[1]:
            grown = torch.zeros_like(own[key])
            grown[:, : value.shape[1]] = value
            state[key] = grown
    model.load_state_dict(state)


def learning_rate(cfg: TrainConfig, iteration: int, total: int) -> float:
    o = cfg.optim
    if o.warmup_iters and iteration < o.warmup_iters:
        return o.lr * (iteration + 1) / o.warmup_iters
    if o.lr_schedule == "constant":
        return o.lr
    return o.lr * (1 - iteration / max(1, total)) ** o.poly_power


class TrainingData:
    """Batches of (image, target) for iteration ``it``, a pure function of (seed, it)."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        d = cfg.data
        if d.source == "folder":
            if not d.folder:
                raise ValueError("data.source=folder needs data.folder (or --data-folder)")
            train, val = split_folder(list_folder_dataset(d.folder), d.val_fraction, cfg.seed)
            self.train = FolderSource(d.folder, train)
            self.val = FolderSource(d.folder, val) if val else None
            self.n_val = len(val)
        else:
            self.train = SyntheticSource(d, cfg.seed, pool_size=d.synthetic_pool)
            self.val = SyntheticSource(d, cfg.seed + VAL_SEED_OFFSET, pool_size=0)
            self.n_val = d.val_samples

    def _train_index(self, k: int) -> int:
        if isinstance(self.train, FolderSource):  # epoch-wise permutation of the user images
            n = len(self.train)
            epoch, pos = divmod(k, n)
            return int(np.random.default_rng([self.cfg.seed, epoch]).permutation(n)[pos])
        return k

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        bs = self.cfg.optim.batch_size
        images, targets = [], []
        for j in range(bs):
            k = iteration * bs + j
            sample = self.train.get(self._train_index(k))
            img, tgt = prepare(sample, self.cfg.data.input_size, self.cfg.data.augment,
                               sample_rng(self.cfg.seed + AUG_SEED_OFFSET, k),
                               skin_relative=self.cfg.data.skin_relative_inputs)
            images.append(img)
            targets.append(tgt)
        return torch.stack(images), torch.stack(targets)


@torch.inference_mode()
def validate(model: torch.nn.Module, data: TrainingData) -> dict[str, float]:
    """Pooled F1/IoU and F-Vitiligo error on the validation samples (letterboxed input)."""
    if data.val is None or data.n_val == 0:
        return {}
    was_training = model.training
    model.eval()
    total = Confusion(0, 0, 0, 0)
    errors = []
    for i in range(data.n_val):
        sample = data.val.get(i)
        img, tgt = prepare(sample, data.cfg.data.input_size, None, sample_rng(0, i),
                           skin_relative=data.cfg.data.skin_relative_inputs)
        prob = model(img.unsqueeze(0)).softmax(1)[0, 1].numpy()
        skin = tgt.numpy() != 255
        truth = tgt.numpy() == 1
        pred = (prob >= 0.5) & skin
        total = total + confusion(pred, truth, skin)
        errors.append(abs(f_vitiligo(pred, skin) - f_vitiligo(truth, skin)))
    set_training(model, was_training, data.cfg.optim.freeze_batchnorm)
    m = metrics_from_confusion(total)
    return {"val_f1": m["f1"], "val_iou": m["iou"], "val_fvit_abs_err_median": float(np.median(errors))}


def train(cfg: TrainConfig, out_dir: Path, resume: bool = False, progress: bool = True) -> Path:
    """Run training; returns the path of the saved fp16 weights."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, cfg.num_threads))
    torch.manual_seed(cfg.seed)
    total = cfg.optim.total_iterations
    save_config(cfg, out_dir / f"{cfg.name}.yaml")
    model = build_model(cfg.model)
    if cfg.init_weights:
        load_init_weights(model, cfg.init_weights)
    set_training(model, True, cfg.optim.freeze_batchnorm)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    criterion = OhemCrossEntropy(cfg.loss.thresh, cfg.loss.min_kept, cfg.loss.ignore_index)
    data = TrainingData(cfg)
    weights_path = out_dir / f"{cfg.name}.pt"
    ckpt_path = out_dir / "checkpoint.pt"
    log_path = out_dir / "train_log.jsonl"
    start = 0
    if resume and ckpt_path.exists():
        start = load_checkpoint(ckpt_path, model, optimizer)
    elif log_path.exists():
        log_path.unlink()

    def checkpoint(iteration: int, loss_avg: float) -> None:
        save_weights_fp16(model, weights_path)
        save_checkpoint(ckpt_path, model, optimizer, iteration)
        record = {"iteration": iteration, "loss": loss_avg, "time": time.time(), **validate(model, data)}
        append_log(log_path, record, progress)

    def step(it: int, lr: float) -> torch.Tensor:
        images, targets = data.batch(it)
        out = model(images)
        if isinstance(out, tuple):
            return criterion(out[0], targets) + cfg.model.aux_weight * criterion(out[1], targets)
        return criterion(out, targets)

    run_iterations(step, optimizer, lambda it: learning_rate(cfg, it, total), start, total,
                   cfg.checkpoint_every, checkpoint, progress)
    if start >= total and not weights_path.exists():
        save_weights_fp16(model, weights_path)
    return weights_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m models.facial.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="facial_vitiligo_shipped",
                   help="YAML path or a name in models/configs/ (default: %(default)s)")
    p.add_argument("--out", required=True, type=Path, help="output folder for weights/config/log")
    p.add_argument("--data-folder", help="user dataset root (images/, masks/, optional skin/); "
                                         "switches data.source to folder")
    p.add_argument("--iterations", type=int, help="override the schedule's total iterations")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--input-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--num-threads", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--name", help="run/model name (file stem of the weights)")
    p.add_argument("--version", help="model version recorded in the config")
    p.add_argument("--pool-size", type=int,
                   help="synthetic samples generated once and re-augmented (0 = always fresh)")
    p.add_argument("--init-weights", help="start from these weights (fine-tuning, e.g. the shipped .pt)")
    p.add_argument("--lr", type=float, help="override the learning rate (lower it for fine-tuning)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = load_config(args.config)
    data, optim = cfg.data, cfg.optim
    if args.data_folder:
        data = replace(data, source="folder", folder=str(args.data_folder))
    if args.input_size:
        data = replace(data, input_size=args.input_size)
    if args.no_augment:
        data = replace(data, augment=replace(data.augment, enabled=False))
    if args.pool_size is not None:
        data = replace(data, synthetic_pool=args.pool_size)
    if args.batch_size:
        optim = replace(optim, batch_size=args.batch_size)
    if args.iterations:
        optim = replace(optim, iterations=args.iterations)
    if args.lr:
        optim = replace(optim, lr=args.lr)
    cfg = replace(cfg, data=data, optim=optim)
    for key in ("seed", "num_threads", "checkpoint_every", "name", "version", "init_weights"):
        value = getattr(args, key)
        if value is not None:
            cfg = replace(cfg, **{key: value})
    return cfg


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    path = train(cfg, args.out, resume=args.resume, progress=not args.quiet)
    print(f"weights: {path}")


if __name__ == "__main__":
    main()
