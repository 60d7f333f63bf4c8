"""Align two photographs of one face: FaceMesh landmarks and a piecewise-affine warp.

Masks of an earlier visit are compared with today's by mapping them through the face
mesh: each triangle of MediaPipe's tessellation is an affine patch, so the warp follows
the face (turn, zoom, expression) where a single homography could not. Triangles that
face away from the camera in either photograph (a lateral view) are left out, and the
pixels they cover are reported as not comparable rather than guessed.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from .face import FaceSkinMasker, NoFaceFoundError


@functools.lru_cache(maxsize=1)
def mesh_triangles() -> np.ndarray:
    """(T, 3) vertex indices of FaceMesh's tessellation (its edge list's triangles)."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    neighbours: dict[int, set[int]] = {}
    for a, b in FACEMESH_TESSELATION:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    triangles = set()
    for a, b in FACEMESH_TESSELATION:
        for c in neighbours[a] & neighbours[b]:
            triangles.add(tuple(sorted((a, b, c))))
    return np.array(sorted(triangles), dtype=np.int32)


def face_landmarks(masker: FaceSkinMasker, rgb: np.ndarray) -> np.ndarray | None:
    """FaceMesh's landmarks (468, 2) of the largest face, median of the masker's passes; None: no mesh."""
    boxes = masker.detector.detect(rgb)
    if not boxes:
        raise NoFaceFoundError("no face found in the photograph")
    return masker.median_landmarks(rgb, boxes[0])


def _signed_areas(pts: np.ndarray, tri: np.ndarray) -> np.ndarray:
    a, b, c = pts[tri[:, 0]], pts[tri[:, 1]], pts[tri[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1]))


def warp_masks(
    masks: list[np.ndarray], src_pts: np.ndarray, dst_pts: np.ndarray, dst_shape: tuple[int, int]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Map boolean masks of the source photograph into the destination photograph.

    Returns the warped masks (bool, ``dst_shape``) and where the warp is defined: inside a
    mesh triangle seen from the front in both photographs, landing inside the source.
    """
    tri = mesh_triangles()
    src_area, dst_area = _signed_areas(src_pts, tri), _signed_areas(dst_pts, tri)
    # A triangle whose winding differs between the photographs is folded over (seen from
    # the front in one, turned away in the other): its pixels are not comparable.
    min_area = 2.0  # px^2; degenerate (edge-on) triangles carry no information
    usable = (np.sign(src_area) == np.sign(dst_area)) & (np.abs(src_area) > min_area) & (np.abs(dst_area) > min_area)
    h, w = dst_shape
    x0 = int(np.clip(np.floor(dst_pts[:, 0].min()), 0, w))
    y0 = int(np.clip(np.floor(dst_pts[:, 1].min()), 0, h))
    x1 = int(np.clip(np.ceil(dst_pts[:, 0].max()) + 1, 0, w))
    y1 = int(np.clip(np.ceil(dst_pts[:, 1].max()) + 1, 0, h))
    out = [np.zeros(dst_shape, bool) for _ in masks]
    valid = np.zeros(dst_shape, bool)
    if x1 <= x0 or y1 <= y0 or not usable.any():
        return out, valid
    index = np.full((y1 - y0, x1 - x0), -1, np.int32)
    offset = np.array([x0, y0], np.float64)
    matrices = np.zeros((len(tri), 2, 3), np.float64)
    for t in np.flatnonzero(usable):
        d = dst_pts[tri[t]] - offset
        matrices[t] = cv2.getAffineTransform(d.astype(np.float32), src_pts[tri[t]].astype(np.float32))
        cv2.fillConvexPoly(index, np.round(d * 16).astype(np.int32), int(t), lineType=cv2.LINE_8, shift=4)
    ys, xs = np.nonzero(index >= 0)
    m = matrices[index[ys, xs]]
    sx = m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]
    sy = m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]
    sh, sw = masks[0].shape if masks else (h, w)
    inside = (sx >= 0) & (sx <= sw - 1) & (sy >= 0) & (sy <= sh - 1)
    ys, xs, sx, sy = ys[inside], xs[inside], np.rint(sx[inside]).astype(np.intp), np.rint(sy[inside]).astype(np.intp)
    valid[ys + y0, xs + x0] = True
    for src, dst in zip(masks, out):
        dst[ys + y0, xs + x0] = src[sy, sx]
    return out, valid
