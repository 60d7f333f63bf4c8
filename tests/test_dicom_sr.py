"""TID 1500 report: dciodvfy-clean, OHIF's required structure, exact value round trip."""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom import codes
from dicom.encode import pattern_image, photograph_dataset, write_dataset
from dicom.reader import read_photograph
from dicom.seg import AlgorithmIdentity, SegmentSpec, build_photo_segmentation
from dicom.sr import (
    NumericMeasurement,
    PhotoMeasurementGroup,
    QualitativeFinding,
    build_measurement_report,
    read_measurement_report,
)
from dicom.validate import dciodvfy

ALGORITHM = AlgorithmIdentity(
    name="dermpacs facial_vitiligo (DDRNet-23-slim)", version="0.1.0+test",
    family=codes.ARTIFICIAL_INTELLIGENCE, weights_sha256="fedcba9876543210" * 4,
    description="unit-test weights; not for clinical use",
)
AWKWARD = [1 / 3, 12.345678901234567, 1e-9, 123456.789012345, 0.1 + 0.2, 7, np.float32(2.5)]
SPECS = [
    SegmentSpec("Skin of face", codes.TISSUE, codes.SKIN_OF_FACE),
    SegmentSpec("Vitiligo", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, codes.VITILIGO, codes.SKIN_OF_FACE),
]


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + rx * np.cos(t), cy + ry * np.sin(t)])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Three views of one study, each with a SEG and a measurement group."""
    root = tmp_path_factory.mktemp("sr")
    study_uid, series_uid = generate_uid(), generate_uid()
    groups = []
    for number, (view, value) in enumerate(zip(("left", "frontal", "right"), AWKWARD), start=1):
        ds = photograph_dataset(
            pattern_image(180, 120, seed=number), view=view, study_uid=study_uid,
            series_uid=series_uid, instance_number=number,
        )
        photo = read_photograph(write_dataset(ds, root / f"photo{number}.dcm"))
        masks = np.zeros((180, 120, 2), bool)
        masks[20:160, 10:110, 0] = True
        masks[40:60, 30:50, 1] = number != 2  # the frontal view has no vitiligo
        seg = build_photo_segmentation(photo, SPECS, masks, ALGORITHM, instance_number=number)
        write_dataset(seg, root / f"seg{number}.dcm")
        groups.append(
            PhotoMeasurementGroup(
                photo=photo,
                outline_xy=ellipse(60, 90, 50, 70),
                tracking_label=f"Face, {view} view",
                finding=codes.VITILIGO,
                finding_site=codes.SKIN_OF_FACE,
                measurements=[
                    NumericMeasurement(codes.F_VITILIGO, value, codes.PERCENT),
                    NumericMeasurement(codes.VITILIGO_AREA, AWKWARD[number + 2], codes.PIXELS),
                    NumericMeasurement(codes.FACE_SKIN_AREA, 14000.0, codes.PIXELS),
                    NumericMeasurement(codes.SEVERITY, number, codes.GRADE),
                ],
                qualitative=[
                    QualitativeFinding(codes.PHOTOGRAPH_VIEW, codes.VIEW_CODES[view]),
                    QualitativeFinding(codes.FACE_SKIN_MASK_METHOD, codes.MASK_FACEMESH),
                    QualitativeFinding(codes.SEVERITY, codes.MODERATE),
                ],
                segmentation=seg,
            )
        )
    report = build_measurement_report(groups, ALGORITHM)
    path = write_dataset(report, root / "sr.dcm")
    return groups, report, path


def test_sr_passes_dciodvfy(study):
    _, _, path = study
    result = dciodvfy(path)
    assert result.errors == [], result.output
    # the only warnings expected are about the private coding scheme designator
    assert all("99DERMPACS" in w for w in result.warnings), result.warnings


def test_structure_ohif_needs(study):
    groups, _, path = study
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert ds.ConceptNameCodeSequence[0].CodeValue == "126000"
    assert ds.StudyInstanceUID == groups[0].photo.study_instance_uid
    assert ds.PatientID == groups[0].photo.dataset.PatientID
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == codes.DERMPACS_SCHEME
    containers = [i for i in ds.ContentSequence if i.ValueType == "CONTAINER"]
    measurement_groups = containers[0].ContentSequence
    assert len(measurement_groups) == 3
    for group in measurement_groups:
        by_name = {i.ConceptNameCodeSequence[0].CodeValue: i for i in group.ContentSequence}
        assert by_name["112039"].TextValue  # Tracking Identifier
        assert by_name["112040"].UID  # Tracking Unique Identifier
        scoord = by_name["111030"]  # Image Region
        assert scoord.ValueType == "SCOORD" and scoord.GraphicType == "POLYLINE"
    evidence = {
        item.ReferencedSOPInstanceUID
        for study_item in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study_item.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    expected = {g.photo.sop_instance_uid for g in groups} | {g.segmentation.SOPInstanceUID for g in groups}
    assert evidence == expected


def test_values_round_trip_exactly(study):
    groups, report, path = study
    for source in (path, report):  # from the file and from the in-memory dataset
        read = read_measurement_report(source)
        assert len(read) == len(groups)
        for group, got in zip(groups, read):
            assert got["tracking_label"] == group.tracking_label
            assert got["tracking_uid"]
            assert got["referenced_sop_instance_uid"] == group.photo.sop_instance_uid
            assert got["segmentation_sop_instance_uid"] == group.segmentation.SOPInstanceUID
            assert got["finding"] == "Vitiligo" and got["finding_site"] == "Skin of face"
            expected = {m.name.meaning: (m.value, m.unit.value) for m in group.measurements}
            assert got["measurements"] == expected  # exact float equality
            assert got["qualitative"] == {q.name.meaning: q.value.meaning for q in group.qualitative}
            assert np.array_equal(got["outline_xy"], group.outline_xy)
            assert np.array_equal(got["outline_xy"][0], got["outline_xy"][-1])  # closed
            assert got["algorithm"]["name"] == ALGORITHM.name
            assert got["algorithm"]["version"] == ALGORITHM.version
            assert f"weights_sha256={ALGORITHM.weights_sha256}" in got["algorithm"]["parameters"]
    values = [g["measurements"][codes.F_VITILIGO.meaning][0] for g in read_measurement_report(path)]
    assert values == [float(v) for v in AWKWARD[:3]]
    assert values[0] == 1 / 3 and not math.isclose(values[0], 0.33333333333333, rel_tol=1e-15)


def test_hash_is_in_the_file_text(study):
    _, _, path = study
    assert ALGORITHM.weights_sha256.encode() in path.read_bytes()


def test_report_without_segmentation_and_uncalibrated_units(tmp_path):
    photo = read_photograph(write_dataset(photograph_dataset(pattern_image(100, 100)), tmp_path / "p.dcm"))
    group = PhotoMeasurementGroup(
        photo, ellipse(50, 50, 60, 60), "Scalp", codes.ALOPECIA, codes.SKIN_OF_SCALP,
        [NumericMeasurement(codes.AREA, 10.5, codes.SQUARE_MILLIMETER, finding_site=codes.SCALP,
                            tracking_label="scalp area")],
    )
    # the outline leaves the image: it is clipped to it
    assert group.outline_xy[:, 0].min() == 0 and group.outline_xy[:, 0].max() == 100
    path = write_dataset(build_measurement_report([group], ALGORITHM, series_number=77), tmp_path / "sr.dcm")
    result = dciodvfy(path)
    assert result.errors == [] and result.warnings == [], result.output  # no private codes
    got = read_measurement_report(path)[0]
    assert got["measurements"] == {"Area": (10.5, "mm2")}
    assert got["segmentation_sop_instance_uid"] is None
    assert pydicom.dcmread(path).SeriesNumber == 77


def test_invalid_input_is_explained(tmp_path, study):
    groups, _, _ = study
    photo = groups[0].photo
    with pytest.raises(ValueError, match="finite"):
        NumericMeasurement(codes.AREA, float("nan"), codes.PIXELS)
    with pytest.raises(TypeError, match="number"):
        NumericMeasurement(codes.AREA, "12", codes.PIXELS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        PhotoMeasurementGroup(photo, np.zeros((5, 3)), "x", codes.VITILIGO, None, groups[0].measurements)
    with pytest.raises(ValueError, match="3 distinct"):
        PhotoMeasurementGroup(photo, np.zeros((5, 2)), "x", codes.VITILIGO, None, groups[0].measurements)
    with pytest.raises(ValueError, match="distinct"):
        PhotoMeasurementGroup(photo, ellipse(10, 10, 5, 5), "x", codes.VITILIGO, None,
                              [NumericMeasurement(codes.AREA, 1.0, codes.PIXELS)] * 2)
    with pytest.raises(ValueError, match="no measurements"):
        PhotoMeasurementGroup(photo, ellipse(10, 10, 5, 5), "x", codes.VITILIGO, None, [])
    with pytest.raises(ValueError, match="at least one group"):
        build_measurement_report([], ALGORITHM)
    other = read_photograph(write_dataset(photograph_dataset(pattern_image(100, 100)), tmp_path / "o.dcm"))
    other_group = PhotoMeasurementGroup(other, ellipse(50, 50, 20, 20), "y", codes.VITILIGO, None,
                                        [NumericMeasurement(codes.AREA, 1.0, codes.PIXELS)])
    with pytest.raises(ValueError, match="one study"):
        build_measurement_report([groups[0], other_group], ALGORITHM)
    with pytest.raises(ValueError, match="another study"):
        PhotoMeasurementGroup(other, ellipse(50, 50, 20, 20), "y", codes.VITILIGO, None,
                              [NumericMeasurement(codes.AREA, 1.0, codes.PIXELS)],
                              segmentation=groups[0].segmentation)
    with pytest.raises(ValueError, match="Comprehensive"):
        read_measurement_report(other.dataset)
