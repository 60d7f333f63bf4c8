"""Step 6: one DICOM SEG per photograph (BINARY, new series in the photograph's study)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from monai.deploy.core import Fragment
from pydicom.uid import generate_uid

from dicom.encode import write_dataset
from dicom.seg import AlgorithmIdentity, build_photo_segmentation

from .base import StepOperator
from .cases import PhotoCase


class SegWriterStep:
    """Writes ``SEG_<n>.dcm``; all SEGs of one source series share one new series."""

    step_name = "SEG writer"

    def __init__(self, output_folder: Path, algorithm: AlgorithmIdentity) -> None:
        self.output_folder = Path(output_folder)
        self.algorithm = algorithm
        self._series_uids: dict[str, str] = {}
        self._count = 0

    def process(self, case: PhotoCase) -> None:
        if not case.segments:
            return
        photo = case.photo
        series_uid = self._series_uids.setdefault(photo.series_instance_uid, generate_uid())
        self._count += 1
        masks = np.stack([s.mask for s in case.segments], axis=-1)
        seg = build_photo_segmentation(
            photo,
            [s.spec for s in case.segments],
            masks,
            self.algorithm,
            series_instance_uid=series_uid,
            instance_number=int(getattr(photo.dataset, "InstanceNumber", None) or self._count),
        )
        self.output_folder.mkdir(parents=True, exist_ok=True)
        path = self.output_folder / f"SEG_{self._count:03d}.dcm"
        write_dataset(seg, path)
        case.segmentation = seg
        case.outputs.append(path)


class SegWriterOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, output_folder: Path, algorithm: AlgorithmIdentity, **kwargs) -> None:
        super().__init__(fragment, *args, step=SegWriterStep(output_folder, algorithm), **kwargs)
