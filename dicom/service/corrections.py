"""Corrections: SEGs by someone else over photographs dermpacs analysed become training cases.

A dermatologist who corrects dermpacs's outline in OHIF stores a new SEG into the PACS.
When that SEG reaches dermpacs — routed by the PACS (Orthanc's Lua router forwards SEGs
not made by dermpacs) or harvested by ``dermpacs learn collect`` — it is *filed*, never
analysed: checked, mapped onto the segments the app's model learns, and written as a
(photograph, corrected mask) pair into the private local training set. Every decision,
filed or refused with its reason, goes into the audit trail; logs and audit carry UIDs and
reasons, never patient data.

A correction is refused when it is not usable without guessing:
* made by dermpacs itself, or references no photograph dermpacs analysed, or several;
* its patient (Patient ID) or study differs from the photograph's;
* its size differs from the photograph's;
* it carries a segment the app's model does not learn, two segments of one kind, or not
  the lesion segment (facial: "Vitiligo", SCT 56727007); the face-skin segment is taken
  from the correction when present (edited), else from dermpacs's own SEG.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
from pydicom import Dataset

from dicom.correction import SEGMENTATION_STORAGE, CorrectionError, CorrectedSegment, SegmentationCorrection
from dicom.reader import read_photograph
from models.learning.dataset import APP_SEGMENTS, AppSegments, Case, TrainingSet

from .config import ServiceConfig
from .store import JobStore

log = logging.getLogger("dermpacs.corrections")

FILED, REFUSED = "correction_filed", "correction_refused"


@dataclass(frozen=True)
class Outcome:
    """What happened to one SEG: filed (with its case) or refused (with the reason)."""

    seg_sop_instance_uid: str | None
    filed: bool
    reason: str
    case: Case | None = None
    app: str | None = None


class Refused(Exception):
    pass


class CorrectionFiler:
    """Checks a SEG against the job store and files it into the training set."""

    def __init__(self, config: ServiceConfig, store: JobStore,
                 fetch_photograph: Callable[[str, str, str], Path | None] | None = None) -> None:
        self.config = config
        self.store = store
        self.fetch_photograph = fetch_photograph  # (study, series, SOP UID) -> a file, when the spool was purged
        self.training_set = TrainingSet(config.data_dir, config.learning.holdout_percent)

    def file(self, source: str | Path | Dataset, origin: str, calling_ae: str | None = None) -> Outcome:
        """File one SEG (a path or a dataset); ``origin`` is 'routed' or 'harvested'. Always audited."""
        seg_uid = None
        try:
            try:
                ds = source if isinstance(source, Dataset) else pydicom.dcmread(source)
                seg_uid = str(ds.get("SOPInstanceUID", "")) or None
                correction = SegmentationCorrection.read(ds)
            except CorrectionError as exc:
                raise Refused(str(exc)) from exc
            except Exception as exc:  # noqa: BLE001 - unreadable input is refused, not fatal
                raise Refused(f"cannot read the SEG: {type(exc).__name__}") from exc
            seg_uid = correction.sop_instance_uid
            outcome = self._file(correction, origin)
        except Refused as exc:
            outcome = Outcome(seg_uid, False, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad SEG must not stop the scheduler
            log.exception("correction %s could not be filed", seg_uid)
            outcome = Outcome(seg_uid, False, f"could not be filed: {type(exc).__name__}")
        if outcome.filed:
            assert outcome.case is not None
            self.store.audit(FILED, sop=seg_uid, origin=origin, calling_ae=calling_ae, app=outcome.app,
                             case_id=outcome.case.case_id, held_out=outcome.case.held_out,
                             photograph_sop_instance_uid=outcome.case.meta["photograph_sop_instance_uid"],
                             creator=outcome.case.meta["creator"], mapping=outcome.case.meta["segments"],
                             skin_from=outcome.case.meta["skin_from"])
            log.info("correction %s filed for %s (case %s%s)", seg_uid, outcome.app, outcome.case.case_id,
                     ", held out" if outcome.case.held_out else "")
        else:
            self.store.audit(REFUSED, sop=seg_uid, origin=origin, calling_ae=calling_ae, reason=outcome.reason)
            log.warning("correction %s refused: %s", seg_uid or "(unreadable)", outcome.reason)
        self.training_set.apply_retention(self.config.learning.retention_days)
        return outcome

    # -- the checks ----------------------------------------------------------------------------
    def _file(self, correction: SegmentationCorrection, origin: str) -> Outcome:
        if correction.made_by_dermpacs:
            raise Refused("made by dermpacs itself: a result, not a correction")
        if not correction.referenced_sop_instance_uids:
            raise Refused("references no photograph")
        analysed = self.store.analysed_photographs(list(correction.referenced_sop_instance_uids))
        photos = {row["sop_instance_uid"]: row for row in analysed}
        if not photos:
            raise Refused("references no photograph dermpacs analysed")
        if len(photos) > 1 or len(correction.referenced_sop_instance_uids) > 1:
            raise Refused(f"references {len(correction.referenced_sop_instance_uids)} photographs; "
                          "a correction must segment exactly one")
        row = next(iter(photos.values()))
        app = str(row["app"])
        mapping = APP_SEGMENTS.get(app)
        if mapping is None:
            raise Refused(f"the {app} app has no segmentation model to correct")
        path = Path(row["path"]) if row["path"] else None
        if path is None or not path.is_file():
            path = self.fetch_photograph(correction.study_instance_uid, row["series_instance_uid"],
                                         row["sop_instance_uid"]) if self.fetch_photograph else None
        if path is None:
            raise Refused("the photograph is no longer held by dermpacs (retention); "
                          "`dermpacs learn collect` fetches it from the PACS")
        photo = read_photograph(path)
        if str(photo.dataset.get("PatientID", "") or "") != correction.patient_id:
            raise Refused("the SEG's patient differs from the photograph's (Patient ID)")
        if correction.study_instance_uid != str(photo.dataset.StudyInstanceUID):
            raise Refused("the SEG is not in the photograph's study")
        if (correction.rows, correction.columns) != photo.pixels.shape[:2]:
            raise Refused(f"SEG size {correction.columns}x{correction.rows} differs from the photograph's "
                          f"{photo.pixels.shape[1]}x{photo.pixels.shape[0]}")
        lesion, skin, extra, explained = self._map_segments(correction.segments, mapping)
        skin_from = "correction" if skin is not None else None
        if skin is None and mapping.skin is not None:
            skin = self._own_skin_mask(int(row["job_id"]), photo.sop_instance_uid, mapping)
            skin_from = "dermpacs SEG" if skin is not None else None
            if skin is None and app == "facial_vitiligo":
                raise Refused("no face-skin mask: neither the correction nor dermpacs's own SEG carries "
                              f"{mapping.skin.meaning} ({mapping.skin.scheme} {mapping.skin.code})")
        if skin is not None:
            outside = int((lesion & ~skin).sum())
            lesion = lesion & skin
        else:
            outside = 0
        meta = {
            "photograph_sop_instance_uid": photo.sop_instance_uid,
            "correction_sop_instance_uid": correction.sop_instance_uid,
            "origin": origin,
            "creator": correction.creator,
            "photograph_date": str(photo.dataset.get("ContentDate", "") or photo.dataset.get("StudyDate", "") or ""),
            "correction_date": correction.content_date,
            "segments": explained,
            "skin_from": skin_from,
            "lesion_pixels": int(lesion.sum()),
            "lesion_pixels_outside_skin_dropped": outside,
            "size": [int(photo.pixels.shape[1]), int(photo.pixels.shape[0])],
        }
        case = self.training_set.add(app, photo.sop_instance_uid, photo.pixels, lesion, skin, meta, extra)
        return Outcome(correction.sop_instance_uid, True, "filed", case, app)

    @staticmethod
    def _map_segments(segments: tuple[CorrectedSegment, ...], mapping: AppSegments):
        roles = mapping.roles
        chosen: dict[str, CorrectedSegment] = {}
        for segment in segments:
            role = roles.get(segment.coded)
            if role is None:
                raise Refused(f"{segment.describe()} is not a segment the {mapping.app} model learns "
                              f"(expected: {mapping.explain()})")
            if role.role in chosen:
                raise Refused(f"ambiguous: {chosen[role.role].describe()} and {segment.describe()} are both "
                              f"{role.meaning}")
            chosen[role.role] = segment
        if "lesion" not in chosen:
            lesion = mapping.lesion
            raise Refused(f"no {lesion.meaning} segment ({lesion.scheme} {lesion.code})")
        explained = [f"{s.describe()} -> {role}" for role, s in chosen.items()]
        extra = {role: s.mask for role, s in chosen.items() if role not in ("lesion", "skin")}
        skin = chosen["skin"].mask if "skin" in chosen else None
        return chosen["lesion"].mask, skin, extra, explained

    def _own_skin_mask(self, job_id: int, photo_uid: str, mapping: AppSegments) -> np.ndarray | None:
        """The denominator dermpacs itself stored for this photograph (its own SEG), if still held."""
        assert mapping.skin is not None
        for path in self.store.job_results(job_id, SEGMENTATION_STORAGE):
            if not path.exists():
                continue
            try:
                own = SegmentationCorrection.read(path)
            except Exception:  # noqa: BLE001
                continue
            if photo_uid not in own.referenced_sop_instance_uids:
                continue
            for segment in own.segments:
                if segment.coded == f"{mapping.skin.scheme}:{mapping.skin.code}":
                    return segment.mask
        return None

    # -- routed SEGs ---------------------------------------------------------------------------
    def file_received(self, rows: list) -> list[Outcome]:
        """SEG instances the listener spooled: file each, then mark it so it is never routed to an app."""
        outcomes = []
        for row in rows:
            outcome = self.file(Path(row["path"]), "routed", calling_ae=row["calling_ae"])
            self.store.set_instance_state(row["sop_instance_uid"], FILED if outcome.filed else REFUSED)
            # The SEG itself is not kept (it carries patient data): its masks are in the case.
            Path(row["path"]).unlink(missing_ok=True)
            outcomes.append(outcome)
        return outcomes


def is_correction_candidate(header: dict) -> bool:
    """An instance the service files instead of analysing: any Segmentation it receives."""
    return header.get("SOPClassUID") == SEGMENTATION_STORAGE
