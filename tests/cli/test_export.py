"""``autolabel export`` in-process: every format, splits, letterbox, ZIP, thresholds, one-line errors."""

from __future__ import annotations

import json
import zipfile

import pytest
import yaml
from click.testing import CliRunner

from autolabel.cli import main
from autolabel.testing.synthetic import CLASSES, detection_images, make_run


@pytest.fixture()
def run_dir(tmp_path):
    store = make_run(tmp_path / "run", tmp_path / "src", CLASSES, detection_images())
    store.close()
    return tmp_path / "run"


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_has_examples_for_every_format():
    result = _invoke("export", "--help")
    assert result.exit_code == 0
    for fmt in ("coco", "yolo", "voc", "labelstudio"):
        assert f"--format {fmt}" in result.output or fmt == "coco"
    assert "--split train=0.8,val=0.2" in result.output and "--letterbox" in result.output


def test_yolo_with_split_letterbox_and_zip(run_dir, tmp_path):
    result = _invoke("export", run_dir, "--format", "yolo", "--out", tmp_path / "out", "--split", "train=0.6,val=0.4",
                     "--seed", "0", "--image-size", "64", "--letterbox", "--zip")
    assert result.exit_code == 0, result.output
    assert "5 images (1 without labels)" in result.output and "splits: " in result.output
    with zipfile.ZipFile(tmp_path / "out" / "dataset.zip") as zf:
        names = zf.namelist()
        data = yaml.safe_load(zf.read("data.yaml"))
    assert data["names"] == {0: "car", 1: "person"}
    assert sum(n.startswith("images/train/") for n in names) == 3 and sum(n.startswith("images/val/") for n in names) == 2


@pytest.mark.parametrize("fmt, index", [("coco", "coco_export.json"), ("voc", "ImageSets/Main/trainval.txt"),
                                        ("labelstudio", "tasks.json")])
def test_other_formats(run_dir, tmp_path, fmt, index):
    result = _invoke("export", run_dir, "--format", fmt, "--out", tmp_path / fmt, "--drop-empty")
    assert result.exit_code == 0, result.output
    assert (tmp_path / fmt / index).is_file() and "4 images" in result.output


def test_thresholds_file_filters_labels(run_dir, tmp_path):
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text(yaml.safe_dump({"classes": [{"name": "car", "threshold": 0.5}, {"name": "person"}]}))
    result = _invoke("export", run_dir, "--out", tmp_path / "out", "--thresholds", thresholds)
    assert result.exit_code == 0, result.output
    assert "left out 1 labels below their class threshold" in result.output
    coco = json.loads((tmp_path / "out" / "coco_export.json").read_text())
    assert len(coco["annotations"]) == 5


@pytest.mark.parametrize(
    "args, message",
    [
        (["--split", "train=0.9,val=0.2"], "add up to 1"),  # bad split
        (["--format", "yolo", "--masks", "rle"], "masks 'rle' is not for yolo"),  # rle outside COCO
        (["--letterbox"], "--letterbox needs --image-size"),  # letterbox without a size
        (["--stratify"], "stratify needs a split"),  # stratify without a split
        (["--image-size", "abc"], "--image-size must be"),  # bad size
    ],
)
def test_bad_options_are_one_line_errors(run_dir, tmp_path, args, message):
    result = _invoke("export", run_dir, "--out", tmp_path / "out", *args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_thresholds_for_another_run_are_refused(run_dir, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("classes:\n  - name: truck\n    threshold: 0.4\n")
    result = _invoke("export", run_dir, "--out", tmp_path / "out", "--ontology", other)
    assert result.exit_code == 1 and "the run does not have: truck" in result.output
