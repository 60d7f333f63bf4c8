"""The embedded demo study: a real face photograph with painted, known vitiligo patches.

scikit-image ships the public-domain NASA portrait "astronaut"; we crop the head, scale it
to the paper's 2832x4240 portrait format, make left/frontal/right views (a perspective turn
stands in for the lateral views) and paint depigmented patches inside the face skin with
the training generator's painter. The painted mask is the ground truth, so the demo and
the tests know the true F-Vitiligo of every view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from dicom.encode import DEMO_PATIENT, photograph_dataset, write_dataset
from models.face import FaceSkinMasker
from models.face_refine import FaceSkinRefiner
from models.metrics import f_vitiligo
from models.facial.synthetic import paint_depigmentation

WIDTH, HEIGHT = 2832, 4240  # columns x rows of the paper's photographs (portrait)
VIEWS = ("left", "frontal", "right")
DEMO_SEED = 7  # the study `make demo` sends (its left view is 35 % depigmented)


@dataclass(frozen=True)
class DemoPhotograph:
    path: Path
    sop_instance_uid: str
    view: str
    true_f_vitiligo: float  # percent, painted lesion inside the face-skin mask
    lesion_mask: np.ndarray = field(repr=False)  # bool (H, W) ground truth
    skin_mask: np.ndarray = field(repr=False)  # bool (H, W) face-skin mask of the clean photograph


def astronaut_portrait(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> np.ndarray:
    """The astronaut's head, cropped to the portrait aspect ratio and upscaled, with film grain."""
    from skimage import data

    image = data.astronaut()
    crop = image[0:270, 130:310]  # head and neck, aspect 2:3 like 2832x4240
    big = cv2.resize(crop, (width, height), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(seed)
    grain = cv2.GaussianBlur(rng.normal(0, 3.0, (height, width)).astype(np.float32), (0, 0), 1.2)
    return np.clip(big.astype(np.float32) + grain[..., None], 0, 255).astype(np.uint8)


def turn(image: np.ndarray, view: str, strength: float = 0.16) -> np.ndarray:
    """A perspective warp that turns the face: 'left' shows the patient's left cheek."""
    if view == "frontal":
        return image
    h, w = image.shape[:2]
    squeeze = strength * h
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    if view == "left":  # nose towards image-left: the left image edge recedes
        dst = np.float32([[0, squeeze], [w, 0], [w, h], [0, h - squeeze]])
    else:
        dst = np.float32([[0, 0], [w, squeeze], [w, h - squeeze], [0, h]])
    matrix = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(205, 205, 210))


def paint_face(
    rgb: np.ndarray, masker: FaceSkinMasker, rng: np.random.Generator, refiner: FaceSkinRefiner | None = None,
    **paint_kwargs,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint patches inside the face skin (working in the face ROI only); returns image, lesion, skin.

    With ``refiner``, the skin is the one the app measures: the oval minus the hair fringe and
    background along its edge. Vitiligo is painted on skin only, never on hair, and the truth's
    denominator is that skin.
    """
    face = masker.mask(rgb)
    x0, y0, x1, y1 = face.roi
    skin_roi = face.skin_mask[y0:y1, x0:x1]
    if refiner is not None:
        skin_roi = refiner.refine(rgb[y0:y1, x0:x1], skin_roi).skin_mask
    painted_roi, lesion_roi = paint_depigmentation(rgb[y0:y1, x0:x1], skin_roi, rng, **paint_kwargs)
    painted = rgb.copy()
    painted[y0:y1, x0:x1] = painted_roi
    lesion = np.zeros(face.skin_mask.shape, dtype=bool)
    lesion[y0:y1, x0:x1] = lesion_roi & skin_roi
    skin = np.zeros(face.skin_mask.shape, dtype=bool)
    skin[y0:y1, x0:x1] = skin_roi
    return painted, lesion, skin


def make_demo_study(
    folder: Path,
    seed: int = DEMO_SEED,
    views: tuple[str, ...] = VIEWS,
    size: tuple[int, int] = (WIDTH, HEIGHT),
    masker: FaceSkinMasker | None = None,
    transfer_syntax: str = JPEGBaseline8Bit,
    pixel_spacing_mm: tuple[float, float] | None = None,
    paint: dict | None = None,
    uid_seed: str | None = None,
) -> list[DemoPhotograph]:
    """Write one VL Photographic Image per view (one study, one series) into ``folder``.

    ``paint`` overrides the painter's arguments (e.g. ``size_range`` for confluent patches).
    ``uid_seed`` makes the study, series and SOP Instance UIDs the same in every run (they
    are random otherwise), e.g. where a rule keyed on the UID, such as the learning
    hold-out split, must not change between runs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    masker = masker or FaceSkinMasker()
    refiner = FaceSkinRefiner()  # the app refines the oval's edge by default (refine_face_edge)
    rng = np.random.default_rng(seed)
    portrait = astronaut_portrait(*size, seed=seed)
    def uid(*parts: str) -> str:
        return generate_uid(entropy_srcs=[uid_seed, *parts]) if uid_seed is not None else generate_uid()

    study_uid, series_uid = uid("study"), uid("series")
    photographs = []
    for number, view in enumerate(views, start=1):
        painted, lesion, skin = paint_face(turn(portrait, view), masker, rng, refiner, **(paint or {}))
        ds = photograph_dataset(
            painted,
            transfer_syntax=transfer_syntax,
            patient=DEMO_PATIENT,
            study_uid=study_uid,
            series_uid=series_uid,
            series_number=1,
            instance_number=number,
            series_description="Facial vitiligo follow-up",
            body_part="FACE",
            view=view,
            pixel_spacing_mm=pixel_spacing_mm,
        )
        if uid_seed is not None:
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid("photograph", view)
        path = folder / f"face_{view}.dcm"
        write_dataset(ds, path)
        photographs.append(DemoPhotograph(path, str(ds.SOPInstanceUID), view, f_vitiligo(lesion, skin), lesion, skin))
    return photographs
