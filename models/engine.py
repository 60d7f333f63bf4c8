"""Shared training engine: the iteration loop, checkpoint/resume, fp16 weights, reports.

Every task trains through it, so backward/step, the non-finite-loss guard, the checkpoint
format and the fp16 weights writer exist once: the facial task (``models.facial.train``)
and close-up fine-tuning (``models.learning.trainers``) run ``run_iterations`` directly;
the close-up (``models.lesion``), skin-prick (``models.prick``) and scalp (``models.scalp``)
tasks train in epochs (validation, best epoch, early stopping between them) through
``run_epochs``, which is built on ``run_iterations``. A task supplies only what is its own:
the batch and loss of one iteration, the learning-rate schedule and what happens at an
epoch's end or a checkpoint.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm


def save_weights_fp16(model: torch.nn.Module, path: Path) -> None:
    """State dict with floating tensors in fp16 (half the size; loads back into fp32)."""
    state = {k: (v.detach().half() if torch.is_floating_point(v) else v.detach())
             for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, iteration: int,
                    extra: dict[str, Any] | None = None) -> None:
    """fp32 model + optimizer + torch RNG at ``iteration``; ``extra`` holds the task's own
    resume state (e.g. best epoch so far, a numpy generator's state), so every task writes
    the same format."""
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "iteration": iteration, "torch_rng": torch.get_rng_state(), "extra": extra or {}}, path)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    extra: dict[str, Any] | None = None) -> int:
    """Restores model, optimizer and torch RNG; returns the iteration to resume from.
    The task's resume state saved with the checkpoint is copied into ``extra`` when given."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["torch_rng"])
    if extra is not None:
        extra.update(ckpt.get("extra", {}))
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
                   lr_at: Callable[[int], float] | None, start: int, total: int, checkpoint_every: int,
                   on_checkpoint: Callable[[int, float], bool | None], progress: bool = True,
                   desc: str = "train", scheduler: Any = None,
                   after_step: Callable[[int, float], bool | None] | None = None) -> int:
    """The loop: per iteration set the learning rate, ``step(it, lr)`` returns the loss,
    backward + optimizer step (+ ``scheduler.step()``), tqdm progress,
    ``on_checkpoint(done, mean_loss)`` every ``checkpoint_every`` iterations and at the end.
    Raises on a non-finite loss.

    ``lr_at=None`` leaves the learning rate to the optimizer (constant) or to ``scheduler``
    (a torch LR scheduler, e.g. OneCycleLR, which also cycles momentum). ``after_step(it,
    loss)`` sees every loss; it or ``on_checkpoint`` returning True stops the run (early
    stopping, a wall-time cap) — a stop between checkpoints still reports the partial
    window to ``on_checkpoint``. Returns the number of iterations done."""
    bar = tqdm(range(start, total), initial=start, total=total, disable=not progress, desc=desc)
    running, n_running, done = 0.0, 0, start
    for it in bar:
        lr = lr_at(it) if lr_at is not None else optimizer.param_groups[0]["lr"]
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr
        loss = step(it, lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at iteration {it}")
        running += value
        n_running += 1
        bar.set_postfix(loss=f"{running / n_running:.4f}", lr=f"{lr:.2e}")
        done = it + 1
        stop = bool(after_step is not None and after_step(it, value))
        if stop or done % max(1, checkpoint_every) == 0 or done == total:
            stop = bool(on_checkpoint(done, running / n_running)) or stop
            running, n_running = 0.0, 0
        if stop:
            break
    bar.close()
    return done


def run_epochs(step: Callable[[int, float], torch.Tensor], optimizer: torch.optim.Optimizer,
               lr_at: Callable[[int], float] | None, epochs: int, iterations_per_epoch: int,
               on_epoch: Callable[[int, list[float]], bool | None], start_epoch: int = 0,
               begin_epoch: Callable[[int], None] | None = None,
               after_step: Callable[[int, list[float]], bool | None] | None = None,
               scheduler: Any = None, progress: bool = False, desc: str = "train") -> int:
    """Epoch-wise training on ``run_iterations``: epoch ``e`` (0-based) is the iterations
    ``e * iterations_per_epoch`` .. ``(e + 1) * iterations_per_epoch - 1`` (``step`` gets the
    global index, so per-iteration seeds survive a resume at ``start_epoch``).

    ``begin_epoch(e)`` runs before an epoch's first iteration (train mode, the epoch's
    shuffle); ``after_step(it, losses)`` sees the epoch's losses so far and may return True
    to cut the epoch short (wall-time cap); ``on_epoch(e, losses)`` runs at the epoch's end
    (validation, best weights, checkpoint) and returns True to stop (early stopping).
    Returns the number of epochs done, the cut-short one included."""
    n = int(iterations_per_epoch)
    if n < 1:
        raise ValueError(f"an epoch needs at least one iteration (got {iterations_per_epoch})")
    losses: list[float] = []
    finished = start_epoch

    def epoch_step(it: int, lr: float) -> torch.Tensor:
        if it % n == 0:
            losses.clear()
            if begin_epoch is not None:
                begin_epoch(it // n)
        return step(it, lr)

    def track(it: int, value: float) -> bool:
        losses.append(value)
        return bool(after_step is not None and after_step(it, losses))

    def epoch_end(done: int, _mean: float) -> bool:
        nonlocal finished
        finished = (done - 1) // n + 1
        return bool(on_epoch(finished - 1, list(losses)))

    run_iterations(epoch_step, optimizer, lr_at, start_epoch * n, epochs * n, n, epoch_end, progress, desc,
                   scheduler, track)
    return finished


def append_log(path: Path, record: dict, progress: bool = True) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    if progress:
        tqdm.write(json.dumps(record))
