"""Learning from the clinic, end to end with Orthanc as the PACS (issue 15).

Photographs go through Orthanc's Lua router to `dermpacs serve`; a "dermatologist" then
stores corrected SEGs (the true lesion masks, manufacturer OHIF) into Orthanc: the router
forwards them and dermpacs files them; one stored while dermpacs is down is harvested by
`dermpacs learn collect` (C-FIND/C-GET); a SEG of another patient and one with an unknown
segment are refused. `dermpacs learn train` fine-tunes in the background (killed and
resumed), the candidate beats the shipped model on the held-out corrections, a worse
candidate is refused, and after `dermpacs models promote` the next SR names the new
version; `dermpacs models rollback` brings the shipped one back — all while the service runs.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from apps.demo_study import make_demo_study
from dicom import codes
from dicom.encode import DEMO_PATIENT
from dicom.reader import read_photograph
from dicom.seg import AlgorithmIdentity, SegmentSpec, build_photo_segmentation
from dicom.sr import read_measurement_report
from models.learning.dataset import TrainingSet, case_id_for, is_held_out
from models.learning.finetune import promotion_check
from models.learning.registry import ModelRegistry, RegistryError
from tests.pacs.dcmtk import wait_until
from tests.pacs.dermpacs import REPO, DermpacsProcess
from tests.pacs.netns import free_port, isolated_network, isolation_unavailable_reason
from tests.pacs.orthanc import OrthancServer

HOLDOUT_PERCENT = 40
# This clinic's patients have early, incompletely depigmented (hypopigmented) patches: half the
# melanin gone. The shipped model, trained on milky amelanotic lesions, under-calls them;
# the dermatologists' outlines teach it (benchmarks/finetune_recipe.py, lr 1e-4, frozen
# BatchNorm: 0.61 -> 0.84 and 0.42 -> 0.69 with 2.0.0 active, 0.64 -> 0.87 with 2.2.0). With
# random UIDs the held-out split changed every run and the margin with it (+0.02 to +0.23);
# the photographs' UIDs are now fixed (uid_seed): 0.79 -> 0.90 here with 2.2.0, every run.
PAINT = {"strength": 0.5}
SIZE = (354, 530)
SHIPPED_VERSION = yaml.safe_load((REPO / "models" / "weights" / "facial_vitiligo_ddrnet23slim.yaml").read_text())["version"]
ITERATIONS = 40

_reason = isolation_unavailable_reason()
if shutil.which("Orthanc") is None and shutil.which("Orthanc", path="/usr/sbin") is None:
    _reason = _reason or "Orthanc is not installed"
needs_orthanc = pytest.mark.skipif(_reason is not None, reason=_reason or "")


# -- corrections as a viewer would store them ---------------------------------------------------------
def correction_seg(photo_path: Path, lesion: np.ndarray, skin: np.ndarray | None,
                   extra: list[tuple[SegmentSpec, np.ndarray]] = (), patient_id: str | None = None) -> bytes:
    """A SEG of the photograph by another creator (OHIF), with manual segments."""
    photo = read_photograph(photo_path)
    specs = [SegmentSpec("Vitiligo", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, codes.VITILIGO)]
    masks = [lesion]
    if skin is not None:
        specs.append(SegmentSpec("Skin of face", codes.TISSUE, codes.SKIN_OF_FACE))
        masks.append(skin)
    for spec, mask in extra:
        specs.append(spec)
        masks.append(mask)
    algorithm = AlgorithmIdentity("manual", "1", codes.ARTIFICIAL_INTELLIGENCE, "0" * 64)
    seg = build_photo_segmentation(photo, specs, np.stack(masks, axis=-1), algorithm,
                                   transfer_syntax_uid=ExplicitVRLittleEndian, series_description="Corrected")
    seg.Manufacturer = "OHIF"
    seg.ManufacturerModelName = "OHIF Viewer"
    seg.SoftwareVersions = "3.13.2"
    seg.ContentCreatorName = "Dermatologist^Test"
    for item in seg.SegmentSequence:
        item.SegmentAlgorithmType = "MANUAL"
        for keyword in ("SegmentAlgorithmName", "SegmentationAlgorithmIdentificationSequence"):
            if keyword in item:
                delattr(item, keyword)
    if patient_id is not None:  # a SEG filed under another patient, pointing at this photograph
        seg.PatientID = patient_id
        seg.PatientName = "Other^Patient"
        seg.StudyInstanceUID = generate_uid()
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def cli(node: DermpacsProcess, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dicom.cli", *args, "--config", str(node.config)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=str(REPO)))


def audit(node: DermpacsProcess, event: str) -> list[dict]:
    return [r for r in json.loads(node.cli("audit", "export", "--format", "json").stdout) if r["event"] == event]


def sr_algorithm(orthanc: OrthancServer, study: str) -> dict:
    """The SR's algorithm identification: name, version and parameters (weights_sha256=...)."""
    sr = orthanc.dataset(orthanc.find_instances(study, "SR")[0])
    algorithm = dict(read_measurement_report(sr)[0]["algorithm"])
    algorithm["parameters"] = dict(p.split("=", 1) for p in algorithm["parameters"])
    return algorithm


# -- fast checks of the pieces -------------------------------------------------------------------------
def test_training_set_is_private_and_its_held_out_share_is_fixed(tmp_path):
    ts = TrainingSet(tmp_path, holdout_percent=30)
    rgb = np.zeros((20, 30, 3), np.uint8)
    mask = np.zeros((20, 30), bool)
    uids = [generate_uid() for _ in range(40)]
    cases = [ts.add("facial_vitiligo", uid, rgb, mask, mask, {"photograph_date": "20261201"}) for uid in uids]
    assert 0 < sum(c.held_out for c in cases) < 40
    # The rule depends on the photograph alone: the same answer with more cases, and on re-filing.
    again = ts.add("facial_vitiligo", uids[0], rgb, mask, mask, {})
    assert again.held_out == cases[0].held_out == is_held_out(case_id_for(uids[0]), 30)
    assert len(ts.cases("facial_vitiligo")) == 40
    for path in (ts.root, *ts.root.rglob("*")):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert not any(uid in p.name for p in ts.root.rglob("*") for uid in uids), "file names carry UIDs"
    assert ts.apply_retention(365) == []
    assert len(ts.apply_retention(1, now=__import__("time").time() + 2 * 86400)) == 40
    assert ts.cases("facial_vitiligo") == []


def test_registry_promotes_and_rolls_back_by_replacing_one_link(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    shipped = registry.active("facial_vitiligo")
    assert shipped.id == "facial_vitiligo-shipped" and shipped.version == SHIPPED_VERSION
    work = tmp_path / "w"
    work.mkdir()
    weights = work / shipped.weights.name
    shutil.copy(shipped.weights, weights)
    weights.with_suffix(".yaml").write_text(
        shipped.weights.with_suffix(".yaml").read_text().replace(f"version: {SHIPPED_VERSION}", f"version: {SHIPPED_VERSION}-local.1"))
    candidate = registry.add_candidate("facial_vitiligo", weights, {"evaluation": None}, "# card\n")
    assert (candidate.id, candidate.state, candidate.version) == ("facial_vitiligo-1", "candidate", f"{SHIPPED_VERSION}-local.1")
    assert registry.activate(candidate.id).state == "active"
    link = tmp_path / "models" / "active" / "facial_vitiligo"
    assert link.is_symlink() and (link / weights.name).resolve() == candidate.weights.resolve()
    with pytest.raises(RegistryError):
        registry.activate(candidate.id)
    assert registry.rollback("facial_vitiligo") == ("facial_vitiligo-1", "facial_vitiligo-shipped")
    assert not link.exists() and registry.active("facial_vitiligo").id == "facial_vitiligo-shipped"
    with pytest.raises(RegistryError):
        registry.rollback("facial_vitiligo")


def test_a_worse_candidate_is_never_promotable():
    def evaluation(held: float, synthetic: float, n: int = 5) -> dict:
        return {"delta": {"held_out_mean_dice": held, "synthetic_mean_dice": synthetic},
                "candidate": {"held_out": {"n": n}}}

    assert not promotion_check(evaluation(-0.01, 0.0), 0.05)[0]
    assert not promotion_check(evaluation(0.0, 0.0), 0.05)[0]
    assert not promotion_check(evaluation(0.2, -0.1), 0.05)[0]  # forgot the synthetic suite
    assert promotion_check(evaluation(0.2, -0.01), 0.05)[0]
    rule = type("Rule", (), {"min_improvement": 0.1, "min_cases": 10})
    assert not promotion_check(evaluation(0.2, 0.0, n=5), 0.05, rule)[0]
    assert promotion_check(evaluation(0.2, 0.0, n=10), 0.05, rule)[0]


# -- with Orthanc ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clinic(tmp_path_factory, face_masker):
    """Orthanc + dermpacs; three analysed visits (9 photographs) with their true masks."""
    if _reason is not None:
        pytest.skip(_reason)
    tmp = tmp_path_factory.mktemp("clinic")
    photos = []
    for seed in range(3):
        photos += make_demo_study(tmp / f"visit{seed}", seed=40 + seed, size=SIZE, masker=face_masker, paint=PAINT,
                                  uid_seed=f"dermpacs-learning-test-{seed}")  # the same held-out split every run
    with isolated_network():
        port = free_port()
        with OrthancServer(tmp / "orthanc", port) as orthanc:
            node = DermpacsProcess(tmp / "dermpacs", destination=f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", port=port,
                                   learning={"holdout_percent": HOLDOUT_PERCENT, "iterations": ITERATIONS,
                                             "batch_size": 2, "synthetic_eval_samples": 2,
                                             "max_synthetic_drop": 0.15})
            with node:
                for photo in photos:
                    orthanc.upload(photo.path)
                studies = sorted({pydicom.dcmread(p.path, stop_before_pixels=True).StudyInstanceUID for p in photos})
                try:
                    wait_until(lambda: sum(len(orthanc.find_instances(s, "SEG")) for s in studies) >= len(photos)
                               and all(orthanc.find_instances(s, "SR") for s in studies), 300, interval=1,
                               what="SEG + SR of every photograph")
                except TimeoutError as exc:  # say where it stopped: dermpacs, or Orthanc's forwarding jobs
                    raise TimeoutError(f"{exc}\n{node.log_tail()}\nOrthanc jobs: "
                                       f"{[j['State'] for j in orthanc.jobs()]}\n{orthanc.log_tail()}") from None
                yield {"orthanc": orthanc, "node": node, "photos": photos, "tmp": tmp}


@needs_orthanc
def test_corrections_routed_in_are_filed_not_analysed(clinic):
    orthanc, node, photos = clinic["orthanc"], clinic["node"], clinic["photos"]
    assert sr_algorithm(orthanc, pydicom.dcmread(photos[0].path).StudyInstanceUID)["version"].endswith(SHIPPED_VERSION)
    routed = photos[1:]  # photos[0]'s correction is stored while dermpacs is down (harvest test)
    for photo in routed:
        # The face-skin segment is left out of some: dermpacs then takes its own.
        skin = photo.skin_mask if photos.index(photo) % 2 else None
        orthanc.upload(correction_seg(photo.path, photo.lesion_mask, skin))
    wait_until(lambda: len(audit(node, "correction_filed")) == len(routed), 120, interval=0.5,
               what=f"corrections filed\n{node.log_tail()}")
    filed = audit(node, "correction_filed")
    assert {r["details"]["photograph_sop_instance_uid"] for r in filed} == {p.sop_instance_uid for p in routed}
    assert all(r["details"]["origin"] == "routed" and r["details"]["app"] == "facial_vitiligo" for r in filed)
    assert {r["details"]["skin_from"] for r in filed} == {"correction", "dermpacs SEG"}
    assert all(any("Vitiligo" in m and m.endswith("-> lesion") for m in r["details"]["mapping"]) for r in filed)
    # Filed, never analysed: no job was created for a SEG.
    routed_events = audit(node, "routed")
    seg_uids = {r["sop_instance_uid"] for r in filed}
    assert not any(set(r["details"]["sop_instance_uids"]) & seg_uids for r in routed_events)
    assert len(routed_events) == 3
    # The pairs on disk are the corrected masks.
    ts = TrainingSet(node.data_dir, HOLDOUT_PERCENT)
    case = next(c for c in ts.cases("facial_vitiligo") if c.meta["photograph_sop_instance_uid"] == routed[0].sop_instance_uid)
    import cv2

    stored = cv2.imread(str(case.folder / "mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    assert np.array_equal(stored, routed[0].lesion_mask & routed[0].skin_mask)
    assert DEMO_PATIENT.patient_id not in node.log_tail(10**7)


@needs_orthanc
def test_corrections_of_another_patient_or_with_an_unknown_segment_are_refused(clinic):
    orthanc, node, photos = clinic["orthanc"], clinic["node"], clinic["photos"]
    photo = photos[2]
    before = len(audit(node, "correction_refused"))
    orthanc.upload(correction_seg(photo.path, photo.lesion_mask, photo.skin_mask, patient_id="OTHER-0001"))
    nevus = SegmentSpec("Naevus", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, Code("400010006", "SCT", "Pigmented nevus"))
    orthanc.upload(correction_seg(photo.path, photo.lesion_mask, photo.skin_mask,
                                  extra=[(nevus, np.zeros_like(photo.lesion_mask))]))
    wait_until(lambda: len(audit(node, "correction_refused")) == before + 2, 120, interval=0.5,
               what=f"two refusals\n{node.log_tail()}")
    reasons = sorted(r["details"]["reason"] for r in audit(node, "correction_refused")[before:])
    assert "patient differs" in reasons[1]
    assert "Pigmented nevus" in reasons[0] and "not a segment the facial_vitiligo model learns" in reasons[0]
    assert all("OTHER-0001" not in r for r in reasons)
    assert node.status()["instances"].get("correction_refused") == 2


@needs_orthanc
def test_a_correction_stored_while_dermpacs_was_down_is_harvested(clinic):
    orthanc, node, photos = clinic["orthanc"], clinic["node"], clinic["photos"]
    node.stop()
    # The retention policy has meanwhile removed the delivered photographs from the spool:
    # the harvest fetches the photograph from the PACS too.
    from dicom.service.retention import purge
    from dicom.service.spool import Spool
    from dicom.service.store import JobStore

    store = JobStore(node.data_dir / "dermpacs.sqlite3")
    try:
        assert purge(store, Spool(node.data_dir), keep_days=0)["photographs"] >= 9
    finally:
        store.close()
    orthanc.upload(correction_seg(photos[0].path, photos[0].lesion_mask, photos[0].skin_mask))
    orthanc.wait_jobs_done(30)  # the router's forward failed: nobody listening
    node.start()
    result = cli(node, "learn", "collect", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["filed"] == 1, report
    harvested = [r for r in audit(node, "correction_filed") if r["details"]["origin"] == "harvested"]
    assert [r["details"]["photograph_sop_instance_uid"] for r in harvested] == [photos[0].sop_instance_uid]
    assert not list((node.data_dir / "learning").glob(".fetched/*")), "the fetched photograph was kept"
    # A second collect fetches nothing new.
    again = json.loads(cli(node, "learn", "collect", "--json").stdout)
    assert again["seg_fetched"] == 0 and again["filed"] == 0


@needs_orthanc
def test_train_promote_and_roll_back_while_the_service_runs(clinic, face_masker):
    orthanc, node, tmp = clinic["orthanc"], clinic["node"], clinic["tmp"]
    ts = TrainingSet(node.data_dir, HOLDOUT_PERCENT)
    train, held = ts.split("facial_vitiligo")
    assert len(train) + len(held) == 9 and train and held, (len(train), len(held))

    # Background training with progress; killed after its first checkpoint, then resumed.
    started = cli(node, "learn", "train", "--app", "facial_vitiligo")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.split()[2]

    def run_status() -> dict:
        runs = json.loads(cli(node, "learn", "status", "--json").stdout)["runs"]
        return next(r for r in runs if r["id"] == run_id)

    wait_until(lambda: run_status()["iterations_done"] >= ITERATIONS // 10, 300, interval=1, what="a first checkpoint")
    pid = json.loads((ts.root / "runs" / run_id / "run.json").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: run_status()["state"] == "interrupted", 30, interval=0.5, what="an interrupted run")
    resumed = cli(node, "learn", "train", "--app", "facial_vitiligo", "--resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    wait_until(lambda: run_status()["state"] in ("done", "failed"), 900, interval=2, what="the run to finish")
    status = run_status()
    assert status["state"] == "done", (status, (ts.root / "runs" / run_id / "train.log").read_text()[-3000:])
    assert status["iterations_done"] == ITERATIONS
    candidate_id = status["candidate"]
    run_folder = ts.root / "runs" / run_id
    assert not (run_folder / "train_data").exists() and not (run_folder / "held_out_data").exists()

    listing = {v["id"]: v for v in json.loads(cli(node, "models", "list", "--json").stdout)}
    candidate = listing[candidate_id]
    assert candidate["state"] == "candidate" and listing["facial_vitiligo-shipped"]["state"] == "active"
    evaluation = candidate["evaluation"]
    print("held-out / synthetic mean Dice, candidate vs active:",
          {k: (round(evaluation[k]["held_out"]["mean_dice"], 3), round(evaluation[k]["synthetic"]["mean_dice"], 3))
           for k in ("candidate", "active")})
    assert evaluation["delta"]["held_out_mean_dice"] > 0, evaluation  # the bar: better on held-out corrections
    assert evaluation["candidate"]["held_out"]["n"] == len(held)
    assert evaluation["candidate"]["synthetic"]["n"] == 2
    card = Path(candidate["weights"]).with_suffix(".md").read_text()
    assert f"local photographs used for training: {len(train)}" in card and "Recipe" in card
    uids = {p.sop_instance_uid for p in clinic["photos"]}
    assert not any(uid in card for uid in uids) and DEMO_PATIENT.patient_id not in card
    assert DEMO_PATIENT.name not in card

    # A worse candidate (one that never finds vitiligo), judged for real on the same held-out set, is refused.
    worse_id = _register_untrained_candidate(node)
    refused = cli(node, "models", "promote", worse_id)
    assert refused.returncode == 1 and "not better" in refused.stderr, refused.stderr
    assert audit(node, "promotion_refused")[-1]["details"]["id"] == worse_id

    # Promotion while the service runs: the next analysis names the new version and weights.
    promoted = cli(node, "models", "promote", candidate_id)
    assert promoted.returncode == 0, promoted.stderr
    new = make_demo_study(tmp / "after", seed=60, views=("frontal",), size=SIZE, masker=face_masker)
    orthanc.upload(new[0].path)
    study = pydicom.dcmread(new[0].path, stop_before_pixels=True).StudyInstanceUID
    wait_until(lambda: orthanc.find_instances(study, "SR"), 180, interval=1, what=f"SR\n{node.log_tail()}")
    algorithm = sr_algorithm(orthanc, study)
    assert algorithm["version"].endswith(candidate["version"]) and candidate["version"].startswith(f"{SHIPPED_VERSION}-local.")
    assert algorithm["parameters"]["weights_sha256"] == candidate["weights_sha256"]

    # Roll back: the next analysis is the shipped model's again.
    rolled = cli(node, "models", "rollback")
    assert rolled.returncode == 0, rolled.stderr
    again = make_demo_study(tmp / "rolled", seed=61, views=("frontal",), size=SIZE, masker=face_masker)
    orthanc.upload(again[0].path)
    study2 = pydicom.dcmread(again[0].path, stop_before_pixels=True).StudyInstanceUID
    wait_until(lambda: orthanc.find_instances(study2, "SR"), 180, interval=1, what=f"SR\n{node.log_tail()}")
    shipped = json.loads(cli(node, "models", "list", "--json").stdout)
    shipped = next(v for v in shipped if v["id"] == "facial_vitiligo-shipped")
    assert sr_algorithm(orthanc, study2)["parameters"]["weights_sha256"] == shipped["weights_sha256"]
    events = {r["event"] for r in json.loads(node.cli("audit", "export", "--format", "json").stdout)}
    assert {"training_started", "candidate_trained", "model_promoted", "promotion_refused",
            "model_rolled_back"} <= events
    for path in (node.data_dir / "learning", node.data_dir / "models"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700


def _register_untrained_candidate(node: DermpacsProcess) -> str:
    """A candidate whose classifiers always answer "no vitiligo", evaluated like any other."""
    import torch

    from models.config import load_config
    from models.facial.ddrnet import build_model
    from models.facial.inference import load_state_dict
    from models.learning.finetune import evaluate_pair
    from models.facial.train import save_weights_fp16

    registry = ModelRegistry(node.data_dir / "models")
    active = registry.active("facial_vitiligo")
    folder = node.workdir / "untrained"
    folder.mkdir()
    cfg = load_config(active.weights.with_suffix(".yaml"))
    cfg = replace(cfg, version="9.9.9-blind")
    model = build_model(cfg.model)
    model.load_state_dict(load_state_dict(active.weights))
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.Conv2d) and layer.out_channels == cfg.model.num_classes:
                layer.weight.zero_()
                layer.bias.copy_(torch.tensor([8.0, -8.0]))
    weights = folder / active.weights.name
    save_weights_fp16(model, weights)
    from models.config import save_config

    save_config(cfg, weights.with_suffix(".yaml"))
    ts = TrainingSet(node.data_dir, HOLDOUT_PERCENT)
    held = ts.split("facial_vitiligo")[1]
    evaluation = evaluate_pair(weights, active.weights, ts.materialize(held, folder / "held"), 2)
    evaluation["baseline"] = {"id": active.id, "version": active.version, "weights_sha256": active.weights_sha256}
    evaluation["held_out_cases"] = sorted(c.case_id for c in held)
    return registry.add_candidate("facial_vitiligo", weights, {"evaluation": evaluation}, "# untrained\n").id
