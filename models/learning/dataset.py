"""The node's local training set: (photograph, corrected mask) pairs from the clinic's own corrections.

It holds photographs of patients, so it is private by construction: folders 0700, files
0600, nothing in it is ever sent anywhere, and it is pruned by ``retention_days``. Each
case is keyed by a hash of the photograph's SOP Instance UID (a newer correction of the
same photograph replaces the older one), and that hash alone fixes whether the case is
held out for evaluation: a held-out photograph stays held out forever, whatever arrives
later, so no candidate is ever trained on a photograph it is judged on.

Layout (the folder-dataset layout ``models.facial.data`` reads)::

    <data_dir>/learning/<app>/cases/<case>/image.png   the photograph (RGB)
                                           mask.png    the corrected lesion mask (255 = lesion)
                                           skin.png    the denominator mask (optional)
                                           case.json   UIDs, creator, dates, segment mapping
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


@dataclass(frozen=True)
class SegmentRole:
    """A coded segment property type and what it is to the app's model."""

    scheme: str
    code: str
    meaning: str
    role: str  # "lesion" (required) or "skin" (the denominator, optional)


@dataclass(frozen=True)
class AppSegments:
    """Which segments a correction for an app must and may carry."""

    app: str
    lesion: SegmentRole
    skin: SegmentRole | None = None
    extra_lesions: tuple[SegmentRole, ...] = ()  # further classes (prick: erythema around the wheal)

    @property
    def roles(self) -> dict[str, SegmentRole]:
        roles = [self.lesion, *self.extra_lesions] + ([self.skin] if self.skin else [])
        return {f"{r.scheme}:{r.code}": r for r in roles}

    def explain(self) -> str:
        parts = [f"{r.meaning} ({r.scheme} {r.code}) -> {r.role}" for r in self.roles.values()]
        return "; ".join(parts)


# Codes as in dicom/codes.py (the segments the apps write).
VITILIGO = SegmentRole("SCT", "56727007", "Vitiligo", "lesion")
SKIN_OF_FACE = SegmentRole("SCT", "73897004", "Skin of face", "skin")
SKIN = SegmentRole("SCT", "39937001", "Skin", "skin")
WHEAL = SegmentRole("SCT", "247472004", "Wheal", "lesion")
ERYTHEMA = SegmentRole("SCT", "70819003", "Erythema", "erythema")

APP_SEGMENTS: dict[str, AppSegments] = {
    "facial_vitiligo": AppSegments("facial_vitiligo", VITILIGO, SKIN_OF_FACE),
    "vitiligo_lesion": AppSegments("vitiligo_lesion", VITILIGO, SKIN),
    "skin_prick": AppSegments("skin_prick", WHEAL, None, (ERYTHEMA,)),
}


def case_id_for(photo_sop_instance_uid: str) -> str:
    """The case key: a hash of the photograph's UID (file names never carry UIDs)."""
    return hashlib.sha256(photo_sop_instance_uid.encode("ascii", "replace")).hexdigest()[:24]


def is_held_out(case_id: str, holdout_percent: int) -> bool:
    """Fixed by the case's own hash: the same photograph is held out in every run, forever."""
    bucket = int(hashlib.sha256(f"heldout:{case_id}".encode()).hexdigest(), 16) % 100
    return bucket < holdout_percent


def make_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(path, PRIVATE_DIR)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Atomic write of a 0600 file (temporary file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        os.fchmod(fd, PRIVATE_FILE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


@dataclass(frozen=True)
class Case:
    app: str
    case_id: str
    folder: Path
    meta: dict[str, Any]
    held_out: bool


class TrainingSet:
    """The corrections of every app under ``<data_dir>/learning``."""

    def __init__(self, data_dir: str | Path, holdout_percent: int = 20) -> None:
        self.root = Path(data_dir) / "learning"
        self.holdout_percent = int(holdout_percent)

    def app_dir(self, app: str) -> Path:
        return self.root / app / "cases"

    def add(self, app: str, photo_uid: str, image_rgb: np.ndarray, lesion: np.ndarray,
            skin: np.ndarray | None, meta: dict[str, Any], extra: dict[str, np.ndarray] | None = None) -> Case:
        """Write (or replace) the case of this photograph; returns it."""
        make_private_dir(self.root)
        make_private_dir(self.root / app)
        cases = make_private_dir(self.app_dir(app))
        case_id = case_id_for(photo_uid)
        staging = Path(tempfile.mkdtemp(dir=cases, prefix=".new-"))
        os.chmod(staging, PRIVATE_DIR)
        try:
            write_private(staging / "image.png", _png(np.ascontiguousarray(image_rgb[..., ::-1])))
            write_private(staging / "mask.png", _png(lesion.astype(np.uint8) * 255))
            if skin is not None:
                write_private(staging / "skin.png", _png(skin.astype(np.uint8) * 255))
            for name, mask in (extra or {}).items():
                write_private(staging / f"{name}.png", _png(mask.astype(np.uint8) * 255))
            held_out = is_held_out(case_id, self.holdout_percent)
            record = {**meta, "app": app, "case_id": case_id, "held_out": held_out,
                      "filed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
            write_private(staging / "case.json", json.dumps(record, indent=2).encode())
            final = cases / case_id
            if final.exists():
                old = cases / f".old-{case_id}-{time.time_ns()}"
                final.rename(old)
                staging.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return Case(app, case_id, final, record, held_out)

    def cases(self, app: str) -> list[Case]:
        folder = self.app_dir(app)
        if not folder.is_dir():
            return []
        found = []
        for path in sorted(folder.iterdir()):
            meta_path = path / "case.json"
            if path.name.startswith(".") or not meta_path.exists():
                continue
            meta = json.loads(meta_path.read_text())
            found.append(Case(app, path.name, path, meta, is_held_out(path.name, self.holdout_percent)))
        return found

    def split(self, app: str) -> tuple[list[Case], list[Case]]:
        """(training cases, held-out cases) under the fixed hash rule."""
        cases = self.cases(app)
        return [c for c in cases if not c.held_out], [c for c in cases if c.held_out]

    def has_correction(self, seg_sop_instance_uid: str) -> bool:
        for app in self.apps():
            for case in self.cases(app):
                if case.meta.get("correction_sop_instance_uid") == seg_sop_instance_uid:
                    return True
        return False

    def apps(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "cases").is_dir())

    def apply_retention(self, retention_days: float | None, now: float | None = None) -> list[str]:
        """Delete cases filed more than ``retention_days`` ago; returns their case ids."""
        if not retention_days:
            return []
        now = time.time() if now is None else now
        removed = []
        for app in self.apps():
            for case in self.cases(app):
                filed = dt.datetime.fromisoformat(case.meta["filed_at"]).timestamp()
                if now - filed > retention_days * 86400:
                    shutil.rmtree(case.folder, ignore_errors=True)
                    removed.append(case.case_id)
        # Hard links a training run made (an interrupted run keeps its data folder) go too.
        for case_id in removed:
            for link in self.root.glob(f"runs/*/*/*/{case_id}.png"):
                link.unlink(missing_ok=True)
        return removed

    def materialize(self, cases: list[Case], target: Path) -> Path:
        """A folder dataset (images/, masks/, skin/, erythema/) of these cases, hard-linked, for the trainers."""
        for sub in ("images", "masks", "skin", "erythema"):
            make_private_dir(target / sub)
        for case in cases:
            for src, sub in (("image.png", "images"), ("mask.png", "masks"), ("skin.png", "skin"),
                             ("erythema.png", "erythema")):
                source = case.folder / src
                dest = target / sub / f"{case.case_id}.png"
                if source.exists() and not dest.exists():
                    try:
                        os.link(source, dest)
                    except OSError:
                        shutil.copy2(source, dest)
                        os.chmod(dest, PRIVATE_FILE)
        return target
