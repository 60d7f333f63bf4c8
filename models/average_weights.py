"""Weight-space interpolation of two checkpoints of one network (a "model soup").

Two fine-tuning stages from a common start often trade one strength for another (stage 3 of
the facial model: fewer false calls on fair skin, but large confluent patches on real
portraits under-read). Their linear interpolation keeps much of both; ``alpha`` is the share
of ``b``. BatchNorm statistics are interpolated like any other floating tensor.

    python -m models.average_weights A.pt B.pt --alpha 0.3 --out C.pt
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def interpolate_state_dicts(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                            alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * a + alpha * b`` for floating tensors (fp16 out), ``b``'s value otherwise."""
    if set(a) != set(b):
        raise ValueError(f"the checkpoints hold different tensors: {sorted(set(a) ^ set(b))[:5]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within [0, 1], got {alpha}")
    out = {}
    for key, va in a.items():
        vb = b[key]
        if va.shape != vb.shape:
            raise ValueError(f"{key}: shapes differ {tuple(va.shape)} vs {tuple(vb.shape)}")
        out[key] = ((1 - alpha) * va.float() + alpha * vb.float()).half() if torch.is_floating_point(va) else vb
    return out


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m models.average_weights", description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--alpha", type=float, required=True, help="share of B (0 = A, 1 = B)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    load = lambda path: torch.load(path, map_location="cpu", weights_only=True)  # noqa: E731
    torch.save(interpolate_state_dicts(load(args.a), load(args.b), args.alpha), args.out)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
