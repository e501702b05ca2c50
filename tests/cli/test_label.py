"""``autolabel label``: end to end through the CLI, in-process (CliRunner) and as a real process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from autolabel.cli import main


def _photos(folder, count, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        w, h = (160, 120) if i % 2 else (120, 170)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"img_{i:03d}.jpg", quality=90)
    return folder


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_help_texts_have_examples():
    for cmd in ([], ["label"], ["export"]):
        result = _invoke(*cmd, "--help")
        assert result.exit_code == 0
        assert "Examples" in result.output or "autolabel label" in result.output


def test_label_then_export(tiny_owlv2, tmp_path):
    photos = _photos(tmp_path / "photos", 3)
    result = _invoke("label", photos, "--out", tmp_path / "run", "--prompt", "car=car,van", "--prompt", "person",
                     "--model", tiny_owlv2, "--threshold", "0.0", "--quiet")
    assert result.exit_code == 0, result.output
    assert "3 done, 0 failed, 0 skipped" in result.output
    # Same command again: everything is skipped.
    again = _invoke("label", photos, "--out", tmp_path / "run", "--prompt", "car=car,van", "--prompt", "person",
                    "--model", tiny_owlv2, "--threshold", "0.0", "--quiet")
    assert "0 done, 0 failed, 3 skipped" in again.output
    exported = _invoke("export", tmp_path / "run", "--out", tmp_path / "export", "--image-size", "64")
    assert exported.exit_code == 0, exported.output
    coco = json.loads((tmp_path / "export" / "coco_export.json").read_text())
    assert len(coco["images"]) == 3 and max(max(i["width"], i["height"]) for i in coco["images"]) == 64
    assert [c["name"] for c in coco["categories"]] == ["car", "person"]


def test_segment_mode_stores_masks_and_exports_polygons(tiny_owlv2, tiny_sam2, tmp_path):
    from autolabel.geometry import rle_to_mask

    photos = _photos(tmp_path / "photos", 2)
    result = _invoke("label", photos, "--out", tmp_path / "run", "--prompt", "thing", "--model", tiny_owlv2,
                     "--sam-model", tiny_sam2, "--mode", "segment", "--threshold", "0.0", "--quiet")
    assert result.exit_code == 0, result.output
    db = sqlite3.connect(tmp_path / "run" / "autolabel.db")
    rows = db.execute("SELECT i.width, i.height, d.rle FROM detections d JOIN images i ON i.id = d.image_id").fetchall()
    assert rows and all(rle is not None for _, _, rle in rows)
    for width, height, rle in rows:  # masks at the original oriented resolution
        assert rle_to_mask(json.loads(rle)).shape == (height, width)
    for masks in ("polygon", "rle"):
        out = tmp_path / f"export-{masks}"
        assert _invoke("export", tmp_path / "run", "--out", out, "--masks", masks).exit_code == 0
        anns = json.loads((out / "coco_export.json").read_text())["annotations"]
        assert len(anns) == len(rows)
        non_empty = [a for a in anns if a["area"] > 0]
        assert non_empty, "random weights still give some non-empty masks"
        for ann in non_empty:
            segmentation = ann["segmentation"]
            assert isinstance(segmentation, dict if masks == "rle" else list) and segmentation


def test_detect_mode_never_loads_sam2(tiny_owlv2, tmp_path):
    photos = _photos(tmp_path / "photos", 1)
    result = _invoke("label", photos, "--out", tmp_path / "run", "--prompt", "thing", "--model", tiny_owlv2,
                     "--sam-model", tmp_path / "no-such-sam", "--quiet")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "a", "--prompt", "a"], "defined twice"),  # duplicate class
        ([], "--prompt"),  # no classes at all
        (["--prompt", "a", "--threshold", "3"], "threshold"),  # out-of-range setting
        (["--prompt", "a", "--model", "/nonexistent/model"], "cannot load"),  # bad checkpoint
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path, args, message):
    photos = _photos(tmp_path / "photos", 1)
    result = CliRunner().invoke(main, ["label", str(photos), "--out", str(tmp_path / "run"), *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_other_configuration_is_refused(tiny_owlv2, tmp_path):
    photos = _photos(tmp_path / "photos", 1)
    base = ["label", photos, "--out", tmp_path / "run", "--prompt", "cat", "--model", tiny_owlv2, "--quiet"]
    assert _invoke(*base).exit_code == 0
    result = CliRunner().invoke(main, [str(a) for a in base] + ["--threshold", "0.3"])
    assert result.exit_code == 1
    assert "another configuration" in result.output and "threshold" in result.output


def test_precision_is_recorded_and_another_one_is_refused(tiny_owlv2, tmp_path):
    photos = _photos(tmp_path / "photos", 1)
    base = ["label", photos, "--out", tmp_path / "run", "--prompt", "cat", "--model", tiny_owlv2, "--quiet"]
    assert _invoke(*base, "--precision", "int8").exit_code == 0
    config = json.loads(sqlite3.connect(tmp_path / "run" / "autolabel.db").execute(
        "SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
    assert config["precision"] == "int8"
    result = CliRunner().invoke(main, [str(a) for a in base] + ["--precision", "fp32"])
    assert result.exit_code == 1
    assert "another configuration" in result.output and "precision" in result.output


def test_unsupported_precision_is_one_line(tiny_owlv2, tmp_path):
    photos = _photos(tmp_path / "photos", 1)
    result = CliRunner().invoke(main, ["label", str(photos), "--out", str(tmp_path / "run"), "--prompt", "cat",
                                       "--model", str(tiny_owlv2), "--device", "cpu", "--precision", "fp16"])
    assert result.exit_code == 1
    assert "fp16 needs a GPU" in result.output and "Traceback" not in result.output


def test_bad_inputs_are_reported_and_the_run_completes(tiny_owlv2, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (90, 60), (200, 30, 30)).save(folder / "good.jpg")
    good_bytes = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good_bytes[: len(good_bytes) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    Image.fromarray((np.arange(60 * 80).reshape(60, 80) * 13).astype(np.uint16)).save(folder / "deep16.png")
    Image.new("CMYK", (70, 50), (0, 128, 255, 0)).save(folder / "cmyk.jpg")
    palette = Image.new("P", (40, 30), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(folder / "palette.png", transparency=0)
    Image.new("RGB", (1, 1), (0, 0, 0)).save(folder / "tiny.png")

    result = _invoke("label", folder, "--out", tmp_path / "run", "--prompt", "thing", "--model", tiny_owlv2, "--quiet")
    assert result.exit_code == 0, result.output
    assert "5 done, 3 failed" in result.output
    for bad in ("truncated.jpg", "empty.jpg", "notes.jpg"):
        assert bad in result.output
    db = sqlite3.connect(tmp_path / "run" / "autolabel.db")
    rows = dict(db.execute("SELECT path, status FROM images").fetchall())
    assert {os.path.basename(p): s for p, s in rows.items()} == {
        "good.jpg": "done", "deep16.png": "done", "cmyk.jpg": "done", "palette.png": "done", "tiny.png": "done",
        "truncated.jpg": "failed", "empty.jpg": "failed", "notes.jpg": "failed",
    }


@pytest.fixture(scope="module")
def owlv2_slow(tmp_path_factory):
    """A bigger input size so each image takes long enough to kill the run part way."""
    from autolabel.testing.owlv2_checkpoint import build_owlv2_checkpoint

    return build_owlv2_checkpoint(tmp_path_factory.mktemp("owlv2-320"), image_size=320)


def _done_count(db_path):
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM images WHERE status = 'done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sigkill_then_rerun_gives_the_same_export(owlv2_slow, tmp_path):
    photos = _photos(tmp_path / "photos", 12, seed=1)
    args = ["label", str(photos), "--prompt", "car=car,van", "--prompt", "person", "--model", str(owlv2_slow),
            "--threshold", "0.0", "--batch-size", "1", "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    # Uninterrupted reference run.
    subprocess.run([sys.executable, "-m", "autolabel", *args, "--out", str(tmp_path / "full")], env=env, check=True,
                   capture_output=True)

    # Killed run: SIGKILL once a few images are committed, then the same command again.
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "autolabel", *args, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _done_count(killed / "autolabel.db") < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = _done_count(killed / "autolabel.db")
    assert 0 < done_at_kill < 12, f"the kill must land part way (done={done_at_kill})"
    rerun = subprocess.run([sys.executable, "-m", "autolabel", *args, "--out", str(killed)], env=env, check=True,
                           capture_output=True, text=True)
    assert f"{12 - done_at_kill} done, 0 failed, {done_at_kill} skipped" in rerun.stdout

    for run in ("full", "killed"):
        result = _invoke("export", tmp_path / run, "--out", tmp_path / f"export-{run}")
        assert result.exit_code == 0, result.output
    full = (tmp_path / "export-full" / "coco_export.json").read_text()
    assert json.loads(full)["annotations"], "the comparison needs labels"
    assert (tmp_path / "export-killed" / "coco_export.json").read_text() == full


def test_ctrl_c_commits_what_is_done_exits_non_zero_and_the_rerun_resumes(owlv2_slow, tmp_path):
    photos = _photos(tmp_path / "photos", 12, seed=2)
    args = [sys.executable, "-m", "autolabel", "label", str(photos), "--prompt", "person", "--model",
            str(owlv2_slow), "--threshold", "0.0", "--batch-size", "1", "--quiet", "--out", str(tmp_path / "run")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _done_count(tmp_path / "run" / "autolabel.db") < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    done_at_stop = _done_count(tmp_path / "run" / "autolabel.db")
    assert 2 <= done_at_stop < 12, f"the interrupt must land part way (done={done_at_stop})"
    rerun = subprocess.run(args, env=env, check=True, capture_output=True, text=True)
    assert f"{12 - done_at_stop} done, 0 failed, {done_at_stop} skipped" in rerun.stdout


def test_exact_path_matches_the_fast_path_on_small_images(tiny_owlv2, tmp_path):
    """Images smaller than the draft size decode in full either way: both paths give the same labels."""
    photos = _photos(tmp_path / "photos", 2)
    exports = []
    for name, flags in [("fast", ["--workers", "1"]), ("exact", ["--exact"])]:
        result = _invoke("label", photos, "--out", tmp_path / name, "--prompt", "thing", "--model", tiny_owlv2,
                         "--threshold", "0.0", "--quiet", *flags)
        assert result.exit_code == 0, result.output
        assert "2 done, 0 failed" in result.output
        assert _invoke("export", tmp_path / name, "--out", tmp_path / f"export-{name}").exit_code == 0
        exports.append(json.loads((tmp_path / f"export-{name}" / "coco_export.json").read_text())["annotations"])
    fast, exact = exports
    assert len(fast) == len(exact) > 0
    np.testing.assert_allclose([a["bbox"] for a in fast], [a["bbox"] for a in exact], atol=1e-2)


def test_engine_ray_without_ray_says_how_to_install_it(tiny_owlv2, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    photos = _photos(tmp_path / "photos", 1)
    result = CliRunner().invoke(main, ["label", str(photos), "--out", str(tmp_path / "run"), "--prompt", "thing",
                                       "--model", str(tiny_owlv2), "--engine", "ray", "--quiet"])
    assert result.exit_code == 1
    assert "pip install 'autolabel[ray]'" in result.output and "Traceback" not in result.output


def test_engine_ray_refuses_a_bad_actor_count(tiny_owlv2, tmp_path):
    photos = _photos(tmp_path / "photos", 1)
    result = CliRunner().invoke(main, ["label", str(photos), "--out", str(tmp_path / "run"), "--prompt", "thing",
                                       "--model", str(tiny_owlv2), "--engine", "ray", "--actors", "0"])
    assert result.exit_code == 1 and "--actors must be at least 1" in result.output


@pytest.mark.parametrize("family", ["owlvit", "grounding_dino", "omdet", "sam3"])
def test_label_takes_any_detector_family_by_its_checkpoint(tmp_path, family):
    """The registry picks the family from config.json: the same command works for every detector;
    SAM 3 makes its own masks in segment mode, without --sam-model."""
    from importlib import import_module

    build = getattr(import_module(f"autolabel.testing.{family}_checkpoint"), f"build_{family}_checkpoint")
    checkpoint = build(tmp_path / family)
    mode = "segment" if family == "sam3" else "detect"
    out = tmp_path / "run"
    result = _invoke("label", _photos(tmp_path / "in", 2), "--out", out, "--prompt", "cat", "--model", checkpoint,
                     "--mode", mode, "--threshold", "0", "--quiet")
    assert result.exit_code == 0, result.output
    assert "2 done, 0 failed" in result.output
    with sqlite3.connect(out / "autolabel.db") as db:
        boxes, masks = db.execute("SELECT COUNT(*), COUNT(rle) FROM detections").fetchone()
    assert boxes > 0 and masks == (boxes if mode == "segment" else 0)


@pytest.mark.parametrize("builder", ["sam_v1_checkpoint:build_sam_checkpoint",
                                     "sam3_checkpoint:build_sam3_tracker_checkpoint"])
def test_label_takes_any_segmenter_family_by_its_checkpoint(tmp_path, tiny_owlv2, builder):
    from importlib import import_module

    module, _, name = builder.partition(":")
    checkpoint = getattr(import_module(f"autolabel.testing.{module}"), name)(tmp_path / "seg")
    out = tmp_path / "run"
    result = _invoke("label", _photos(tmp_path / "in", 2), "--out", out, "--prompt", "cat", "--model", tiny_owlv2,
                     "--sam-model", checkpoint, "--mode", "segment", "--threshold", "0", "--quiet")
    assert result.exit_code == 0, result.output
    with sqlite3.connect(out / "autolabel.db") as db:
        boxes, masks = db.execute("SELECT COUNT(*), COUNT(rle) FROM detections").fetchone()
    assert boxes > 0 and masks == boxes
