"""Train the scalp grader: ``python -m models.scalp.train --config scalp_paper --out runs/scalp``.

Per epoch: one pass over the training set with the paper's augmentations, focal loss over
the six heads, AdamW; then the validation set is graded and its overall macro-F1 decides:
the best epoch's weights are kept (fp16 state dict + the run's YAML beside it) and
training stops after ``early_stop_patience`` epochs without gain (or at ``max_minutes``).
Every sample and augmentation is seeded by (seed, epoch, index): runs are reproducible.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..engine import run_epochs, save_weights_fp16
from . import INDICATORS
from .config import ScalpTrainConfig, load_scalp_config, save_scalp_config
from .data import CsvScalpDataset, SyntheticScalpDataset, augment, build_pool, pad_square, to_tensor
from .losses import MultiHeadFocalLoss, class_weights_from_labels
from .metrics import scalp_metrics
from .network import build_scalp_model

VAL_START = 10_000_000  # synthetic validation indices never overlap training ones
TEST_START = 20_000_000  # ... nor the held-out test set of models.scalp.evaluate


def load_pools(cfg: ScalpTrainConfig, cache_dir: Path | None):
    """(train images, train grades, val images, val grades) as letterbox contents."""
    size = cfg.data.input_size
    key = None
    if cfg.data.source == "synthetic":
        key = f"scalp_pool_s{cfg.seed}_n{cfg.data.train_samples}_v{cfg.data.val_samples}_{size}.npz"
        if cache_dir is not None and (cache_dir / key).exists():
            z = np.load(cache_dir / key)
            return list(z["tx"]), z["ty"], list(z["vx"]), z["vy"]
        tx, ty = build_pool(SyntheticScalpDataset(cfg.data.train_samples, cfg.seed), size)
        vx, vy = build_pool(SyntheticScalpDataset(cfg.data.val_samples, cfg.seed, start=VAL_START), size)
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            np.savez(cache_dir / key, tx=np.stack(tx), ty=ty, vx=np.stack(vx), vy=vy)
        return tx, ty, vx, vy
    if not cfg.data.csv:
        raise SystemExit("data.source=csv needs data.csv (--csv)")
    ds = CsvScalpDataset(cfg.data.csv, cfg.data.image_root)
    if cfg.data.val_csv:
        tx, ty = build_pool(ds, size)
        vx, vy = build_pool(CsvScalpDataset(cfg.data.val_csv, cfg.data.image_root), size)
    else:
        order = np.random.default_rng(cfg.seed).permutation(len(ds))
        n_val = max(1, int(round(cfg.data.val_fraction * len(ds))))
        vx, vy = build_pool(ds, size, order[:n_val])
        tx, ty = build_pool(ds, size, order[n_val:])
    return tx, ty, vx, vy


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, images, size: int, batches: int, batch_size: int,
                          seed: int) -> None:
    """Exact BN running statistics over ``batches`` training batches (un-augmented)."""
    if batches <= 0:
        return
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    order = np.random.default_rng([seed, 7]).permutation(len(images))[: batches * batch_size]
    for b in range(0, len(order), batch_size):
        model(torch.stack([to_tensor(pad_square(images[i], size)) for i in order[b:b + batch_size]]))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


@torch.inference_mode()
def predict_pool(model, images, size: int, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Grades (N, 6) and probabilities (N, 6, 4) of letterbox contents."""
    model.eval()
    probs = []
    for i in range(0, len(images), batch_size):
        x = torch.stack([to_tensor(pad_square(im, size)) for im in images[i:i + batch_size]])
        probs.append(model(x).softmax(-1).numpy())
    p = np.concatenate(probs) if probs else np.zeros((0, len(INDICATORS), 4), np.float32)
    return p.argmax(-1), p


def train(cfg: ScalpTrainConfig, out_dir: Path, cache_dir: Path | None = None, log=print) -> dict:
    """Epochs on the shared engine (see the module docstring); returns the training summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.num_threads)
    started = time.time()
    tx, ty, vx, vy = load_pools(cfg, cache_dir)
    log(f"data: {len(tx)} train, {len(vx)} validation images ({time.time() - started:.0f} s)")
    size = cfg.data.input_size
    model = build_scalp_model(cfg.model)
    if cfg.init_weights:
        from .inference import load_state_dict

        model.load_state_dict(load_state_dict(cfg.init_weights))
    weights = class_weights_from_labels(ty, cfg.loss.class_weighting, cfg.model.num_grades)
    loss_fn = MultiHeadFocalLoss(cfg.loss.gamma, None if weights is None else torch.from_numpy(weights))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    weights_path = out_dir / f"{cfg.name}.pt"
    save_scalp_config(cfg, weights_path.with_suffix(".yaml"))
    best, best_epoch, history = -1.0, -1, []
    deadline = started + cfg.optim.max_minutes * 60 if cfg.optim.max_minutes else None
    bs = cfg.optim.batch_size
    per_epoch = len(tx) // bs
    if per_epoch < 1:
        raise ValueError(f"{len(tx)} training images make no batch of {bs}")
    log(f"training {cfg.model.backbone} at {size}: {per_epoch} batches of {bs} per epoch")
    order = np.arange(0)

    def begin_epoch(epoch: int) -> None:
        nonlocal order
        model.train()
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(tx))

    def step(it: int, _lr: float) -> torch.Tensor:
        epoch, b = divmod(it, per_epoch)
        idx = order[b * bs:(b + 1) * bs]
        x = torch.stack([
            to_tensor(pad_square(augment(tx[i], cfg.data.augment, np.random.default_rng([cfg.seed, epoch, int(i)])), size))
            for i in idx
        ])
        y = torch.from_numpy(ty[idx])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.optim.bf16_autocast):
            logits = model(x)
        return loss_fn(logits.float(), y)

    def after_step(it: int, losses: list[float]) -> bool:
        if len(losses) % 20 == 0:
            log(f"epoch {it // per_epoch + 1} batch {len(losses)} loss {np.mean(losses[-20:]):.4f} "
                f"({(time.time() - started) / 60:.1f} min)")
        return bool(deadline and time.time() > deadline)

    def end_epoch(epoch: int, losses: list[float]) -> bool:
        nonlocal best, best_epoch
        recalibrate_batchnorm(model, tx, size, cfg.optim.bn_recalibration_batches, bs, cfg.seed + epoch)
        pred, _ = predict_pool(model, vx, size)
        m = scalp_metrics(vy, pred, INDICATORS)
        score = m["overall_macro_f1"]
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)),
                        "val_macro_f1": score, "val_hamming": m["hamming_accuracy"],
                        "minutes": round((time.time() - started) / 60, 2)})
        log(json.dumps(history[-1]))
        if score > best:
            best, best_epoch = score, epoch + 1
            save_weights_fp16(model, weights_path)
        elif epoch + 1 - best_epoch >= cfg.optim.early_stop_patience:
            log(f"early stop: no validation macro-F1 gain for {cfg.optim.early_stop_patience} epochs")
            return True
        if deadline and time.time() > deadline:
            log(f"stopped at the {cfg.optim.max_minutes} min wall-time cap")
            return True
        return False

    run_epochs(step, opt, None, cfg.optim.epochs, per_epoch, end_epoch, begin_epoch=begin_epoch, after_step=after_step)
    summary = {"best_epoch": best_epoch, "best_val_macro_f1": best, "history": history,
               "weights": str(weights_path), "minutes": round((time.time() - started) / 60, 2)}
    (out_dir / "training_history.json").write_text(json.dumps(summary, indent=2))
    return summary


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="scalp_paper", help="YAML path or name in models/configs (default scalp_paper)")
    ap.add_argument("--out", required=True, help="output folder (weights NAME.pt + NAME.yaml + training_history.json)")
    ap.add_argument("--csv", help="grades CSV (switches data.source to csv)")
    ap.add_argument("--image-root", help="folder the CSV's image paths are relative to (default: the CSV's folder)")
    ap.add_argument("--val-csv", help="separate validation CSV")
    ap.add_argument("--name")
    ap.add_argument("--version")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--max-minutes", type=float)
    ap.add_argument("--class-weighting", choices=["none", "inverse_sqrt", "inverse"])
    ap.add_argument("--init-weights", help="fine-tune from these weights (e.g. the shipped ones)")
    ap.add_argument("--cache", help="folder to cache the generated synthetic pool in")
    return ap


def config_from_args(args: argparse.Namespace) -> ScalpTrainConfig:
    cfg = load_scalp_config(args.config)
    if args.csv:
        cfg.data.source, cfg.data.csv = "csv", args.csv
    if args.image_root:
        cfg.data.image_root = args.image_root
    if args.val_csv:
        cfg.data.val_csv = args.val_csv
    for attr, target in (("name", cfg), ("version", cfg)):
        if getattr(args, attr):
            setattr(target, attr, getattr(args, attr))
    if args.epochs:
        cfg.optim.epochs = args.epochs
    if args.max_minutes:
        cfg.optim.max_minutes = args.max_minutes
    if args.class_weighting:
        cfg.loss.class_weighting = args.class_weighting
    if args.init_weights:
        cfg.init_weights = args.init_weights
    return cfg


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    return train(cfg, Path(args.out), Path(args.cache) if args.cache else None)


if __name__ == "__main__":
    main()
