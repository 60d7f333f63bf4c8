"""The trend picture: F-Vitiligo per view over all visits, as a Secondary Capture in the study.

A chart that OHIF displays like any image, so the dermatologist sees the course of the
disease without leaving the viewer. Drawn with matplotlib (Agg, no display), stored as
an RGB Secondary Capture Image (highdicom), ImageType DERIVED\\SECONDARY, Manufacturer
dermpacs: the PACS router does not send it back for analysis.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from . import __version__
from .seg import MANUFACTURER, AlgorithmIdentity, copy_issuer_of_patient_id

__all__ = ["TrendPoint", "render_trend", "build_trend_image"]


@dataclass(frozen=True)
class TrendPoint:
    """One visit's value for one view."""

    date: dt.date
    value: float

    def __post_init__(self) -> None:
        if not isinstance(self.date, dt.date):
            raise TypeError("date must be a datetime.date")
        if not np.isfinite(self.value) or not 0.0 <= self.value <= 100.0:
            raise ValueError(f"F-Vitiligo must be a percentage, got {self.value}")


def render_trend(series: Mapping[str, Sequence[TrendPoint]], title: str = "F-Vitiligo per view over visits",
                 size_px: tuple[int, int] = (1200, 800)) -> np.ndarray:
    """An RGB uint8 (H, W, 3) line chart, one line per view, with the baseline's 50/75/90 % levels."""
    if not series or not any(series.values()):
        raise ValueError("a trend needs at least one view with one visit")
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    width, height = size_px
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    colours = {"left": "tab:blue", "frontal": "tab:green", "right": "tab:red"}
    top = 1.0
    for view, points in sorted(series.items()):
        points = sorted(points, key=lambda p: p.date)
        if not points:
            continue
        dates, values = [p.date for p in points], [p.value for p in points]
        colour = colours.get(view)
        ax.plot(dates, values, marker="o", linewidth=2.5, markersize=8, label=f"{view} view", color=colour)
        for d, v in zip(dates, values):
            ax.annotate(f"{v:.1f}", (d, v), textcoords="offset points", xytext=(0, 9), ha="center", fontsize=11)
        base = values[0]
        for level, style in ((50, ":"), (75, "--"), (90, "-.")):
            if base > 0:
                ax.axhline(base * (1 - level / 100), color=colour, linestyle=style, linewidth=0.8, alpha=0.5)
        top = max(top, max(values))
    ax.set_ylim(0, top * 1.2)
    ax.set_ylabel("F-Vitiligo (% of face skin)", fontsize=13)
    ax.set_title(title + "\n(thin lines: 50 / 75 / 90 % reduction from each view's baseline)", fontsize=13)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=12)
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="raw", dpi=100)
    rgba = np.frombuffer(buffer.getvalue(), np.uint8).reshape(height, width, 4)
    return np.ascontiguousarray(rgba[..., :3])


def build_trend_image(source: Dataset, rgb: np.ndarray, algorithm: AlgorithmIdentity, *,
                      series_number: int = 903, instance_number: int = 1) -> hd.sc.SCImage:
    """A Secondary Capture of ``rgb`` in the study (and for the patient) of ``source``, a photograph."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("rgb must be a uint8 (H, W, 3) array")
    if not isinstance(algorithm, AlgorithmIdentity):
        raise TypeError(f"algorithm must be an AlgorithmIdentity, got {type(algorithm).__name__}")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    sc.SeriesDescription = "dermpacs trend"
    sc.ManufacturerModelName = algorithm.name
    sc.SoftwareVersions = [f"dermpacs {__version__}", f"{algorithm.name} {algorithm.version}"[:64]]
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.BurnedInAnnotation = "NO"
    sc.Laterality = ""  # Type 2C; the face is unpaired (dciodvfy asks for it when BodyPartExamined is copied)
    sc.DerivationDescription = "Chart of F-Vitiligo per view over the patient's visits, from dermpacs SRs"
    copy_issuer_of_patient_id(sc, source)
    return sc
