"""Demo visits of one patient: baseline and follow-ups with known, shrinking vitiligo.

Each visit is a study of the demo patient (apps.demo_study's astronaut portrait, same
views) photographed on its own date. The baseline's painted patches repigment from
their margins (as vitiligo does under treatment): at a follow-up each patch keeps the
part farthest from its border, ``remaining`` of its area. Follow-ups are framed slightly
differently (zoom and shift), so comparing visits needs the face-mesh warp, not a pixel
diff. The painted masks are the truth: F-Vitiligo and its change per view are known.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from dicom.encode import DEMO_PATIENT, PatientInfo, photograph_dataset, write_dataset
from models.face import FaceSkinMasker
from models.metrics import f_vitiligo
from models.facial.synthetic import depigmentation_weight, paint_depigmentation

from .demo_study import DEMO_SEED, VIEWS, HEIGHT, WIDTH, DemoPhotograph, astronaut_portrait, turn

DEMO_ISSUER = "DERMPACS-DEMO-SITE"
BASELINE_DATE = dt.datetime(2026, 3, 2, 10, 0, 0)


@dataclass(frozen=True)
class DemoVisit:
    number: int  # 1 = baseline
    study_instance_uid: str
    date: dt.date
    photographs: list[DemoPhotograph]

    def truth(self) -> dict[str, float]:
        return {p.view: p.true_f_vitiligo for p in self.photographs}


def shrink_to(weight: np.ndarray, remaining: float) -> np.ndarray:
    """Blend weight whose lesion (>= 0.5) keeps the ``remaining`` fraction farthest from its border."""
    if remaining >= 1.0:
        return weight
    core = (weight >= 0.5).astype(np.uint8)
    if not core.any() or remaining <= 0:
        return np.zeros_like(weight)
    dist = cv2.distanceTransform(core, cv2.DIST_L2, 5)
    cut = float(np.quantile(dist[core.astype(bool)], 1.0 - remaining))
    kept = (dist > cut).astype(np.float32)
    soft = cv2.GaussianBlur(kept, (0, 0), 2.0)  # keep a soft border like the painter's
    return np.minimum(weight, np.clip(soft * 1.02, 0, 1)).astype(np.float32)


def _reframe(image: np.ndarray, zoom: float, shift: tuple[float, float], border=(205, 205, 210)) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, zoom)
    matrix[:, 2] += shift
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=border), matrix


def make_demo_visits(
    folder: Path,
    remaining: tuple[float, ...] = (1.0, 0.5),
    seed: int = DEMO_SEED,
    views: tuple[str, ...] = VIEWS,
    size: tuple[int, int] = (WIDTH, HEIGHT),
    masker: FaceSkinMasker | None = None,
    patient: PatientInfo = DEMO_PATIENT,
    issuer: str = DEMO_ISSUER,
    days_between: int = 91,
) -> list[DemoVisit]:
    """Write ``folder/visit-<n>/face_<view>.dcm``: one study per entry of ``remaining`` (lesion area kept)."""
    masker = masker or FaceSkinMasker()
    portrait = astronaut_portrait(*size, seed=seed)
    rng = np.random.default_rng(seed)
    # The baseline's patches, per view, in the baseline's frame (blend weights, full size).
    weights = {}
    for view in views:
        face = masker.mask(turn(portrait, view))
        x0, y0, x1, y1 = face.roi
        full = np.zeros(face.skin_mask.shape, np.float32)
        full[y0:y1, x0:x1] = depigmentation_weight(face.skin_mask[y0:y1, x0:x1], rng)
        weights[view] = full
    visits = []
    for number, keep in enumerate(remaining, start=1):
        when = BASELINE_DATE + dt.timedelta(days=days_between * (number - 1))
        study_uid, series_uid = generate_uid(), generate_uid()
        info = dataclasses.replace(patient, study_datetime=when, study_id=str(number))
        visit_folder = folder / f"visit-{number}"
        visit_folder.mkdir(parents=True, exist_ok=True)
        photographs = []
        for instance, view in enumerate(views, start=1):
            clean = turn(portrait, view)
            weight = shrink_to(weights[view], keep)
            if number > 1:  # framed a little differently at every follow-up
                zoom, shift = 1.0 + 0.02 * (number - 1), (-25.0 * (number - 1), 18.0 * (number - 1))
                clean, matrix = _reframe(clean, zoom, shift)
                weight = cv2.warpAffine(weight, matrix, (clean.shape[1], clean.shape[0]), flags=cv2.INTER_LINEAR)
            face = masker.mask(clean)
            x0, y0, x1, y1 = face.roi
            skin_roi = face.skin_mask[y0:y1, x0:x1]
            painted_roi, lesion_roi = paint_depigmentation(clean[y0:y1, x0:x1], skin_roi, rng, weight=weight[y0:y1, x0:x1])
            painted = clean.copy()
            painted[y0:y1, x0:x1] = painted_roi
            lesion = np.zeros(face.skin_mask.shape, bool)
            lesion[y0:y1, x0:x1] = lesion_roi & skin_roi
            ds = photograph_dataset(
                painted, transfer_syntax=JPEGBaseline8Bit, patient=info, study_uid=study_uid, series_uid=series_uid,
                series_number=1, instance_number=instance, series_description="Facial vitiligo follow-up",
                body_part="FACE", view=view,
            )
            ds.IssuerOfPatientID = issuer
            path = write_dataset(ds, visit_folder / f"face_{view}.dcm")
            photographs.append(DemoPhotograph(path, str(ds.SOPInstanceUID), view, f_vitiligo(lesion, face.skin_mask),
                                              lesion, face.skin_mask))
        visits.append(DemoVisit(number, study_uid, when.date(), photographs))
    return visits
