"""Filing corrections without a network: the checks a SEG must pass to become a training case.

A real job store and spool (as `dermpacs serve` leaves them after analysing a photograph)
and real SEGs built with highdicom; the Orthanc end-to-end flow is tests/test_learning.py.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml
from pydicom.sr.coding import Code

from dicom import codes
from dicom.correction import SegmentationCorrection
from dicom.encode import photograph_dataset, write_dataset
from dicom.reader import read_photograph
from dicom.seg import AlgorithmIdentity, SegmentSpec, build_photo_segmentation
from dicom.service.config import load_config
from dicom.service.corrections import CorrectionFiler
from dicom.service.store import JobStore, ReceivedInstance

VITILIGO = SegmentSpec("Vitiligo", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, codes.VITILIGO)
FACE_SKIN = SegmentSpec("Skin of face", codes.TISSUE, codes.SKIN_OF_FACE)


@pytest.fixture()
def analysed(tmp_path):
    """A photograph that a facial_vitiligo job analysed, and a filer on that node's data dir."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(60, 200, (96, 64, 3), dtype=np.uint8)
    ds = photograph_dataset(rgb)
    path = write_dataset(ds, tmp_path / "photo.dcm")
    config = load_config(None, data_dir=tmp_path / "data")
    config.data_dir.mkdir()
    store = JobStore(config.database)
    data = path.read_bytes()
    store.add_instance(ReceivedInstance(str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(ds.StudyInstanceUID),
                                        str(ds.SeriesInstanceUID), path, hashlib.sha256(data).hexdigest(), len(data),
                                        "ORTHANC", "DERMAI", "127.0.0.1:1", {}))
    job = store.create_job(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), "facial_vitiligo", "face",
                           [str(ds.SOPInstanceUID)])
    store.claim_next_job()
    store.finish_analysis(job, [], "ORTHANC@127.0.0.1:4242", {})
    yield path, CorrectionFiler(config, store), store
    store.close()


def seg_of(photo_path, specs, masks, manufacturer="OHIF") -> pydicom.Dataset:
    photo = read_photograph(photo_path)
    algorithm = AlgorithmIdentity("manual", "1", codes.ARTIFICIAL_INTELLIGENCE, "0" * 64)
    seg = build_photo_segmentation(photo, specs, np.stack(masks, -1), algorithm,
                                   transfer_syntax_uid="1.2.840.10008.1.2.1")
    seg.Manufacturer = manufacturer
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def masks(shape=(96, 64)):
    lesion = np.zeros(shape, bool)
    lesion[20:40, 10:30] = True
    skin = np.zeros(shape, bool)
    skin[10:80, 5:60] = True
    return lesion, skin


def test_a_one_segment_seg_is_read_with_its_mask(analysed):
    path, _, _ = analysed
    lesion, _ = masks()
    correction = SegmentationCorrection.read(seg_of(path, [VITILIGO], [lesion]))
    assert [s.coded for s in correction.segments] == ["SCT:56727007"]
    assert np.array_equal(correction.segments[0].mask, lesion)
    assert correction.referenced_sop_instance_uids == (str(pydicom.dcmread(path).SOPInstanceUID),)


def test_vitiligo_and_face_skin_are_filed_with_the_mapping(analysed):
    path, filer, store = analysed
    lesion, skin = masks()
    outcome = filer.file(seg_of(path, [VITILIGO, FACE_SKIN], [lesion, skin]), "routed")
    assert outcome.filed, outcome.reason
    assert outcome.case.meta["skin_from"] == "correction"
    assert [m.split(" -> ")[1] for m in outcome.case.meta["segments"]] == ["lesion", "skin"]
    assert store.audit_rows()[-1]["event"] == "correction_filed"


@pytest.mark.parametrize("specs, expected", [
    ([FACE_SKIN], "no Vitiligo segment (SCT 56727007)"),
    ([VITILIGO, SegmentSpec("Vitiligo 2", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, codes.VITILIGO)], "ambiguous"),
    ([VITILIGO, SegmentSpec("Mole", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, Code("400010006", "SCT", "Pigmented nevus"))],
     "not a segment the facial_vitiligo model learns"),
])
def test_ambiguous_or_incomplete_segment_sets_are_refused(analysed, specs, expected):
    path, filer, store = analysed
    lesion, skin = masks()
    outcome = filer.file(seg_of(path, specs, [lesion, skin][: len(specs)]), "routed")
    assert not outcome.filed and expected in outcome.reason, outcome.reason
    assert store.audit_rows()[-1]["details"]["reason"] == outcome.reason


def test_dermpacs_own_seg_and_unknown_photographs_are_not_corrections(analysed, tmp_path):
    path, filer, _ = analysed
    lesion, skin = masks()
    own = filer.file(seg_of(path, [VITILIGO, FACE_SKIN], [lesion, skin], manufacturer="dermpacs"), "harvested")
    assert not own.filed and own.reason.startswith("made by dermpacs")
    other = write_dataset(photograph_dataset(np.zeros((96, 64, 3), np.uint8)), tmp_path / "other.dcm")
    stranger = filer.file(seg_of(other, [VITILIGO], [lesion]), "routed")
    assert not stranger.filed and "no photograph dermpacs analysed" in stranger.reason
    assert not filer.training_set.cases("facial_vitiligo")


def test_close_up_corrections_fine_tune_the_close_up_model(tmp_path):
    """The close-up app learns the same way, with its own engine and its own segments (Vitiligo, Skin)."""
    import yaml

    from models.learning.dataset import TrainingSet
    from models.learning.finetune import create_run, execute, progress
    from models.learning.registry import ModelRegistry
    from models.lesion.synthetic import generate_closeup

    config_path = tmp_path / "dermpacs.yaml"
    config_path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "learning": {
        "holdout_percent": 50, "iterations": 6, "batch_size": 2, "synthetic_eval_samples": 1, "replay_synthetic": 0.5}}))
    config = load_config(config_path)
    ts = TrainingSet(config.data_dir, 50)
    index = 0
    while not all(ts.split("vitiligo_lesion")):  # at least one case on each side of the fixed split
        sample = generate_closeup(77, index, size=200)
        ts.add("vitiligo_lesion", f"1.2.3.{index + 1}", sample.image, sample.lesion_mask, sample.skin_mask,
               {"photograph_date": f"202611{index + 10:02d}", "creator": "OHIF / x"})
        index += 1
    run = create_run(config, "vitiligo_lesion")
    finished = execute(config, run["id"])
    assert progress(config.data_dir, finished)["state"] == "done"
    candidate = ModelRegistry(config.models_dir).get(finished["candidate"])
    shipped = yaml.safe_load((Path(__file__).resolve().parents[1] / "models" / "weights"
                              / "vitiligo_lesion_unet_mobilenetv3.yaml").read_text())["version"]
    assert candidate.app == "vitiligo_lesion" and candidate.version == f"{shipped}-local.1"
    evaluation = candidate.info["evaluation"]
    assert evaluation["active"]["version"] == shipped and evaluation["verdict"] in ("better", "equal", "worse")
    assert evaluation["candidate"]["held_out"]["n"] == len(ts.split("vitiligo_lesion")[1])
    card = candidate.weights.with_suffix(".md").read_text()
    assert "models.lesion" in card and "1.2.3." not in card
    from models.model_card import check_model_card

    assert check_model_card(card, candidate.name, candidate.version, candidate=True) == []


def test_prick_test_corrections_fine_tune_the_prick_model(tmp_path):
    """Wheal (the lesion) and Erythema segments become the prick engine's label maps."""
    import yaml

    from models.learning.dataset import TrainingSet
    from models.learning.finetune import create_run, execute
    from models.learning.registry import ModelRegistry
    from models.prick.synthetic import generate_sample

    config_path = tmp_path / "dermpacs.yaml"
    config_path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "learning": {
        "holdout_percent": 50, "iterations": 4, "batch_size": 2, "synthetic_eval_samples": 1, "replay_synthetic": 0.5,
        "input_size": 256}}))
    config = load_config(config_path)
    ts = TrainingSet(config.data_dir, 50)
    index = 0
    while not all(ts.split("skin_prick")):
        s = generate_sample(88, index, size=(256, 256))
        ts.add("skin_prick", f"1.2.4.{index + 1}", s.image, s.label == 2, None, {"photograph_date": "20261120"},
               extra={"erythema": s.label >= 1})
        index += 1
    finished = execute(config, create_run(config, "skin_prick")["id"])
    assert finished["state"] == "done"
    candidate = ModelRegistry(config.models_dir).get(finished["candidate"])
    from models.prick.config import load_config as load_prick_config

    shipped = load_prick_config("models/weights/skin_prick_unet.yaml").version
    assert candidate.app == "skin_prick" and candidate.version.startswith(f"{shipped}-local.")
    assert candidate.info["evaluation"]["candidate"]["held_out"]["n"] == len(ts.split("skin_prick")[1])
