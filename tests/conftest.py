"""Shared fixtures: expensive objects built once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def face_masker():
    from models.face import FaceSkinMasker

    masker = FaceSkinMasker()
    yield masker
    masker.close()
