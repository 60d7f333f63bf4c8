"""Shared training engine: the iteration loop, checkpoint/resume, fp16 weights, reports.

Used by the facial task (``models.facial.train``). The close-up (``models.lesion``),
skin-prick (``models.prick``) and scalp (``models.scalp``) tasks still run their own loops
(see models/README.md); they can move onto this engine one at a time.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm


def save_weights_fp16(model: torch.nn.Module, path: Path) -> None:
    """State dict with floating tensors in fp16 (half the size; loads back into fp32)."""
    state = {k: (v.detach().half() if torch.is_floating_point(v) else v.detach())
             for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, iteration: int) -> None:
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "iteration": iteration, "torch_rng": torch.get_rng_state()}, path)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restores model, optimizer and torch RNG; returns the iteration to resume from."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["torch_rng"])
    return int(ckpt["iteration"])


def set_training(model: torch.nn.Module, training: bool = True, freeze_batchnorm: bool = False) -> None:
    """``model.train(training)``; with ``freeze_batchnorm`` the BatchNorm layers stay in eval mode.

    Fine-tuning on a few photographs with batches of 2-4 would otherwise replace the running
    statistics learnt on thousands of samples by those of a handful of clinic images, which
    ruins the model at inference even when the loss falls.
    """
    model.train(training)
    if training and freeze_batchnorm:
        for layer in model.modules():
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                layer.eval()


def run_iterations(step: Callable[[int, float], torch.Tensor], optimizer: torch.optim.Optimizer,
                   lr_at: Callable[[int], float], start: int, total: int, checkpoint_every: int,
                   on_checkpoint: Callable[[int, float], None], progress: bool = True,
                   desc: str = "train") -> None:
    """The loop: per iteration set the learning rate, ``step(it, lr)`` returns the loss,
    backward + optimizer step, tqdm progress, ``on_checkpoint(done, mean_loss)`` every
    ``checkpoint_every`` iterations and at the end. Raises on a non-finite loss."""
    bar = tqdm(range(start, total), initial=start, total=total, disable=not progress, desc=desc)
    running, n_running = 0.0, 0
    for it in bar:
        lr = lr_at(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = step(it, lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at iteration {it}")
        running += value
        n_running += 1
        bar.set_postfix(loss=f"{running / n_running:.4f}", lr=f"{lr:.2e}")
        done = it + 1
        if done % max(1, checkpoint_every) == 0 or done == total:
            on_checkpoint(done, running / n_running)
            running, n_running = 0.0, 0


def append_log(path: Path, record: dict, progress: bool = True) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    if progress:
        tqdm.write(json.dumps(record))
