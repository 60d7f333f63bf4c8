"""Train a close-up vitiligo segmenter.

    python -m models.lesion.train --config vitiligo_lesion_shipped --out runs/vitiligo_lesion
    python -m models.lesion.train --config vitiligo_lesion_paper --architecture unet --encoder resnet50 ...
    python -m models.lesion.train --config vitiligo_lesion_shipped --data-folder ROOT   # images/ + masks/

Writes ``OUT/NAME.pt`` (fp16 state dict), ``OUT/NAME.yaml`` (the exact config) and
``OUT/NAME.metrics.json`` (held-out F1/IoU/precision/recall, loss curve, wall time).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..engine import run_epochs, save_weights_fp16
from .config import LesionTrainConfig, load_lesion_config, save_lesion_config
from .data import AugmentedDataset, build_pairs
from .networks import build_model


def train(cfg: LesionTrainConfig, out: Path, max_minutes: float | None = None, log=print) -> dict:
    """Epochs of seeded crops through the shared engine (weighted cross-entropy, OneCycleLR);
    writes the fp16 weights, config and held-out metrics; returns the metrics record."""
    torch.manual_seed(cfg.data.seed)
    torch.set_num_threads(cfg.optim.threads)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    pairs = build_pairs(cfg.data, "train")
    log(f"{len(pairs)} training images ({cfg.data.source}) in {time.time() - started:.1f} s")
    dataset = AugmentedDataset(pairs, cfg.data.crop, cfg.augment, cfg.data.seed)
    model = build_model(cfg.model.architecture, cfg.model.encoder, cfg.model.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    steps_per_epoch = int(np.ceil(len(dataset) / cfg.optim.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.optim.lr, total_steps=cfg.optim.epochs * steps_per_epoch,
                                                pct_start=0.1)
    weights = torch.tensor(cfg.optim.class_weights, dtype=torch.float32)
    history: list[float] = []
    batches = iter(())

    def begin_epoch(epoch: int) -> None:
        nonlocal batches
        dataset.epoch = epoch
        batches = iter(torch.utils.data.DataLoader(dataset, batch_size=cfg.optim.batch_size, shuffle=True,
                                                   generator=torch.Generator().manual_seed(cfg.data.seed + epoch)))
        model.train()

    def step(_it: int, _lr: float) -> torch.Tensor:
        x, y = next(batches)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.optim.bf16):
            logits = model(x)
        return F.cross_entropy(logits.float(), y, weight=weights)

    def end_epoch(epoch: int, losses: list[float]) -> bool:
        history.append(float(np.mean(losses)))
        log(f"epoch {epoch + 1}/{cfg.optim.epochs} loss {history[-1]:.4f} ({time.time() - started:.0f} s)")
        if max_minutes is not None and time.time() - started > 60 * max_minutes and epoch + 1 < cfg.optim.epochs:
            log(f"time budget of {max_minutes} min reached after {epoch + 1} epochs")
            return True
        return False

    epochs_done = run_epochs(step, opt, None, cfg.optim.epochs, steps_per_epoch, end_epoch, begin_epoch=begin_epoch,
                             scheduler=sched)
    model.eval()
    weights_path = out / f"{cfg.name}.pt"
    save_weights_fp16(model, weights_path)
    save_lesion_config(cfg, weights_path.with_suffix(".yaml"))
    from .evaluate import evaluate_weights

    metrics = evaluate_weights(weights_path, build_pairs(cfg.data, "val"))
    record = {"name": cfg.name, "epochs_done": epochs_done, "loss_per_epoch": history,
              "train_seconds": round(time.time() - started, 1), "val": metrics}
    weights_path.with_suffix(".metrics.json").write_text(json.dumps(record, indent=2))
    log(f"held-out: {json.dumps(metrics)}")
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="vitiligo_lesion_shipped", help="YAML path or name in models/configs/")
    p.add_argument("--out", default="runs/vitiligo_lesion")
    p.add_argument("--architecture", choices=["deeplabv3", "unet"])
    p.add_argument("--encoder", choices=["resnet50", "mobilenetv3_small"])
    p.add_argument("--data-folder", help="train on ROOT/images + ROOT/masks (+ ROOT/skin) instead of synthetic")
    p.add_argument("--epochs", type=int)
    p.add_argument("--n-train", type=int)
    p.add_argument("--name")
    p.add_argument("--version")
    p.add_argument("--max-minutes", type=float, help="stop after the epoch that passes this wall time")
    a = p.parse_args(argv)
    cfg = load_lesion_config(a.config)
    if a.architecture:
        cfg.model.architecture = a.architecture
    if a.encoder:
        cfg.model.encoder = a.encoder
    if a.architecture or a.encoder:
        cfg.name = f"vitiligo_lesion_{cfg.model.architecture}_{cfg.model.encoder.replace('_small', '')}"
    if a.data_folder:
        cfg.data.source, cfg.data.folder = "folder", a.data_folder
    if a.epochs:
        cfg.optim.epochs = a.epochs
    if a.n_train:
        cfg.data.n_train = a.n_train
    cfg.name = a.name or cfg.name
    cfg.version = a.version or cfg.version
    train(cfg, Path(a.out), a.max_minutes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
