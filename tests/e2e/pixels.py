"""Judge OHIF screenshots in photograph pixel space.

``ohif_check.mjs`` records, for every screenshot, the screen position of the photo's
image points (0,0), (columns,0) and (0,rows) as Cornerstone computed them (DICOM image
coordinates: (0,0) is the top-left corner of the top-left pixel). From those three points
each screenshot is resampled onto the photograph's own pixel grid, so screenshots taken
at different zooms compare pixel by pixel with the photograph and with the SEG masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom

__all__ = [
    "Geometry",
    "read_rgb",
    "to_image_space",
    "image_to_screen",
    "photo_agreement",
    "changed_pixels",
    "OverlayScore",
    "overlay_score",
    "seg_masks",
]


@dataclass(frozen=True)
class Geometry:
    """Screen placement of a photograph (CSS pixels = screenshot pixels at scale factor 1)."""

    rows: int
    columns: int
    origin: np.ndarray  # screen (x, y) of image point (0, 0)
    per_column: np.ndarray  # screen step for +1 image column
    per_row: np.ndarray  # screen step for +1 image row
    canvas: tuple[float, float, float, float]  # viewport canvas left, top, width, height

    @classmethod
    def from_report(cls, g: dict) -> "Geometry":
        origin = np.asarray(g["origin"], float)
        return cls(
            rows=int(g["rows"]),
            columns=int(g["columns"]),
            origin=origin,
            per_column=(np.asarray(g["xAxis"], float) - origin) / g["columns"],
            per_row=(np.asarray(g["yAxis"], float) - origin) / g["rows"],
            canvas=tuple(g["canvas"]),
        )

    @property
    def scale(self) -> float:
        """Screen pixels per photo pixel (mean of both axes)."""
        return float((np.linalg.norm(self.per_column) + np.linalg.norm(self.per_row)) / 2)


def read_rgb(path: str | Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_to_screen(geometry: Geometry, xy: np.ndarray) -> np.ndarray:
    """Image coordinates (x = column, y = row; pixel corners at integers) -> screen (x, y)."""
    xy = np.asarray(xy, float)
    return geometry.origin + xy[..., :1] * geometry.per_column + xy[..., 1:2] * geometry.per_row


def to_image_space(shot: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Resample a screenshot onto the photo's pixel grid: (rows, columns, 3) uint8.

    Photo pixel (c, r) has its centre at image point (c + 0.5, r + 0.5); the screenshot
    pixel (i, j) has its centre at screen point (i + 0.5, j + 0.5).
    """
    a, b = geometry.per_column, geometry.per_row
    t = geometry.origin + 0.5 * a + 0.5 * b - 0.5
    matrix = np.array([[a[0], b[0], t[0]], [a[1], b[1], t[1]]], dtype=np.float64)
    return cv2.warpAffine(
        shot, matrix, (geometry.columns, geometry.rows),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
    )


def photo_agreement(shown: np.ndarray, photo: np.ndarray) -> tuple[float, float]:
    """(Pearson correlation of luminance, mean absolute difference 0-255) of two RGB images."""
    grey_shown = cv2.cvtColor(shown, cv2.COLOR_RGB2GRAY).astype(np.float64).ravel()
    grey_photo = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float64).ravel()
    correlation = float(np.corrcoef(grey_shown, grey_photo)[0, 1]) if grey_shown.std() > 0 else 0.0
    mad = float(np.abs(shown.astype(np.int16) - photo.astype(np.int16)).mean())
    return correlation, mad


def changed_pixels(after: np.ndarray, before: np.ndarray, threshold: int = 40) -> np.ndarray:
    """Bool mask where any channel differs by more than ``threshold`` (an overlay was drawn)."""
    return (np.abs(after.astype(np.int16) - before.astype(np.int16)).max(axis=2) > threshold)


@dataclass(frozen=True)
class OverlayScore:
    changed: int  # photo pixels the overlay changed
    expected: int  # pixels of the SEG region
    inside: float  # fraction of changed pixels within the SEG region (+ margin)
    covered: float  # fraction of the SEG region's interior (- margin) that changed
    outside: int  # changed pixels farther than the margin from the SEG region

    def __str__(self) -> str:
        return (f"{self.changed} px changed, SEG region {self.expected} px, "
                f"{self.inside:.1%} of changes inside it, {self.covered:.1%} of it covered, {self.outside} px outside")


def overlay_score(changed: np.ndarray, expected: np.ndarray, margin_px: int) -> OverlayScore:
    """Compare where the overlay changed the photo with where the SEG says it should.

    ``margin_px`` photo pixels of tolerance on either side of the region's edge: OHIF
    draws a 1-2 screen-pixel outline on the boundary and resampling blurs edges.
    """
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin_px + 1, 2 * margin_px + 1))
    region = expected.astype(np.uint8)
    grown = cv2.dilate(region, kernel).astype(bool)
    core = cv2.erode(region, kernel).astype(bool)
    n_changed = int(changed.sum())
    inside = float((changed & grown).sum() / n_changed) if n_changed else 0.0
    covered = float((changed & core).sum() / core.sum()) if core.any() else 1.0
    return OverlayScore(n_changed, int(expected.sum()), inside, covered, int((changed & ~grown).sum()))


def seg_masks(path: str | Path, source_sop_instance_uid: str) -> dict[str, np.ndarray]:
    """Segment label -> bool (rows, columns) mask on the source photo, read with pydicom only.

    Frames are assigned by each frame's Segment Identification and Derivation Image >
    Source Image references, as a viewer does; frames of other source images are ignored.
    """
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}
    masks = {label: np.zeros((int(ds.Rows), int(ds.Columns)), bool) for label in labels.values()}
    for index, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        sources = [
            str(item.ReferencedSOPInstanceUID)
            for derivation in group.get("DerivationImageSequence", [])
            for item in derivation.get("SourceImageSequence", [])
        ]
        if source_sop_instance_uid in sources:
            masks[labels[number]] |= frames[index].astype(bool)
    return masks
