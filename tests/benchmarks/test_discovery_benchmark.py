"""The folder-listing benchmark keeps working (a smoke run on a small tree; figures are not asserted
here -- BENCHMARKS.md holds them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "discovery.py"


def test_smoke_run_lists_and_resumes_a_small_tree():
    done = subprocess.run([sys.executable, str(SCRIPT), "--counts", "250", "--per-folder", "100", "--done", "0,0.2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.strip().splitlines()
    assert header.split()[:3] == ["images", "done", "to"]
    assert [tuple(map(int, row.split()[:3])) for row in rows] == [(250, 0, 250), (250, 50, 200)]
    assert all(float(row.split()[5]) > 0 for row in rows)  # bytes held per image
