"""The mask benchmark keeps running and keeps checking its RLEs against the recipe's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "masks.py"


def test_mask_benchmark_runs_and_matches_the_recipe():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--masks", "1", "--rounds", "1"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("same RLEs as the recipe in every case")
    assert proc.stdout.count("x\n") == 6  # three kinds of logits at two frame sizes
