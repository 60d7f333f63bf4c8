"""`make demo` as a new user runs it: exit 0, and every view within 2 points of its painted truth."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.app_cases import REPO

# "left        15.92%           16.16%   ..." : view, measured, truth (then, on follow-ups, the change)
ROW = re.compile(r"^(left|frontal|right)\s+(-?\d+\.\d+)%\s+(-?\d+\.\d+)%(?:\s+([-+]\d+\.\d+) pts\s+([-+]\d+\.\d+) pts)?")


def test_networked_demo_prints_every_view_within_two_points(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "apps.demo", "--out", str(tmp_path / "demo-out")], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    rows = [m for m in map(ROW.match, proc.stdout.splitlines()) if m]
    assert len(rows) == 6, proc.stdout  # two visits of three views
    for row in rows:
        view, measured, truth = row.group(1), float(row.group(2)), float(row.group(3))
        assert abs(measured - truth) <= 2.0, (view, measured, truth)
        if row.group(4) is not None:  # the follow-up's change since baseline
            assert abs(float(row.group(4)) - float(row.group(5))) <= 2.0, row.group(0)
    assert "not analysed" not in proc.stdout and "no comparison" not in proc.stdout
