"""ui.downloads: old export folders under the work folder are removed, recent ones stay."""

from __future__ import annotations

import os

from autolabel.ui.downloads import EXPORTS, prune_exports


def _export(work, name: str, age_s: float, now: float):
    folder = work / EXPORTS / name
    folder.mkdir(parents=True)
    (folder / "run_coco.zip").write_bytes(b"zip")
    os.utime(folder, (now - age_s, now - age_s))
    return folder


def test_prune_keeps_the_newest_and_the_young(tmp_path):
    now = 1_000_000.0
    ages = {"a": 10, "b": 20, "c": 4000, "d": 5000, "e": 30, "f": 9000}
    folders = {name: _export(tmp_path, name, age, now) for name, age in ages.items()}
    removed = prune_exports(tmp_path, keep=2, min_age_s=300, now=now)
    # a, b: the two newest; e: beyond them but younger than 300 s (maybe not served yet).
    assert sorted(p.name for p in removed) == ["c", "d", "f"]
    assert sorted(p.name for p in (tmp_path / EXPORTS).iterdir()) == ["a", "b", "e"]
    assert not folders["f"].exists()


def test_prune_keeps_old_ones_among_the_newest(tmp_path):
    now = 1_000_000.0
    for name, age in (("x", 7000), ("y", 8000), ("z", 9000)):
        _export(tmp_path, name, age, now)
    assert [p.name for p in prune_exports(tmp_path, keep=2, min_age_s=300, now=now)] == ["z"]


def test_prune_without_exports_does_nothing(tmp_path):
    assert prune_exports(tmp_path) == []
    (tmp_path / EXPORTS).mkdir()
    (tmp_path / EXPORTS / "stray.txt").write_text("not a folder")
    assert prune_exports(tmp_path, keep=0, min_age_s=0) == []
    assert (tmp_path / EXPORTS / "stray.txt").exists()
