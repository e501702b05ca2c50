"""What every format shares: determinism, atomic failure, the manifest, negatives, splits, thresholds."""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import yaml

from autolabel.errors import ConfigError
from autolabel.export import FORMATS, ExportOptions, export_dataset

INDEX = {"coco": "coco_export.json", "yolo": "data.yaml", "voc": "ImageSets/Main/trainval.txt",
         "labelstudio": "tasks.json"}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", FORMATS)
def test_deterministic_and_zip_matches_loose_files(det_run, tmp_path, fmt):
    options = ExportOptions.build(image_size="64", split="train=0.6,val=0.4", seed=7)
    export_dataset(det_run, tmp_path / "a", fmt, options)
    export_dataset(det_run, tmp_path / "b", fmt, options)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    zipped = ExportOptions.build(image_size="64", split="train=0.6,val=0.4", seed=7, zip_name="dataset.zip")
    export_dataset(det_run, tmp_path / "z1", fmt, zipped)
    export_dataset(det_run, tmp_path / "z2", fmt, zipped)
    assert (tmp_path / "z1" / "dataset.zip").read_bytes() == (tmp_path / "z2" / "dataset.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "z1" / "dataset.zip") as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == _files(tmp_path / "a")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("as_zip", [False, True])
def test_failed_export_leaves_no_index_and_no_temp_files(det_run, tmp_path, monkeypatch, fmt, as_zip):
    from autolabel.export import items

    calls = []

    def flaky(path, *args):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return b"data"

    monkeypatch.setattr(items, "encode_image", flaky)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        export_dataset(det_run, out, fmt, ExportOptions(zip_name="dataset.zip" if as_zip else None))
    if as_zip:
        assert list(out.iterdir()) == []  # the ZIP appears only when complete
    else:
        assert not (out / INDEX[fmt]).exists() and not (out / "manifest.json").exists()
    assert not list(out.rglob(".tmp-*"))


def test_manifest_sources_can_hide_the_servers_folders(det_run, tmp_path):
    """The UI's downloads name sources relative to a root (outside it: the file name only)."""
    root = tmp_path / "src"  # the images of det_run lie below it
    sources = sorted(r.path for r in det_run.images())
    for source_root, expected in ((root, [Path(p).relative_to(root).as_posix() for p in sources]),
                                  (tmp_path / "elsewhere", [Path(p).name for p in sources])):
        out = tmp_path / f"out-{source_root.name}"
        export_dataset(det_run, out, "coco", ExportOptions.build(source_root=source_root))
        manifest = json.loads((out / "manifest.json").read_text())
        assert sorted(e["source"] for e in manifest["images"]) == sorted(expected)
        assert str(tmp_path) not in (out / "manifest.json").read_text()


@pytest.mark.parametrize("fmt", FORMATS)
def test_manifest_maps_every_file_back_to_its_source(det_run, tmp_path, fmt):
    out = tmp_path / "out"
    summary = export_dataset(det_run, out, fmt, ExportOptions.build(split="train=0.6,val=0.4"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == fmt
    sources = {r.path for r in det_run.images()}
    per_image = set()
    for entry in manifest["images"]:
        assert entry["source"] in sources and Path(entry["source"]).is_file()
        assert entry["split"] in ("train", "val")
        per_image.update([entry["image"], *entry["labels"]])
    assert len(manifest["images"]) == summary.images == 5
    assert len({e["source"] for e in manifest["images"]}) == 5
    assert len({e["image"] for e in manifest["images"]}) == 5  # a.jpg / a.png and nested folders never collide
    others = set(_files(out)) - per_image - {"manifest.json"}
    # Only the format's index files are not per-image files.
    allowed = {"coco": {"annotations/instances_train.json", "annotations/instances_val.json"},
               "yolo": {"data.yaml"},
               "voc": {"labels.txt", "ImageSets/Main/train.txt", "ImageSets/Main/val.txt",
                       "ImageSets/Main/trainval.txt"},
               "labelstudio": {"tasks.json", "label_config.xml"}}[fmt]
    assert others == allowed == set(manifest["index"])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("drop_empty", [False, True])
def test_negatives_are_kept_unless_dropped(det_run, tmp_path, fmt, drop_empty):
    summary = export_dataset(det_run, tmp_path / "out", fmt, ExportOptions(drop_empty=drop_empty))
    assert summary.images == (4 if drop_empty else 5)
    assert summary.negatives == (0 if drop_empty else 1)
    assert summary.dropped_empty == (1 if drop_empty else 0)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())["images"]
    assert any("empty" in e["source"] for e in manifest) != drop_empty


@pytest.mark.parametrize("fmt", FORMATS)
def test_thresholds_filter_model_labels_at_export_time(det_run, tmp_path, fmt):
    # car labels score 0.91, 0.7, 0.2 and one human car label (no score); person 0.55 and 0.8.
    summary = export_dataset(det_run, tmp_path / "out", fmt, ExportOptions(thresholds={"car": 0.5, "person": 0.6}))
    assert summary.per_class == Counter({"car": 3, "person": 1})
    assert summary.filtered == 2
    # The stored labels keep everything.
    assert det_run.counts()["per_class"] == {"car": 4, "person": 2}
    # With drop_empty, an image whose only labels fall under their thresholds is a negative and goes.
    dropped = export_dataset(det_run, tmp_path / "out2", fmt,
                             ExportOptions(thresholds={"car": 0.5, "person": 0.6}, drop_empty=True))
    assert dropped.images == 3


def test_thresholds_for_unknown_classes_are_refused(det_run, tmp_path):
    with pytest.raises(ConfigError, match="does not have: truck"):
        export_dataset(det_run, tmp_path / "out", "coco", ExportOptions(thresholds={"truck": 0.5}))


def test_each_format_writes_splits_its_own_way(det_run, tmp_path):
    options = ExportOptions.build(split="train=0.6,val=0.4", seed=0)
    for fmt in FORMATS:
        export_dataset(det_run, tmp_path / fmt, fmt, options)
    manifest = json.loads((tmp_path / "coco" / "manifest.json").read_text())["images"]
    split_of = {Path(e["source"]).name + e["source"]: e["split"] for e in manifest}
    assert Counter(split_of.values()) == {"train": 3, "val": 2}
    # COCO: one file per split, image paths relative to images/<split>/.
    for split in ("train", "val"):
        coco = json.loads((tmp_path / "coco" / "annotations" / f"instances_{split}.json").read_text())
        assert len(coco["images"]) == Counter(split_of.values())[split]
        assert all((tmp_path / "coco" / "images" / split / im["file_name"]).is_file() for im in coco["images"])
    # YOLO: data.yaml names both folders; labels mirror images.
    data = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert (data["train"], data["val"], data["nc"], data["names"]) == ("images/train", "images/val", 2,
                                                                       {0: "car", 1: "person"})
    assert "path" not in data
    for split in ("train", "val"):
        images = sorted(p.stem for p in (tmp_path / "yolo" / "images" / split).iterdir())
        assert images == sorted(p.stem for p in (tmp_path / "yolo" / "labels" / split).iterdir())
    # The same seed gives every format the same split.
    for fmt in ("yolo", "voc", "labelstudio"):
        other = json.loads((tmp_path / fmt / "manifest.json").read_text())["images"]
        assert {Path(e["source"]).name + e["source"]: e["split"] for e in other} == split_of


def test_yolo_without_split_trains_and_validates_on_one_folder(det_run, tmp_path):
    export_dataset(det_run, tmp_path / "yolo", "yolo")
    data = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert data["train"] == data["val"] == "images/train"
    assert len(list((tmp_path / "yolo" / "labels" / "train").glob("*.txt"))) == 5
    empty = next((tmp_path / "yolo" / "labels" / "train").glob("*empty*.txt"))
    assert empty.read_text() == ""  # a negative has an empty label file


def test_yolo_rows_are_normalised_with_zero_based_class_ids(det_run, tmp_path):
    export_dataset(det_run, tmp_path / "yolo", "yolo")
    rows = (tmp_path / "yolo" / "labels" / "train" / "siteA__photo.txt").read_text().splitlines()
    # car (10.25, 12.5, 90.75, 60.125) and person (100.5, 20, 150, 110) in a 160x120 image.
    assert rows == ["0 0.315625 0.302604 0.503125 0.396875", "1 0.782813 0.541667 0.309375 0.750000"]


def test_masks_none_exports_boxes_only(seg_run, tmp_path):
    export_dataset(seg_run, tmp_path / "yolo", "yolo", ExportOptions(masks="none"))
    rows = (tmp_path / "yolo" / "labels" / "train" / "siteA__photo.txt").read_text().splitlines()
    assert all(len(r.split()) == 5 for r in rows)
    export_dataset(seg_run, tmp_path / "coco", "coco", ExportOptions(masks="none"))
    coco = json.loads((tmp_path / "coco" / "coco_export.json").read_text())
    assert all(a["segmentation"] == [] for a in coco["annotations"])


def test_re_export_into_the_same_folder_removes_the_previous_exports_files(det_run, tmp_path):
    out = tmp_path / "yolo"
    export_dataset(det_run, out, "yolo", ExportOptions.build(split="train=0.6,val=0.4", seed=0))
    (out / "notes.txt").write_text("mine")  # not ours: never touched
    summary = export_dataset(det_run, out, "yolo", ExportOptions.build(split="train=0.6,val=0.4", seed=5))
    assert summary.stale_removed > 0
    images = [p.name for p in (out / "images").rglob("*") if p.is_file()]
    labels = [p.name for p in (out / "labels").rglob("*") if p.is_file()]
    assert len(images) == len(set(images)) == 5, "no image sits in two splits"
    assert len(labels) == 5
    assert (out / "notes.txt").read_text() == "mine"
    export_dataset(det_run, out, "yolo", ExportOptions.build(split="train=0.6,val=0.2,test=0.2", seed=5))
    export_dataset(det_run, out, "yolo")  # unsplit again: the val and test folders go away
    assert sorted(p.name for p in (out / "images").iterdir()) == ["train"]
