"""Export -> import gives back the same annotations (COCO and YOLO), at every resize mode.

Expected coordinates are computed here from the manifest's recorded scale and offset (an exported
coordinate is ``original * scale + offset``), boxes must agree within 1e-6 of the image size, and
masks with IoU > 0.99 against the original mask resized nearest-neighbour and padded.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from autolabel.export import ExportOptions, export_dataset
from autolabel.geometry import mask_iou, rle_to_mask, rle_to_xyxy
from autolabel.importers import import_dataset
from autolabel.store import open_store

from autolabel.testing.synthetic import CLASSES, assert_boxes_close

INDEX = {"coco": "coco_export.json", "yolo": "data.yaml"}


def _exported(tmp_path, store, fmt, size, letterbox):
    out = tmp_path / f"{fmt}-out"
    export_dataset(store, out, fmt, ExportOptions.build(image_size=size, letterbox=letterbox))
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {str((out / e["image"]).resolve()): e for e in manifest["images"]}
    summary = import_dataset(out / INDEX[fmt], tmp_path / f"{fmt}-gt")
    return entries, summary


def _labels(store) -> dict:
    """Source path -> its labels (not rejected)."""
    return {record.path: store.labels(record.id) for record in store.images()}


def _expected_mask(mask: np.ndarray, entry: dict) -> np.ndarray:
    """The original mask in the exported frame: nearest resize to the content size, then padding."""
    (w, h), (sx, sy), (ox, oy) = entry["size"], entry["scale"], entry["offset"]
    src_w, src_h = entry["source_size"]
    content = (round(src_w * sx), round(src_h * sy))
    resized = cv2.resize(mask.astype(np.uint8), content, interpolation=cv2.INTER_NEAREST)
    out = np.zeros((h, w), np.uint8)
    out[oy : oy + content[1], ox : ox + content[0]] = resized
    return out.astype(bool)


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
@pytest.mark.parametrize(
    "size, letterbox",
    [
        (None, False),  # original size
        ("80", False),  # longest side
        ("100x50", False),  # exact stretch (different x and y scales)
        ("96", True),  # letterbox (scale + offset)
    ],
)
def test_detection_round_trip(det_run, tmp_path, fmt, size, letterbox):
    entries, summary = _exported(tmp_path, det_run, fmt, size, letterbox)
    original = _labels(det_run)
    assert summary.images == 5 and summary.failed == 0
    with open_store(tmp_path / f"{fmt}-gt", create=False) as gt:
        assert gt.ontology.names == CLASSES
        records = list(gt.images())
        assert len(records) == 5
        for record in records:
            entry = entries[record.path]
            assert [record.width, record.height] == entry["size"]
            (sx, sy), (ox, oy) = entry["scale"], entry["offset"]
            source = original[entry["source"]]
            imported = gt.labels(record.id)
            assert imported.class_ids.tolist() == source.class_ids.tolist()
            assert set(imported.sources) <= {"human"} and not imported.has_score.any()
            expected = source.xyxy * [sx, sy, sx, sy] + [ox, oy, ox, oy]
            assert_boxes_close(imported.xyxy, expected, entry["size"])


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
@pytest.mark.parametrize(
    "size, letterbox",
    [
        (None, False),  # original size: masks come back exactly
        ("96", True),  # letterboxed: masks resized and padded
    ],
)
def test_segmentation_round_trip(seg_run, tmp_path, fmt, size, letterbox):
    entries, summary = _exported(tmp_path, seg_run, fmt, size, letterbox)
    original = _labels(seg_run)
    with open_store(tmp_path / f"{fmt}-gt", create=False) as gt:
        assert gt.config["masks"] is True
        records = list(gt.images())
        assert len(records) == 3
        for record in records:
            entry = entries[record.path]
            (sx, sy), (ox, oy) = entry["scale"], entry["offset"]
            source, imported = original[entry["source"]], gt.labels(record.id)
            assert imported.class_ids.tolist() == source.class_ids.tolist()
            for i in range(len(source)):
                expected = _expected_mask(rle_to_mask(source.masks[i]), entry)
                got = rle_to_mask(imported.masks[i])
                assert mask_iou(got, expected) > 0.99
                if fmt == "coco":  # COCO keeps the box (the stored masks here lie inside their boxes)
                    box = source.xyxy[i] * [sx, sy, sx, sy] + [ox, oy, ox, oy]
                else:  # a YOLO polygon row has no box: it is the polygon's extent
                    box = rle_to_xyxy(imported.masks[i])
                assert_boxes_close(imported.xyxy[i], box, entry["size"])


def test_multi_part_mask_survives_yolo_as_one_polygon(seg_run, tmp_path):
    """The ring-with-a-hole plus a separate rectangle is one YOLO row, and rasterizes back to both."""
    out = tmp_path / "yolo"
    export_dataset(seg_run, out, "yolo")
    rows = (out / "labels" / "train" / "siteA__photo.txt").read_text().splitlines()
    assert len(rows) == 2  # one row per object
    import_dataset(out / "data.yaml", tmp_path / "gt")
    with open_store(tmp_path / "gt", create=False) as gt:
        record = next(r for r in gt.images() if r.path.endswith("siteA__photo.jpg"))
        labels = gt.labels(record.id)
        mask = rle_to_mask(labels.masks[labels.class_ids.tolist().index(CLASSES.index("car"))])
    assert mask[85:105, 115:145].all(), "the second part is filled"
    assert not mask[45:55, 45:55].any(), "the hole stays empty"


def test_split_coco_export_imports_split_by_split(det_run, tmp_path):
    """``annotations/instances_<split>.json`` finds its images in ``images/<split>/`` by itself."""
    out = tmp_path / "coco"
    export_dataset(det_run, out, "coco", ExportOptions.build(split="train=0.6,val=0.4"))
    imported = [import_dataset(out / "annotations" / f"instances_{s}.json", tmp_path / f"gt-{s}")
                for s in ("train", "val")]
    assert [s.images for s in imported] == [3, 2] and sum(s.labels for s in imported) == 6
    assert all(s.failed == 0 for s in imported)
