"""Shared fixtures: expensive objects built once per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SYSTEM_PACKAGES = Path(__file__).resolve().parent / "system" / "packages.txt"


def missing_system_packages(who: str = "test") -> list[str]:
    """Debian packages of tests/system/packages.txt whose commands/files are absent here."""
    missing: list[str] = []
    for line in SYSTEM_PACKAGES.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 3 or fields[0] != who:
            continue
        check, package = fields[1], fields[2]
        present = any(os.path.exists(alt) if alt.startswith("/") else shutil.which(alt) is not None
                      for alt in check.split("|"))
        if not present and package not in missing:
            missing.append(package)
    return missing


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, in one line, when the real peers the tests drive are not installed."""
    missing = missing_system_packages()
    if missing:
        pytest.exit(f"the tests need Debian packages that are missing: apt-get install {' '.join(missing)} "
                    "(or run `make test` as root, which installs them)", returncode=4)


@pytest.fixture(scope="session")
def face_masker():
    from models.face import FaceSkinMasker

    masker = FaceSkinMasker()
    yield masker
    masker.close()
