"""``benchmarks/gpu.sh --check`` runs every command line of the GPU run on the CPU with tiny
checkpoints, so a line that would fail on the (scarce) GPU machine fails here first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.sh"


def _check(tmp_path: Path, *args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": python, "OUT": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(["bash", str(SCRIPT), "--check", *args], capture_output=True, text=True, env=env,
                          timeout=900)


def _reports(folder: Path) -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_line_of_the_gpu_run_runs_on_the_cpu(tmp_path):
    proc = _check(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("every step ran")
    assert "cpu parity detect" in proc.stdout and "cpu parity segment" in proc.stdout
    reports = _reports(tmp_path / "gpu-check")
    assert set(reports) == {"detect-b16-2mp.json", "segment-b16-sam2l-2mp.json", "detect-b16-12mp.json",
                            "detect-b16-2mp-compiled.json"}
    assert reports["detect-b16-2mp-compiled.json"]["variants"] == ["fp32+compile"]
    for report in reports.values():
        assert report["machine"]["device"] == "cpu" and report["results"]
        assert all(entry["ours"]["images_per_s"] > 0 for entry in report["results"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_family_line_runs_on_the_cpu(tmp_path):
    proc = _check(tmp_path, "--families")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("every step ran")
    reports = _reports(tmp_path / "gpu-check")
    assert {report["family"] for report in reports.values()} == {
        "owlvit", "grounding-dino", "mm-grounding-dino", "omdet-turbo", "sam3"}


def test_a_failing_step_is_named_and_fails_the_run(tmp_path):
    proc = _check(tmp_path, "--families", python="false")
    assert proc.returncode == 1
    assert proc.stdout.strip().splitlines()[-1] == (
        "FAILED: owlvit (exit 1) grounding-dino (exit 1) mm-grounding-dino (exit 1) omdet-turbo (exit 1) sam3 (exit 1)")
