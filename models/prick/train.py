"""Train the skin prick U-Net (``python -m models.prick.train --help``).

    python -m models.prick.train --config skin_prick_shipped --out runs/prick
    python -m models.prick.train --config skin_prick_paper --data-folder ROOT --out runs/prick_local \
        --name skin_prick_local --version 1.0.0-local

Writes ``OUT/NAME.pt`` (fp16 state dict of the best validation epoch), ``OUT/NAME.yaml``
(the exact config; inference reads it) and ``OUT/history.json``. Validation score =
mean Dice of erythema (whole reaction) and wheal on the validation set; early stopping
after ``early_stopping_patience`` epochs without improvement (the paper: 15).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from models.metrics import confusion, dice

from . import ERYTHEMA_HALO, WHEAL
from .config import PrickConfig, load_config, save_config
from .data import (FolderPrickDataset, SyntheticPrickDataset, list_folder_dataset, split_names,
                   training_batch)
from .inference import predict_label_maps
from .losses import segmentation_loss
from .unet import build_unet

VAL_OFFSET = 1_000_000  # synthetic validation samples: indices far from training ones
TEST_OFFSET = 2_000_000  # synthetic held-out test samples (evaluation)


def datasets_for(cfg: PrickConfig, folder: str | None = None, train_names: list[str] | None = None,
                 val_names: list[str] | None = None):
    """(train, val) datasets from the config (synthetic pool, or a folder split 7:1:2)."""
    size = cfg.data.input_size
    folder = folder or cfg.data.folder
    if cfg.data.source == "folder" or folder:
        if folder is None:
            raise ValueError("data.source is 'folder' but no folder was given")
        if train_names is None:
            train_names, val_names, _ = split_names(list_folder_dataset(folder), cfg.data.split, cfg.seed)
        val_names = val_names or train_names[:1]
        return FolderPrickDataset(folder, train_names, size), FolderPrickDataset(folder, val_names, size)
    sites = cfg.model.head == "sigmoid"
    return (SyntheticPrickDataset(cfg.data.synthetic_pool, cfg.seed, size, scale=cfg.data.synthetic_scale,
                                  with_sites=sites),
            SyntheticPrickDataset(cfg.data.val_samples, cfg.seed, size, offset=VAL_OFFSET,
                                  scale=cfg.data.synthetic_scale, with_sites=sites))


def validation_scores(model: torch.nn.Module, dataset, batch: int = 4) -> dict[str, float]:
    """Pooled Dice of erythema (labels 1|2) and wheal (label 2) over a dataset."""
    model.eval()
    conf = {"erythema": None, "wheal": None}
    for start in range(0, len(dataset), batch):
        items = [dataset.get(i) for i in range(start, min(len(dataset), start + batch))]
        preds = predict_label_maps(model, [im for im, _ in items])
        for pred, (_, truth) in zip(preds, items):
            truth = truth & 3  # class bits of an encoded label map
            for name, sel in (("erythema", lambda a: a >= ERYTHEMA_HALO), ("wheal", lambda a: a == WHEAL)):
                c = confusion(sel(pred), sel(truth))
                conf[name] = c if conf[name] is None else conf[name] + c
    scores = {f"dice_{k}": dice(v) for k, v in conf.items()}
    scores["score"] = (scores["dice_erythema"] + scores["dice_wheal"]) / 2
    return scores


def train(cfg: PrickConfig, out: str | Path, folder: str | None = None, train_names: list[str] | None = None,
          val_names: list[str] | None = None, log: Callable[[str], None] = print, resume: bool = False) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, cfg.num_threads))
    train_set, val_set = datasets_for(cfg, folder, train_names, val_names)
    model = build_unet(cfg.model)
    if cfg.init_weights:
        from .inference import load_state_dict

        model.load_state_dict(load_state_dict(cfg.init_weights))
        log(f"initialised from {cfg.init_weights}")
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    bs = cfg.optim.batch_size
    per_epoch = cfg.optim.iterations_per_epoch or max(1, math.ceil(len(train_set) / bs))
    rng = np.random.default_rng(cfg.seed)
    best, best_state, best_epoch, stale = -1.0, None, 0, 0
    history = []
    started = time.perf_counter()
    step = 0
    stop_reason = "epochs done"
    first_epoch, spent = 1, 0.0
    checkpoint = out / "checkpoint.pt"
    if resume and checkpoint.exists():  # continue where an interrupted run stopped
        ck = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(ck["model"])
        optimiser.load_state_dict(ck["optimiser"])
        rng.bit_generator.state = ck["rng"]
        best, best_state, best_epoch, stale = ck["best"], ck["best_state"], ck["best_epoch"], ck["stale"]
        history, step, spent = ck["history"], ck["step"], ck["elapsed_s"]
        first_epoch = len(history) + 1
        log(f"resumed from {checkpoint} at epoch {first_epoch} (step {step})")
    started -= spent
    for epoch in range(first_epoch, cfg.optim.epochs + 1):
        model.train()
        losses = []
        for _ in range(per_epoch):
            idx = rng.integers(0, len(train_set), bs)
            x, y = training_batch(train_set, idx, cfg.data, cfg.seed, step)
            loss = segmentation_loss(cfg.loss.name, model(x), y, cfg.loss.ce_weight,
                                     cfg.loss.pos_weight, cfg.loss.dice_weight)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            step += 1
        scores = validation_scores(model, val_set)
        elapsed = time.perf_counter() - started
        history.append({"epoch": epoch, "iterations": step, "loss": float(np.mean(losses)),
                        "elapsed_s": round(elapsed, 1), **scores})
        log(f"epoch {epoch}: loss {np.mean(losses):.4f} val dice erythema {scores['dice_erythema']:.4f} "
            f"wheal {scores['dice_wheal']:.4f} ({elapsed:.0f} s)")
        if scores["score"] > best:
            best, best_epoch, stale = scores["score"], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "rng": rng.bit_generator.state,
                    "best": best, "best_state": best_state, "best_epoch": best_epoch, "stale": stale,
                    "history": history, "step": step, "elapsed_s": elapsed}, checkpoint)
        if stale >= cfg.optim.early_stopping_patience:
            stop_reason = f"early stopping (no improvement for {stale} epochs)"
            break
        if cfg.optim.max_minutes and elapsed > cfg.optim.max_minutes * 60:
            stop_reason = f"time budget of {cfg.optim.max_minutes} min reached"
            break
    assert best_state is not None
    weights = out / f"{cfg.name}.pt"
    torch.save({k: (v.half() if torch.is_floating_point(v) else v) for k, v in best_state.items()}, weights)
    save_config(cfg, weights.with_suffix(".yaml"))
    summary = {"best_epoch": best_epoch, "best_val": history[best_epoch - 1], "epochs_run": len(history),
               "iterations": step, "stop_reason": stop_reason, "train_samples": len(train_set),
               "val_samples": len(val_set), "history": history}
    (out / "history.json").write_text(json.dumps(summary, indent=2))
    log(f"best epoch {best_epoch} ({stop_reason}); weights {weights}")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.prick.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="skin_prick_shipped", help="YAML path or a name in models/configs/")
    p.add_argument("--data-folder", help="user dataset: ROOT/images/*.png|jpg + ROOT/masks/*.png (0/1/2)")
    p.add_argument("--out", required=True)
    p.add_argument("--name")
    p.add_argument("--version")
    p.add_argument("--epochs", type=int)
    p.add_argument("--iterations-per-epoch", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--lr", type=float)
    p.add_argument("--init-weights", help="start from these weights (e.g. the shipped ones) instead of random")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (saved every epoch)")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    if args.init_weights:
        cfg.init_weights = args.init_weights
    if args.data_folder:
        cfg.data.source, cfg.data.folder = "folder", args.data_folder
    for attr, value in (("name", args.name), ("version", args.version)):
        if value:
            setattr(cfg, attr, value)
    for attr, value in (("epochs", args.epochs), ("iterations_per_epoch", args.iterations_per_epoch),
                        ("batch_size", args.batch_size), ("max_minutes", args.max_minutes), ("lr", args.lr)):
        if value is not None:
            setattr(cfg.optim, attr, value)
    train(cfg, args.out, log=lambda line: print(line, flush=True), resume=args.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
