"""The files administrators install (deploy/) agree with each other and with the service.

Orthanc's example config and the routing script run for real in test_orthanc_router.py
(tests.pacs.orthanc starts Orthanc from deploy/orthanc/orthanc.json); here: the values
that must match across files, the example service config loads and routes as its
comments say, and the systemd unit parses.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom.uid import SecondaryCaptureImageStorage, VLPhotographicImageStorage

from dicom import codes
from dicom.encode import pattern_image, photograph_dataset
from tests.pacs.orthanc import DEPLOY_CONFIG, ROUTER_LUA, read_orthanc_json

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
EXAMPLE_YAML = DEPLOY / "dermpacs.example.yaml"
UNIT = DEPLOY / "dermpacs.service"


@pytest.fixture(scope="module")
def service_config():
    from dicom.service.config import load_config

    return load_config(EXAMPLE_YAML)


def test_orthanc_and_dermpacs_name_each_other(service_config):
    orthanc = read_orthanc_json(DEPLOY_CONFIG)
    dermpacs = orthanc["DicomModalities"]["dermpacs"]
    assert dermpacs["AET"] == service_config.ae_title
    assert dermpacs["Port"] == service_config.port
    assert dermpacs["AllowStore"] is True  # dermpacs stores its results back
    assert service_config.destination.ae_title == orthanc["DicomAet"]
    assert service_config.destination.port == orthanc["DicomPort"]
    assert [c.ae_title for c in service_config.allowed_callers] == [orthanc["DicomAet"]]
    assert [Path(p).name for p in orthanc["LuaScripts"]] == [ROUTER_LUA.name]
    assert str(service_config.data_dir) in UNIT.read_text()


def test_router_forwards_the_photograph_sop_classes():
    lua = ROUTER_LUA.read_text()
    table = re.search(r"FORWARD_SOP_CLASSES = \{(.*?)\n\}", lua, re.S).group(1)
    assert sorted(re.findall(r"\['([\d.]+)'\]", table)) == sorted(
        [str(VLPhotographicImageStorage), str(SecondaryCaptureImageStorage)]
    )
    assert re.search(r"^DERMPACS_MODALITY = 'dermpacs'$", lua, re.M)


@pytest.mark.parametrize(
    ("kwargs", "description", "app"),
    [
        ({"body_part": "FACE"}, "", "facial_vitiligo"),
        ({"body_part": "SCALP"}, "", "scalp"),
        ({"body_part": "SKIN", "anatomic_region": codes.SKIN_OF_SCALP}, "", "scalp"),
        ({"body_part": "SKIN"}, "Skin prick test forearm", "skin_prick"),
        ({"body_part": "SKIN"}, "left forearm", "vitiligo_lesion"),
        ({"body_part": "SKIN", "sop_class": "secondary_capture"}, "facial close-up", "facial_vitiligo"),
    ],
)
def test_example_rules_route_as_documented(service_config, kwargs, description, app):
    from dicom.service.router import Router, routing_header

    ds = photograph_dataset(pattern_image(64, 64), series_description=description, **kwargs)
    rule = Router(service_config.rules).route(routing_header(ds), service_config.ae_title)
    assert rule is not None and rule.app == app


def test_prick_tests_by_called_ae(service_config):
    from dicom.service.router import Router, routing_header

    ds = photograph_dataset(pattern_image(64, 64), body_part="FACE")
    assert Router(service_config.rules).route(routing_header(ds), "DERMAI-SPT").app == "skin_prick"


def test_unit_environment_matches_makefile():
    unit = UNIT.read_text()
    makefile = (REPO / "Makefile").read_text()
    for key in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
        value = re.search(rf"^export {key} := (\S+)$", makefile, re.M).group(1)
        assert f"Environment={key}={value}" in unit
    assert "LimitSTACK=32M" in unit  # Makefile: ulimit -s 32768 (KiB)
    assert "ulimit -s 32768" in makefile
    assert re.search(r"^ExecStart=\S+/dermpacs serve --config /etc/dermpacs/dermpacs\.yaml$", unit, re.M)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_parses(tmp_path):
    # verify needs ExecStart to exist; everything else is checked as shipped.
    unit = tmp_path / "dermpacs.service"
    unit.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", UNIT.read_text(), flags=re.M))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if str(unit) in line]
    assert result.returncode == 0 and complaints == [], result.stdout + result.stderr
