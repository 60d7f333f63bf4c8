"""`make test` installs the Debian packages its tests drive, or says in one line what is missing."""

from __future__ import annotations

import os
import subprocess
import tempfile
from tests.conftest import SYSTEM_PACKAGES, missing_system_packages

INSTALL = SYSTEM_PACKAGES.parent / "install.sh"


def _run_unprivileged(packages: str) -> subprocess.CompletedProcess:
    """The script on a package list of our own, as an ordinary user (as root it would install)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir="/tmp") as listing:
        listing.write(packages)
        listing.flush()
        os.chmod(listing.name, 0o644)  # readable by the unprivileged user
        env = dict(os.environ, DERMPACS_SYSTEM_PACKAGES=listing.name)
        command = [str(INSTALL), "test"]
        if os.geteuid() == 0:
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_missing_package_without_root_stops_with_one_line():
    proc = _run_unprivileged("test  no-such-command-dermpacs  dermpacs-fake-package\n"
                             "e2e   another-missing-command   not-needed-by-make-test\n"
                             "test  sh|/bin/sh                present-package\n")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith("apt-get install dermpacs-fake-package"), proc.stderr
    assert proc.stdout == ""


def test_nothing_missing_does_nothing():
    proc = _run_unprivileged("# comment\ntest  sh|/bin/sh  present-package\n")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_every_package_the_tests_need_is_installed_here():
    """The list is complete enough for this run: nothing the session start guard would stop on."""
    assert missing_system_packages("test") == []
