"""The relabel benchmark keeps working (a small in-process run; figures are not asserted here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "relabel.py"


def test_a_small_run_relabels_every_image_and_reports_its_stages(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("relabel_benchmark", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert benchmark.main(["--images", "6", "--keep", "8", "--dim", "32", "--batch-size", "4", "--objects", "0.5",
                           "--cache", str(tmp_path / "cache"), "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "round 1: 6 images" in out and "images/s" in out
    for stage in ("files", "heads", "postprocess", "store"):
        assert f"{stage}:" in out
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # the runs are cleaned up
