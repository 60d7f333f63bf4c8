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

from models.engine import load_checkpoint, run_epochs, save_checkpoint, save_weights_fp16
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
    mix = cfg.data.independent_fraction
    return (SyntheticPrickDataset(cfg.data.synthetic_pool, cfg.seed, size, scale=cfg.data.synthetic_scale,
                                  with_sites=sites, independent_fraction=mix),
            SyntheticPrickDataset(cfg.data.val_samples, cfg.seed, size, offset=VAL_OFFSET,
                                  scale=cfg.data.synthetic_scale, with_sites=sites, independent_fraction=mix))


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
    """Epochs on the shared engine; keeps the best validation epoch's weights (fp16), stops
    early after ``early_stopping_patience`` stale epochs or at ``max_minutes``; a checkpoint
    every epoch makes ``resume`` continue where an interrupted run stopped."""
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
    # best score, its epoch and weights, epochs without improvement, per-epoch records, elapsed seconds
    state = {"best": -1.0, "best_state": None, "best_epoch": 0, "stale": 0, "history": [], "elapsed_s": 0.0}
    stop_reason = "epochs done"
    checkpoint = out / "checkpoint.pt"
    if resume and checkpoint.exists():  # continue where an interrupted run stopped
        step = load_checkpoint(checkpoint, model, optimiser, state)
        rng.bit_generator.state = state.pop("rng")
        log(f"resumed from {checkpoint} at epoch {len(state['history']) + 1} (step {step})")
    history = state["history"]
    started = time.perf_counter() - state["elapsed_s"]

    def begin_epoch(_epoch: int) -> None:
        model.train()

    def batch_loss(it: int, _lr: float) -> torch.Tensor:
        idx = rng.integers(0, len(train_set), bs)
        x, y = training_batch(train_set, idx, cfg.data, cfg.seed, it)
        return segmentation_loss(cfg.loss.name, model(x), y, cfg.loss.ce_weight, cfg.loss.pos_weight,
                                 cfg.loss.dice_weight)

    def end_epoch(index: int, losses: list[float]) -> bool:
        nonlocal stop_reason
        epoch, done = index + 1, (index + 1) * per_epoch
        scores = validation_scores(model, val_set)
        elapsed = time.perf_counter() - started
        history.append({"epoch": epoch, "iterations": done, "loss": float(np.mean(losses)),
                        "elapsed_s": round(elapsed, 1), **scores})
        log(f"epoch {epoch}: loss {np.mean(losses):.4f} val dice erythema {scores['dice_erythema']:.4f} "
            f"wheal {scores['dice_wheal']:.4f} ({elapsed:.0f} s)")
        if scores["score"] > state["best"]:
            state.update(best=scores["score"], best_epoch=epoch, stale=0, best_state=copy.deepcopy(model.state_dict()))
        else:
            state["stale"] += 1
        state["elapsed_s"] = elapsed
        save_checkpoint(checkpoint, model, optimiser, done, {**state, "rng": rng.bit_generator.state})
        if state["stale"] >= cfg.optim.early_stopping_patience:
            stop_reason = f"early stopping (no improvement for {state['stale']} epochs)"
            return True
        if cfg.optim.max_minutes and elapsed > cfg.optim.max_minutes * 60:
            stop_reason = f"time budget of {cfg.optim.max_minutes} min reached"
            return True
        return False

    run_epochs(batch_loss, optimiser, None, cfg.optim.epochs, per_epoch, end_epoch, start_epoch=len(history),
               begin_epoch=begin_epoch)
    best_state, best_epoch, step = state["best_state"], state["best_epoch"], len(history) * per_epoch
    assert best_state is not None
    weights = out / f"{cfg.name}.pt"
    model.load_state_dict(best_state)
    save_weights_fp16(model, weights)
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
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (e.g. raised on --resume "
                                                "when a small validation set is too noisy to stop on)")
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
                        ("batch_size", args.batch_size), ("max_minutes", args.max_minutes), ("lr", args.lr),
                        ("early_stopping_patience", args.patience)):
        if value is not None:
            setattr(cfg.optim, attr, value)
    train(cfg, args.out, log=lambda line: print(line, flush=True), resume=args.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
