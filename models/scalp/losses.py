"""Multi-head focal loss (Lin et al. 2017), the scalp paper's loss (gamma 2.0)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadFocalLoss(nn.Module):
    """mean over (sample, indicator) of  -w[l, y] * (1 - p_y)^gamma * log p_y.

    ``logits`` (B, L, K), ``target`` (B, L) int grades. ``class_weights`` (L, K) or None.
    gamma = 0 and no weights is plain cross-entropy.
    """

    def __init__(self, gamma: float = 2.0, class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = float(gamma)
        self.register_buffer("class_weights", None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=-1)
        logp_t = logp.gather(-1, target.long().unsqueeze(-1)).squeeze(-1)  # (B, L)
        p_t = logp_t.exp()
        loss = -((1.0 - p_t).clamp(min=0.0) ** self.gamma) * logp_t
        if self.class_weights is not None:
            w = self.class_weights.to(loss.device)  # (L, K)
            idx = torch.arange(loss.shape[1], device=loss.device).expand_as(target)
            loss = loss * w[idx, target.long()]
        return loss.mean()


def class_weights_from_labels(labels: np.ndarray, mode: str, num_grades: int = 4) -> np.ndarray | None:
    """(L, K) weights from training labels (N, L): w ~ f^-0.5 or 1/f, mean 1 per indicator.

    A grade absent from the labels gets the weight of the rarest present grade.
    """
    if mode == "none":
        return None
    power = {"inverse_sqrt": 0.5, "inverse": 1.0}[mode]
    labels = np.asarray(labels)
    out = np.ones((labels.shape[1], num_grades), np.float32)
    for l in range(labels.shape[1]):
        counts = np.bincount(labels[:, l], minlength=num_grades).astype(np.float64)
        freq = counts / max(1, counts.sum())
        present = freq > 0
        w = np.zeros(num_grades)
        w[present] = freq[present] ** -power
        w[~present] = w[present].max() if present.any() else 1.0
        out[l] = w / w.mean()
    return out
