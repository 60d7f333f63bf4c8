"""Per-app pieces of fine-tuning: how an app's model trains on a folder dataset and is scored.

Each app keeps its own loss, augmentation and input geometry on the shared training
loop (``models.engine``) — these adapters only start it from the active weights, write
the candidate beside its config with the new version, and score a weights file on
(image, truth) samples with the same numbers for every app: mean and pooled Dice of the
lesion class, and the median error of the lesion extent (percent of the skin / face-skin
denominator).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .dataset import make_private_dir, write_private

SYNTHETIC_LONG_SIDE = 512


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def _write_sample(folder: Path, name: str, rgb: np.ndarray, lesion: np.ndarray, skin: np.ndarray) -> None:
    write_private(folder / "images" / f"{name}.png", _png(np.ascontiguousarray(rgb[..., ::-1])))
    write_private(folder / "skin" / f"{name}.png", _png(skin.astype(np.uint8) * 255))
    write_private(folder / "masks" / f"{name}.png", _png(lesion.astype(np.uint8) * 255))


def _scores(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """(pred lesion, true lesion, pred denominator, true denominator) per image -> summary."""
    from models.metrics import Confusion, confusion, f_vitiligo, metrics_from_confusion

    pooled, dices, errors = Confusion(0, 0, 0, 0), [], []
    for pred, truth, pred_skin, skin in pairs:
        c = confusion(pred, truth, skin)
        pooled = pooled + c
        dices.append(metrics_from_confusion(c)["dice"])
        errors.append(abs(f_vitiligo(pred, pred_skin) - f_vitiligo(truth, skin)))
    return {"n": len(dices), "mean_dice": float(np.mean(dices)), "pooled_dice": metrics_from_confusion(pooled)["dice"],
            "f_vitiligo_abs_error_median_pp": float(np.median(errors))}


class FacialTrainer:
    """DDRNet on the face ROI: the shared engine ``models.facial.train.train`` (OHEM, letterbox, augmentation)."""

    app = "facial_vitiligo"

    def train(self, recipe: dict[str, Any], base_weights: Path, train_data: Path, out: Path, version: str,
              description: str) -> Path:
        from models.config import load_config
        from models.facial.inference import config_path_for
        from models.facial.train import train

        cfg = load_config(config_path_for(base_weights))
        data = replace(cfg.data, source="folder", folder=str(train_data), val_fraction=0.0,
                       input_size=recipe["input_size"] or cfg.data.input_size)
        optim = replace(cfg.optim, lr=recipe["learning_rate"], batch_size=recipe["batch_size"],
                        iterations=recipe["iterations"], warmup_iters=0, lr_schedule="poly", freeze_batchnorm=True)
        loss = replace(cfg.loss, min_kept=min(cfg.loss.min_kept, data.input_size ** 2 // 4))
        cfg = replace(cfg, data=data, optim=optim, loss=loss, version=version, init_weights=str(base_weights),
                      checkpoint_every=max(1, recipe["iterations"] // 10), description=description)
        make_private_dir(out)
        return train(cfg, out, resume=True, progress=False)

    def held_out(self, folder: Path) -> list:
        from models.facial.data import list_folder_dataset, load_folder_sample

        return [(n, load_folder_sample(folder, n)) for n in list_folder_dataset(folder)]

    def synthetic(self, n: int, seed: int) -> list:
        from models.facial.evaluate import held_out_samples

        return list(held_out_samples("synthetic", n, seed, SYNTHETIC_LONG_SIDE))

    def replay(self, folder: Path, n: int, seed: int) -> None:
        for name, s in self.synthetic(n, seed):
            if not (folder / "masks" / f"{name}.png").exists():
                _write_sample(folder, name, s.image, s.lesion_mask, s.skin_mask)

    def score(self, weights: Path, samples: list) -> tuple[dict[str, str], dict[str, Any] | None]:
        import os

        from models.facial.inference import LesionSegmenter

        seg = LesionSegmenter.load(weights, num_threads=max(1, min(2, os.cpu_count() or 1)))
        rows = []
        for _, s in samples:
            pred = (seg.predict(s.image, s.skin_mask) >= 0.5) & s.skin_mask
            rows.append((pred, s.lesion_mask, s.skin_mask, s.skin_mask))
        return {"version": seg.version, "weights_sha256": seg.weights_sha256}, (_scores(rows) if rows else None)


class CloseUpTrainer:
    """U-Net/DeepLab close-up segmenter (not-skin, skin, vitiligo): the ``models.lesion`` pieces
    (seeded crop/flip/brightness augmentation, weighted cross-entropy, the paper's resize)."""

    app = "vitiligo_lesion"

    def train(self, recipe: dict[str, Any], base_weights: Path, train_data: Path, out: Path, version: str,
              description: str) -> Path:
        import torch
        import torch.nn.functional as F

        from models.facial.inference import load_state_dict
        from models.lesion.config import load_lesion_config, save_lesion_config
        from models.lesion.data import AugmentedDataset, read_folder, resize_pair
        from models.lesion.networks import build_model
        from models.engine import (append_log, load_checkpoint, run_iterations, save_checkpoint, save_weights_fp16,
                                   set_training)

        cfg = load_lesion_config(base_weights.with_suffix(".yaml"))
        cfg = replace(cfg, version=version, data=replace(cfg.data, source="folder", folder=str(train_data)))
        torch.manual_seed(cfg.data.seed)
        torch.set_num_threads(max(1, cfg.optim.threads))
        pairs = [resize_pair(i, lab, cfg.data.resize) for i, lab in read_folder(train_data)]
        dataset = AugmentedDataset(pairs, cfg.data.crop, cfg.augment, cfg.data.seed)
        model = build_model(cfg.model.architecture, cfg.model.encoder, cfg.model.num_classes)
        model.load_state_dict(load_state_dict(base_weights))
        opt = torch.optim.AdamW(model.parameters(), lr=recipe["learning_rate"], weight_decay=cfg.optim.weight_decay)
        make_private_dir(out)
        ckpt, log_path, weights_path = out / "checkpoint.pt", out / "train_log.jsonl", out / f"{cfg.name}.pt"
        total = int(recipe["iterations"])
        start = load_checkpoint(ckpt, model, opt) if ckpt.exists() else 0
        class_weights = torch.tensor(cfg.optim.class_weights, dtype=torch.float32)
        set_training(model, True, freeze_batchnorm=True)

        def step(it: int, _lr: float) -> torch.Tensor:
            dataset.epoch = it
            index = np.random.default_rng([cfg.data.seed, it]).integers(0, len(dataset), recipe["batch_size"])
            batch = [dataset[int(i)] for i in index]
            x, y = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
            return F.cross_entropy(model(x).float(), y, weight=class_weights)

        def checkpoint(done: int, loss: float) -> None:
            save_weights_fp16(model, weights_path)
            save_lesion_config(cfg, weights_path.with_suffix(".yaml"))
            save_checkpoint(ckpt, model, opt, done)
            append_log(log_path, {"iteration": done, "loss": loss, "time": time.time()}, progress=False)

        run_iterations(step, opt, lambda it: recipe["learning_rate"] * (1 - it / total) ** 0.9, start, total,
                       max(1, total // 10), checkpoint, progress=False)
        if not weights_path.exists():
            save_weights_fp16(model, weights_path)
            save_lesion_config(cfg, weights_path.with_suffix(".yaml"))
        return weights_path

    def held_out(self, folder: Path) -> list:
        from models.lesion.data import read_folder

        return [(f"{i}", pair) for i, pair in enumerate(read_folder(folder))]

    def synthetic(self, n: int, seed: int) -> list:
        from models.lesion.synthetic import generate_closeup, labels_of

        out = []
        for index in range(n):
            sample = generate_closeup(seed, index, size=SYNTHETIC_LONG_SIDE)
            out.append((f"synthetic_{index:04d}", (sample.image, labels_of(sample))))
        return out

    def replay(self, folder: Path, n: int, seed: int) -> None:
        for name, (image, labels) in self.synthetic(n, seed):
            if not (folder / "masks" / f"{name}.png").exists():
                _write_sample(folder, name, image, labels == 2, labels >= 1)

    def score(self, weights: Path, samples: list) -> tuple[dict[str, str], dict[str, Any] | None]:
        from models.lesion.inference import CloseUpSegmenter

        seg = CloseUpSegmenter.load(weights)
        rows = []
        for _, (image, labels) in samples:
            skin, lesion = seg.predict(image)
            rows.append((lesion, labels == 2, skin, labels >= 1))
        return {"version": seg.version, "weights_sha256": seg.weights_sha256}, (_scores(rows) if rows else None)


class PrickTrainer:
    """The prick-test U-Net (background, erythema halo, wheal): ``models.prick.train.train`` from the
    active weights. Corrections carry Wheal (the lesion) and Erythema; the engine reads label maps."""

    app = "skin_prick"

    @staticmethod
    def _label_folder(folder: Path, target: Path) -> Path:
        """images/ + masks/ (wheal) + erythema/ -> the prick engine's images/ + masks/ (0/1/2 label maps)."""
        for sub in ("images", "masks"):
            make_private_dir(target / sub)
        for image in sorted((folder / "images").glob("*.png")):
            wheal = cv2.imread(str(folder / "masks" / image.name), cv2.IMREAD_GRAYSCALE) > 0
            ery_path = folder / "erythema" / image.name
            erythema = (cv2.imread(str(ery_path), cv2.IMREAD_GRAYSCALE) > 0) if ery_path.exists() else wheal
            label = np.where(wheal, 2, np.where(erythema, 1, 0)).astype(np.uint8)
            write_private(target / "masks" / image.name, _png(label))
            link = target / "images" / image.name
            if not link.exists():
                link.hardlink_to(image)
        return target

    def train(self, recipe: dict[str, Any], base_weights: Path, train_data: Path, out: Path, version: str,
              description: str) -> Path:
        from models.prick.config import load_config
        from models.prick.data import list_folder_dataset
        from models.prick.train import train

        cfg = load_config(base_weights.with_suffix(".yaml"))
        epochs = 10
        optim = replace(cfg.optim, lr=recipe["learning_rate"], batch_size=recipe["batch_size"], epochs=epochs,
                        iterations_per_epoch=max(1, recipe["iterations"] // epochs), early_stopping_patience=epochs,
                        max_minutes=0.0)
        data = replace(cfg.data, source="folder", folder=None,
                       input_size=recipe["input_size"] or cfg.data.input_size)
        cfg = replace(cfg, version=version, init_weights=str(base_weights), optim=optim, data=data,
                      description=description)
        make_private_dir(out)
        labels = self._label_folder(train_data, out / "labels")
        names = list_folder_dataset(labels)
        # Validation (which epoch to keep) on the training photographs: the held-out ones are never seen.
        weights = out / f"{cfg.name}.pt"
        summary = train(cfg, out, folder=str(labels), train_names=names, val_names=names, log=lambda _m: None)
        with open(out / "train_log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"iteration": int(summary["iterations"]), "time": time.time()}) + "\n")
        import shutil

        shutil.rmtree(out / "labels", ignore_errors=True)
        return weights

    def held_out(self, folder: Path) -> list:
        from models.prick.data import list_folder_dataset, load_folder_sample

        labels = self._label_folder(folder, folder / "labels")
        return [(name, load_folder_sample(labels, name)) for name in list_folder_dataset(labels)]

    def synthetic(self, n: int, seed: int) -> list:
        from models.prick.synthetic import generate_sample

        return [(f"synthetic_{i:04d}", (s.image, s.label)) for i, s in
                ((i, generate_sample(seed, i, size=(SYNTHETIC_LONG_SIDE, SYNTHETIC_LONG_SIDE))) for i in range(n))]

    def replay(self, folder: Path, n: int, seed: int) -> None:
        for name, (image, label) in self.synthetic(n, seed):
            if not (folder / "masks" / f"{name}.png").exists():
                _write_sample(folder, name, image, label == 2, np.ones(label.shape, bool))
                write_private(folder / "erythema" / f"{name}.png", _png((label >= 1).astype(np.uint8) * 255))

    def score(self, weights: Path, samples: list) -> tuple[dict[str, str], dict[str, Any] | None]:
        from models.prick.inference import PrickSegmenter

        seg = PrickSegmenter.load(weights)
        rows = []
        for _, (image, label) in samples:
            _, wheal = seg.predict(image)
            everything = np.ones(label.shape, bool)
            rows.append((wheal, label == 2, everything, everything))
        return {"version": seg.version, "weights_sha256": seg.weights_sha256}, (_scores(rows) if rows else None)


TRAINERS = {t.app: t for t in (FacialTrainer(), CloseUpTrainer(), PrickTrainer())}
