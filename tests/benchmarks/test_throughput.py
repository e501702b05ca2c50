"""The throughput benchmark keeps working (a smoke run with tiny checkpoints; figures are not
asserted here -- BENCHMARKS.md holds them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> Path:
    """Checkpoints and generated images, built once for both runs."""
    return tmp_path_factory.mktemp("benchmark-caches")


def _run(*args, caches: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(SCRIPT), "--cache", str(caches / "models"), "--image-cache", str(caches / "images"),
           *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_smoke_run_reports_every_side_and_mode(tmp_path, caches):
    out = tmp_path / "report.json"
    proc = _run("--smoke", "--generate", "vga:2", "--precision", "int8", "--json", out, caches=caches)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert (report["precision"], report["recipe_precision"]) == ("int8", "fp32")  # ours int8 vs the fp32 recipe
    assert [(e["set"], e["mode"]) for e in report["results"]] == [("vga", "detect"), ("vga", "segment")]
    for entry in report["results"]:
        for side in ("recipe", "ours", "model"):
            assert entry[side]["images_per_s"] > 0 and entry[side]["peak_rss_mib"] > 0
        assert entry["speedup_vs_recipe"] > 0 and entry["fraction_of_model_only"] > 0
        assert {"decode", "vision", "store"} <= set(entry["ours"]["stages_ms_per_image"])
    segment = report["results"][1]
    assert {"sam2_encoder", "sam2_decoder", "masks"} <= set(segment["ours"]["stages_ms_per_image"])
    assert segment["ours"]["boxes_per_image"] == 3  # --boxes is capped at 3 in smoke mode
    assert "images/s" in proc.stdout or "img/s" in proc.stdout
    # The summary mode re-prints a saved report.
    again = _run("--summarize", out, caches=caches)
    assert again.returncode == 0 and "vga" in again.stdout


@pytest.mark.slow
def test_rss_mode_runs(tmp_path, caches):
    out = tmp_path / "rss.json"
    proc = _run("--rss", "2,4", "--rss-size", "vga", "--owlv2", "random:tiny", "--json", out, caches=caches)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["peak_rss_mib"]) == {"2", "4"} and "growth" in report


def _family_run(family: str, tmp_path, caches) -> dict:
    out = tmp_path / f"{family}.json"
    proc = _run("--smoke", "--family", family, "--generate", "vga:2", "--json", out, caches=caches)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_family_option_runs_that_familys_model_and_recipe(tmp_path, caches):
    # Grounding DINO: a non-square input, and a recipe that needs the prompt's token ids.
    report = _family_run("grounding-dino", tmp_path, caches)
    assert (report["family"], report["model"]) == ("grounding-dino", "random:tiny")
    assert (caches / "models" / "grounding-dino-tiny" / "config.json").is_file()
    assert [e["mode"] for e in report["results"]] == ["detect", "segment"]  # segment: SAM2 on its boxes
    for entry in report["results"]:
        for side in ("recipe", "ours", "model"):
            assert entry[side]["images_per_s"] > 0
        assert entry["speedup_vs_recipe"] > 0 and entry["fraction_of_model_only"] > 0
    assert report["results"][1]["ours"]["boxes_per_image"] == 3


def test_sam3_refuses_the_sam2_segment_recipe(caches):
    proc = _run("--smoke", "--family", "sam3", "--modes", "segment", caches=caches)
    assert proc.returncode == 2 and "makes its own masks" in proc.stderr
