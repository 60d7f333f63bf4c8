"""OHEM cross-entropy, the loss of DDRNet's reference training and of the vitiligo paper.

Online hard example mining keeps the gradient on pixels the network still gets wrong
(lesion borders, specular highlights, low-contrast patches) instead of letting millions
of easy skin pixels dominate the mean.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class OhemCrossEntropy(nn.Module):
    """Cross-entropy averaged over the hard pixels only.

    A pixel is hard when the softmax probability of its true class is below ``thresh``;
    if fewer than ``min_kept`` pixels are hard, the threshold is raised to the
    probability of the ``min_kept``-th hardest pixel so that at least that many count.
    Pixels labelled ``ignore_index`` (outside the face-skin mask) never count.
    """

    def __init__(self, thresh: float = 0.7, min_kept: int = 100_000, ignore_index: int = 255,
                 weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.thresh = float(thresh)
        self.min_kept = max(1, int(min_kept))
        self.ignore_index = ignore_index
        self.weight = weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        pixel_loss = F.cross_entropy(logits, target, weight=self.weight,
                                     ignore_index=self.ignore_index, reduction="none").reshape(-1)
        valid = target.reshape(-1) != self.ignore_index
        if not bool(valid.any()):
            return logits.sum() * 0.0  # keeps the graph; nothing to learn from
        with torch.no_grad():
            prob = logits.detach().softmax(1)
            safe_target = target.clone()
            safe_target[target == self.ignore_index] = 0
            true_prob = prob.gather(1, safe_target.unsqueeze(1)).reshape(-1)[valid]
            if true_prob.numel() <= self.min_kept:
                hard = torch.ones_like(true_prob, dtype=torch.bool)  # too few pixels: keep all
            else:
                # (min_kept+1)-th smallest, strict "<": exactly min_kept kept barring ties
                kth = torch.kthvalue(true_prob, self.min_kept + 1).values
                threshold = torch.maximum(kth, torch.tensor(self.thresh, dtype=true_prob.dtype))
                hard = true_prob < threshold
        kept = pixel_loss[valid][hard]
        if kept.numel() == 0:
            return logits.sum() * 0.0
        return kept.mean()
