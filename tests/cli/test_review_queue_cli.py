"""``autolabel review-queue`` in-process: the ranked table, --limit and --json."""

from __future__ import annotations

import json

from click.testing import CliRunner

from autolabel.cli import main
from autolabel.testing.synthetic import Label, SyntheticImage, make_run


def _run(tmp_path):
    """Three images: a car just above the run's threshold (0.1), a car and a person on one object,
    and a confident car alone."""
    images = [SyntheticImage("a.jpg", (64, 48), [Label("car", (0, 0, 20, 20), 0.9)]),
              SyntheticImage("b.jpg", (64, 48), [Label("car", (0, 0, 20, 20), 0.9),
                                                 Label("person", (0, 0, 20, 22), 0.8)]),
              SyntheticImage("c.jpg", (64, 48), [Label("car", (0, 0, 20, 20), 0.11)])]
    make_run(tmp_path / "run", tmp_path / "images", ["car", "person"], images).close()
    return tmp_path / "run"


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_review_queue_prints_rank_image_score_and_reason(tmp_path):
    run = _run(tmp_path)
    result = _invoke("review-queue", run)
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == ["rank", "score", "image", "(main", "reason)"]
    assert [row.split()[0] for row in rows] == ["1", "2", "3"]
    assert rows[0].split()[2].endswith("b.jpg") and "car and person boxes overlap (IoU 0.91)" in rows[0]
    assert rows[1].split()[2].endswith("c.jpg") and "car scored 0.11, threshold 0.10" in rows[1]
    assert rows[2].split()[2].endswith("a.jpg") and "nothing stands out" in rows[2]


def test_review_queue_limit_and_json(tmp_path):
    run = _run(tmp_path)
    result = _invoke("review-queue", run, "--limit", 2, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["path"].endswith("b.jpg")
    assert rows[1]["terms"]["near_threshold"] == 0.9 and rows[1]["score"] == 0.9
    assert rows[0]["reviewed"] is False


def test_review_queue_needs_a_run(tmp_path):
    result = _invoke("review-queue", tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
