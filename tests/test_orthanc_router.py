"""Orthanc 1.10 + deploy/orthanc/route-to-dermpacs.lua: what reaches dermpacs, and what dermpacs stores back.

A real Orthanc (started from deploy/orthanc/orthanc.json) and dcmtk storescp standing in
for dermpacs (AE DERMAI) run in a private network namespace with only loopback.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from dicom import codes
from dicom.encode import PatientInfo, pattern_image, photograph_dataset, write_dataset
from dicom.reader import read_photograph
from dicom.seg import AlgorithmIdentity, SegmentSpec, build_photo_segmentation
from tests.pacs.dcmtk import StoreSCP, storescu, wait_until
from tests.pacs.netns import isolated_network, isolation_unavailable_reason
from tests.pacs.orthanc import OrthancServer

_missing = [tool for tool in ("storescp", "storescu") if shutil.which(tool) is None]
if shutil.which("Orthanc") is None and shutil.which("Orthanc", path="/usr/sbin") is None:
    _missing.append("Orthanc")
_reason = isolation_unavailable_reason() or (f"missing {', '.join(_missing)}" if _missing else None)
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")

PATIENT = PatientInfo(name="Router^Test", patient_id="ROUTER-TEST-0001")
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
ALGORITHM = AlgorithmIdentity(
    name="router test", version="0", family=codes.ARTIFICIAL_INTELLIGENCE,
    weights_sha256="0" * 64, description="test",
)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """Orthanc with the router, and storescp as "dermpacs", inside one namespace for the module."""
    tmp = tmp_path_factory.mktemp("orthanc-router")
    with isolated_network():
        with StoreSCP(tmp / "dermpacs-in", ae_title="DERMAI") as dermpacs:
            with OrthancServer(tmp / "orthanc", dermpacs.port) as pacs:
                yield SimpleNamespace(tmp=tmp, dermpacs=dermpacs, pacs=pacs)


def _photo(tmp: Path, name: str, study_uid: str, **kwargs) -> tuple[Path, pydicom.Dataset]:
    """A photograph as dicom.encode makes it (Manufacturer dermpacs, like the demo study's)."""
    ds = photograph_dataset(pattern_image(64, 80), patient=PATIENT, study_uid=study_uid, **kwargs)
    return write_dataset(ds, tmp / f"{name}.dcm"), ds


def _camera_photo(tmp: Path, name: str, study_uid: str, **kwargs) -> tuple[Path, pydicom.Dataset]:
    """A photograph as a real camera writes it: its own manufacturer, not dermpacs."""
    ds = photograph_dataset(pattern_image(64, 80), patient=PATIENT, study_uid=study_uid, **kwargs)
    ds.Manufacturer = "Canon"
    ds.ManufacturerModelName = "EOS R6"
    return write_dataset(ds, tmp / f"{name}.dcm"), ds


def _plain_instance(tmp: Path, name: str, study_uid: str, sop_class: str, modality: str,
                    manufacturer: str, pixels: bool) -> tuple[Path, Dataset]:
    """A small non-photograph instance (CT image, SR) in ``study_uid``."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID = PATIENT.name, PATIENT.patient_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.Modality, ds.Manufacturer = modality, manufacturer
    ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20240101", 7, 1
    if pixels:
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.zeros((8, 8), np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return write_dataset(ds, tmp / f"{name}.dcm"), ds


def _settle(net, sentinel_uid: str) -> set[str]:
    """Wait until ``sentinel_uid`` reached dermpacs and Orthanc's jobs are done; return all UIDs received.

    Orthanc runs OnStoredInstance for stored instances one at a time, in order, so once
    a photograph stored last has arrived, the router has decided on everything before
    it; waiting for the jobs covers forwards still on the wire.
    """
    wait_until(lambda: sentinel_uid in net.dermpacs.received(), 15,
               what=f"{sentinel_uid} at dermpacs\n{net.pacs.log_tail()}")
    net.pacs.wait_jobs_done()
    return set(net.dermpacs.received())


def _router_lines(net) -> list[str]:
    return [line for line in net.pacs.log_path.read_text().splitlines() if "dermpacs router:" in line]


def test_forwards_only_photographs(net):
    tmp, study = net.tmp / "only-photos", generate_uid()
    # Not forwarded: a CT image, an SR from dermpacs, and a Secondary Capture that
    # dermpacs derived (Manufacturer dermpacs, ImageType DERIVED): a result, not a photo.
    ct, _ = _plain_instance(tmp, "ct", study, CT_IMAGE, "CT", "ACME", pixels=True)
    sr, _ = _plain_instance(tmp, "sr", study, COMPREHENSIVE_SR, "SR", "dermpacs", pixels=False)
    derived, derived_ds = _photo(tmp, "derived-sc", study, sop_class="secondary_capture")
    assert derived_ds.Manufacturer == "dermpacs" and derived_ds.ImageType[0] == "DERIVED"
    # Forwarded: a camera's Secondary Capture, and a VL photograph like the demo study's
    # (Manufacturer dermpacs but ORIGINAL), sent last.
    camera_sc, camera_ds = _camera_photo(tmp, "camera-sc", study, sop_class="secondary_capture")
    vl, vl_ds = _photo(tmp, "vl", study, body_part="FACE", view="frontal")
    for path in (ct, sr, derived, camera_sc, vl):
        assert net.pacs.upload(path)["Status"] == "Success"

    received = _settle(net, vl_ds.SOPInstanceUID)
    assert received == {vl_ds.SOPInstanceUID, camera_ds.SOPInstanceUID}

    arrived = net.dermpacs.received()[vl_ds.SOPInstanceUID]
    assert arrived.file_meta.TransferSyntaxUID == JPEGBaseline8Bit  # forwarded as stored, not transcoded
    assert arrived.StudyInstanceUID == study

    jobs = [j for j in net.pacs.jobs() if j["Type"] == "DicomModalityStore"]
    assert len(jobs) == 2 and all(j["State"] == "Success" for j in jobs)
    assert all(j["Content"]["RemoteAet"] == "DERMAI" for j in jobs)

    lines = _router_lines(net)
    for uid in (vl_ds.SOPInstanceUID, camera_ds.SOPInstanceUID):
        assert sum(uid in line for line in lines) == 1, lines
    for path in (ct, sr, derived):
        assert not any(pydicom.dcmread(path).SOPInstanceUID in line for line in lines)
    for line in lines:  # UIDs only: no patient data in the log
        assert PATIENT.name not in line and PATIENT.patient_id not in line and "Router" not in line


def test_results_from_dermpacs_are_stored_not_forwarded(net):
    tmp, study = net.tmp / "store-back", generate_uid()
    photo_path, photo_ds = _camera_photo(tmp, "photo", study, body_part="FACE")
    assert net.pacs.upload(photo_path)["Status"] == "Success"
    assert photo_ds.SOPInstanceUID in _settle(net, photo_ds.SOPInstanceUID)

    # dermpacs' result: a real SEG of the photograph, sent over DICOM as dermpacs does.
    photo = read_photograph(photo_path)
    masks = np.zeros((photo.rows, photo.columns, 1), bool)
    masks[10:30, 20:40, 0] = True
    seg = build_photo_segmentation(
        photo, [SegmentSpec("Vitiligo", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, codes.VITILIGO)],
        masks, ALGORITHM,
    )
    seg_path = write_dataset(seg, tmp / "seg.dcm")
    # And a photograph that dermpacs itself sends (calling AE DERMAI): only the
    # calling-AE guard stops this one.
    echo_path, echo_ds = _camera_photo(tmp, "from-dermpacs", study)
    storescu(net.pacs.dicom_port, [seg_path, echo_path], calling_ae="DERMAI", called_ae="ORTHANC")

    # Stored, in the photograph's study, and visible to DICOMweb clients (OHIF) as SEG.
    assert net.pacs.find_instances(study, "SEG") == [seg.SOPInstanceUID]
    assert net.pacs.find_instances(generate_uid(), "SEG") == []
    stored = net.pacs.dataset(seg.SOPInstanceUID)
    assert stored.StudyInstanceUID == study and stored.PixelData == seg.PixelData
    assert net.pacs.lookup_instance(echo_ds.SOPInstanceUID) is not None

    # Not forwarded back: a photograph stored after them is, and they are not.
    sentinel_path, sentinel_ds = _camera_photo(tmp, "sentinel", study)
    net.pacs.upload(sentinel_path)
    received = _settle(net, sentinel_ds.SOPInstanceUID)
    assert seg.SOPInstanceUID not in received
    assert echo_ds.SOPInstanceUID not in received


def test_unknown_caller_cannot_store(net):
    path, _ = _camera_photo(net.tmp / "stranger", "photo", generate_uid())
    with pytest.raises(RuntimeError, match="storescu failed"):
        storescu(net.pacs.dicom_port, [path], calling_ae="STRANGER")


def test_failed_forward_stays_visible_and_can_be_resubmitted(net):
    """dermpacs down: the forward job fails visibly (not lost, as with Lua SendToModality)."""
    tmp = net.tmp / "dermpacs-down"
    path, ds = _camera_photo(tmp, "photo", generate_uid())
    net.dermpacs.stop()
    try:
        orthanc_id = net.pacs.upload(path)["ID"]
        failed = wait_until(
            lambda: [j for j in net.pacs.jobs()
                     if orthanc_id in j["Content"].get("ParentResources", []) and j["State"] == "Failure"],
            15, what="a failed forward job",
        )
    finally:
        net.dermpacs.start()
    assert ds.SOPInstanceUID not in net.dermpacs.received()
    net.pacs.request("POST", f"/jobs/{failed[0]['ID']}/resubmit", b"")
    wait_until(lambda: ds.SOPInstanceUID in net.dermpacs.received(), 15, what="the resubmitted forward")
