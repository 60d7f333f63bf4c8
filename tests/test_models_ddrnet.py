"""DDRNet shapes and the OHEM cross-entropy."""
from __future__ import annotations

import pytest
import torch

from models.config import ModelConfig
from models.facial.ddrnet import DDRNet, build_model
from models.losses import OhemCrossEntropy


def test_default_is_ddrnet23_slim():
    model = build_model(ModelConfig())
    n_params = sum(p.numel() for p in model.parameters())
    # DDRNet-23-slim has 5.7 M parameters (Hong et al. 2021, Table 1).
    assert 5.5e6 < n_params < 5.9e6
    assert model.aux_head is not None


def test_train_returns_main_and_aux_at_input_size():
    torch.manual_seed(0)
    model = DDRNet(planes=8, spp_planes=16, head_planes=8, layers=[1, 1, 1, 1]).train()
    out = model(torch.randn(2, 3, 96, 80))
    assert isinstance(out, tuple) and len(out) == 2
    assert out[0].shape == (2, 2, 96, 80) and out[1].shape == (2, 2, 96, 80)


def test_eval_returns_logits_at_input_size_and_low_res_on_request():
    model = DDRNet(planes=8, spp_planes=16, head_planes=8, layers=[1, 1, 1, 1]).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 128))
        low = model(torch.randn(1, 3, 128, 128), upsample=False)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 128, 128)
    assert low.shape == (1, 2, 16, 16)  # the high-resolution branch works at 1/8


def test_width_and_depth_are_configurable():
    small = DDRNet(planes=8, spp_planes=16, head_planes=8, layers=[1, 1, 1, 1], aux_head=False)
    big = DDRNet(planes=16, spp_planes=32, head_planes=16, layers=[2, 2, 2, 2], aux_head=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(big) > 3 * count(small)
    assert small.aux_head is None
    with pytest.raises(ValueError):
        build_model(ModelConfig(architecture="unet"))  # type: ignore[arg-type]


def _logits_for(prob_true: torch.Tensor) -> torch.Tensor:
    """Two-class logits whose softmax gives prob_true to class 1."""
    p = prob_true.clamp(1e-4, 1 - 1e-4)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], 0).unsqueeze(0)


def test_ohem_ignores_easy_pixels():
    target = torch.ones(1, 4, 4, dtype=torch.long)
    prob = torch.full((4, 4), 0.99)
    prob[0, 0] = 0.2  # the only hard pixel
    loss = OhemCrossEntropy(thresh=0.7, min_kept=1)(_logits_for(prob), target)
    assert loss.item() == pytest.approx(-torch.log(torch.tensor(0.2)).item(), rel=1e-3)
    # plain CE is diluted by the 15 easy pixels
    plain = torch.nn.functional.cross_entropy(_logits_for(prob), target)
    assert plain.item() < 0.5 * loss.item()


def test_ohem_keeps_at_least_min_kept_and_skips_ignored():
    target = torch.ones(1, 2, 4, dtype=torch.long)
    target[0, 1] = 255  # ignored row
    prob = torch.tensor([[0.9, 0.95, 0.97, 0.99], [0.01, 0.01, 0.01, 0.01]])
    loss = OhemCrossEntropy(thresh=0.7, min_kept=2, ignore_index=255)(_logits_for(prob), target)
    expected = -(torch.log(torch.tensor(0.9)) + torch.log(torch.tensor(0.95))) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-3)


def test_ohem_gradient_flows_to_hard_pixels_only():
    target = torch.tensor([[[1, 0]]])
    logits = torch.tensor([[[[0.0, 5.0]], [[0.0, -5.0]]]], requires_grad=True)  # pixel 0 hard, 1 easy
    loss = OhemCrossEntropy(thresh=0.7, min_kept=1)(logits, target)
    loss.backward()
    assert logits.grad is not None
    assert logits.grad[0, :, 0, 0].abs().sum() > 0
    assert logits.grad[0, :, 0, 1].abs().sum() == 0


def test_ohem_all_ignored_is_zero_with_graph():
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    loss = OhemCrossEntropy()(logits, torch.full((1, 3, 3), 255, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0
