"""``autolabel label --tiles``: parsed, recorded with the run, refused where unsupported."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
from click.testing import CliRunner
from PIL import Image

from autolabel.cli import main


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _run_config(run_dir) -> dict:
    from autolabel.store import DB_NAME

    with sqlite3.connect(run_dir / DB_NAME) as db:
        return json.loads(db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])


def test_tiles_auto_labels_and_is_recorded_with_the_run(tmp_path, tiny_owlv2):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 200, 3), np.uint8)).save(images / "a.jpg")
    result = _invoke("label", images, "--out", tmp_path / "run", "--prompt", "cat", "--model", tiny_owlv2,
                     "--device", "cpu", "--tiles", "auto", "--quiet")
    assert result.exit_code == 0, result.output
    assert "1 done" in result.output
    assert _run_config(tmp_path / "run")["tiles"]["auto"] is True
    # resuming with other tiles is refused, like any other option
    other = _invoke("label", images, "--out", tmp_path / "run", "--prompt", "cat", "--model", tiny_owlv2,
                    "--device", "cpu", "--tiles", "2x2", "--quiet")
    assert other.exit_code == 1 and "tiles" in other.output


def test_bad_tiles_are_one_line_errors(tmp_path):
    bad = _invoke("label", tmp_path, "--out", tmp_path / "run", "--prompt", "cat", "--model", "x", "--tiles", "3")
    assert bad.exit_code == 1 and "RxC" in bad.output
