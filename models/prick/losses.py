"""Dice-coefficient loss (the paper's), optionally plus cross-entropy."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over the classes (softmax probabilities vs one-hot labels).

    Dice is computed over the whole batch per class (stable when a crop lacks a class).
    """
    num_classes = logits.shape[1]
    prob = logits.softmax(1)
    onehot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).to(prob.dtype)
    dims = (0, 2, 3)
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice.mean()


def segmentation_loss(name: str, logits: torch.Tensor, target: torch.Tensor, ce_weight: float = 1.0) -> torch.Tensor:
    if name == "dice":
        return soft_dice_loss(logits, target)
    if name == "dice_ce":
        return soft_dice_loss(logits, target) + ce_weight * F.cross_entropy(logits, target)
    raise ValueError(f"unknown loss {name!r}")
