"""How a fine-tuning recipe fares on a clinic's corrections (``dermpacs learn train``'s recipe).

Builds demo studies (real portrait, painted patches with exact truth) as a clinic would see
them, holds out 4 photographs, fine-tunes the shipped facial model on the rest with the
learning trainer (synthetic replay included) and prints held-out mean Dice before/after.

    python -m benchmarks.finetune_recipe --paint '{"strength": 0.5}' --seeds 40 41 42 --lr 1e-4
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from apps.demo_study import make_demo_study
from dicom.reader import read_photograph
from models.face import FaceSkinMasker
from models.learning.finetune import evaluate_pair
from models.learning.trainers import FacialTrainer, _write_sample

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "weights" / "facial_vitiligo_ddrnet23slim.pt"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paint", default='{"strength": 0.5}', help="painter arguments (JSON), e.g. hypopigmented patches")
    p.add_argument("--seeds", type=int, nargs="+", default=[40, 41, 42], help="one demo study (3 views) per seed")
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--replay", type=float, default=2.0, help="synthetic samples per local photograph")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="finetune_recipe_"))
    try:
        masker = FaceSkinMasker()
        photos = [ph for s in args.seeds
                  for ph in make_demo_study(root / f"v{s}", seed=s, size=(354, 530), masker=masker,
                                            paint=json.loads(args.paint))]
        held = set(np.random.default_rng(0).choice(len(photos), 4, replace=False).tolist())
        for i, ph in enumerate(photos):
            folder = root / ("held" if i in held else "train")
            for sub in ("images", "skin", "masks"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            _write_sample(folder, f"c{i}", read_photograph(ph.path).pixels, ph.lesion_mask & ph.skin_mask, ph.skin_mask)
        trainer = FacialTrainer()
        trainer.replay(root / "train", round(args.replay * (len(photos) - len(held))), 1234)
        t0 = time.perf_counter()
        recipe = {"iterations": args.iterations, "learning_rate": args.lr, "batch_size": args.batch_size,
                  "input_size": None}
        weights = trainer.train(recipe, SHIPPED, root / "train", root / "out", "local.bench", "benchmark")
        ev = evaluate_pair(weights, SHIPPED, root / "held", 0)
        result = {"paint": args.paint, "seeds": args.seeds, "recipe": recipe, "train_s": round(time.perf_counter() - t0),
                  "held_out_mean_dice": {k: round(ev[k]["held_out"]["mean_dice"], 3) for k in ("active", "candidate")}}
        print(json.dumps(result))
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
