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


def segmentation_loss(name: str, logits: torch.Tensor, target: torch.Tensor, ce_weight: float = 1.0,
                      pos_weight=(1.0, 2.0, 5.0), dice_weight=(1.0, 1.0, 1.0)) -> torch.Tensor:
    if name == "sigmoid_dice_bce":
        return sigmoid_maps_loss(logits, target, pos_weight=pos_weight, dice_weight=dice_weight)
    target = target & 3  # the class bits of an encoded label map
    if name == "dice":
        return soft_dice_loss(logits, target)
    if name == "dice_ce":
        return soft_dice_loss(logits, target) + ce_weight * F.cross_entropy(logits, target)
    raise ValueError(f"unknown loss {name!r}")


def sigmoid_maps_loss(logits: torch.Tensor, target: torch.Tensor, site_weight: float = 1.0,
                      pos_weight=(1.0, 2.0, 5.0), dice_weight=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """Independent maps (reaction, wheal, site mark): BCE + soft Dice per map.

    ``target`` is the encoded label map of ``models.prick.data.encode_label``; the site map
    only counts for samples whose truth carries it (flag ``SITE_KNOWN``).
    """
    from .data import decode_targets

    t, known = decode_targets(target)  # (N, 3, H, W) float, (N,) bool
    weight = torch.ones_like(t)
    weight[:, 2] = known[:, None, None].to(t.dtype) * site_weight
    bce = F.binary_cross_entropy_with_logits(logits, t, weight=weight, pos_weight=torch.tensor(pos_weight, dtype=logits.dtype).view(1, 3, 1, 1))
    prob = logits.sigmoid() * (weight > 0)
    inter = (prob * t).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + (t * (weight > 0)).sum((0, 2, 3))
    dice = (2 * inter + 1.0) / (denom + 1.0)
    use = torch.tensor(dice_weight, dtype=logits.dtype) * torch.tensor([1.0, 1.0, 1.0 if bool(known.any()) else 0.0])
    return bce + ((1 - dice) * use).sum() / use.sum()
