"""Independent readers load what we write with identical counts and boxes: pycocotools, and
supervision's COCO, YOLO and Pascal VOC loaders (a test-only dependency)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from autolabel.export import ExportOptions, export_dataset
from autolabel.testing.synthetic import CLASSES, stored_labels

sv = pytest.importorskip("supervision")

SIZES = [
    (None, False),  # original size
    ("96", True),  # letterboxed
]


def expected_labels(out: Path, store) -> dict[str, tuple[list[str], np.ndarray]]:
    """Exported image (resolved path) -> (class names, xyxy in exported pixels), from the manifest."""
    original = stored_labels(store)
    expected = {}
    for entry in json.loads((out / "manifest.json").read_text())["images"]:
        (sx, sy), (ox, oy) = entry["scale"], entry["offset"]
        (w, h) = entry["size"]
        dets = original[entry["source"]]
        boxes = np.asarray(dets.xyxy, dtype=np.float64).reshape(-1, 4) * [sx, sy, sx, sy] + [ox, oy, ox, oy]
        boxes = np.clip(boxes, 0, [w, h, w, h])
        expected[str((out / entry["image"]).resolve())] = ([store.ontology.names[c] for c in dets.class_ids], boxes)
    return expected


def _by_class_then_box(names, boxes):
    order = sorted(range(len(names)), key=lambda i: (names[i], *np.round(boxes[i], 3)))
    return [names[i] for i in order], np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[order]


def check_dataset(ds, expected, tol: float, round_boxes: bool = False):
    assert len(ds.annotations) == len(expected)
    for path, dets in ds.annotations.items():
        names, boxes = expected[str(Path(path).resolve())]
        got_names = [ds.classes[i] for i in dets.class_id]
        if round_boxes:
            boxes = np.round(boxes)
        want = _by_class_then_box(names, boxes)
        got = _by_class_then_box(got_names, np.asarray(dets.xyxy, dtype=np.float64))
        assert got[0] == want[0], path
        np.testing.assert_allclose(got[1], want[1], atol=tol, err_msg=path)


@pytest.mark.parametrize("size, letterbox", SIZES)
@pytest.mark.parametrize("run", ["det_run", "seg_run"])
def test_coco_loads_in_pycocotools_and_supervision(request, run, size, letterbox, tmp_path):
    from pycocotools.coco import COCO

    store = request.getfixturevalue(run)
    out = tmp_path / "coco"
    summary = export_dataset(store, out, "coco", ExportOptions.build(image_size=size, letterbox=letterbox))
    expected = expected_labels(out, store)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out / "coco_export.json"))
    assert len(coco.getImgIds()) == summary.images == len(expected)
    assert len(coco.getAnnIds()) == summary.annotations == sum(len(n) for n, _ in expected.values())
    for image in coco.dataset["images"]:
        names, boxes = expected[str((out / "images" / image["file_name"]).resolve())]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        got = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                        for a in anns]).reshape(-1, 4)
        assert [coco.cats[a["category_id"]]["name"] for a in anns] == names
        np.testing.assert_allclose(got, boxes, atol=1e-5)
    ds = sv.DetectionDataset.from_coco(images_directory_path=str(out / "images"),
                                       annotations_path=str(out / "coco_export.json"))
    assert ds.classes == CLASSES
    check_dataset(ds, expected, tol=1e-3)


@pytest.mark.parametrize("size, letterbox", SIZES)
@pytest.mark.parametrize("run", ["det_run", "seg_run"])
def test_yolo_loads_in_supervision(request, run, size, letterbox, tmp_path):
    store = request.getfixturevalue(run)
    out = tmp_path / "yolo"
    export_dataset(store, out, "yolo", ExportOptions.build(image_size=size, letterbox=letterbox,
                                                           split="train=0.6,val=0.4"))
    expected = expected_labels(out, store)
    loaded = 0
    for split in ("train", "val"):
        ds = sv.DetectionDataset.from_yolo(images_directory_path=str(out / "images" / split),
                                           annotations_directory_path=str(out / "labels" / split),
                                           data_yaml_path=str(out / "data.yaml"))
        assert ds.classes == CLASSES
        subset = {p: v for p, v in expected.items() if f"/images/{split}/" in p}
        if run == "seg_run":  # polygon rows: supervision's box is the polygon's extent (= the mask's box here)
            check_dataset(ds, subset, tol=1.0)
        else:
            check_dataset(ds, subset, tol=1e-3)
        loaded += len(ds.annotations)
    assert loaded == len(expected)


@pytest.mark.parametrize("size, letterbox", SIZES)
@pytest.mark.parametrize("run", ["det_run", "seg_run"])
def test_voc_loads_in_supervision(request, run, size, letterbox, tmp_path):
    store = request.getfixturevalue(run)
    out = tmp_path / "voc"
    export_dataset(store, out, "voc", ExportOptions.build(image_size=size, letterbox=letterbox))
    expected = expected_labels(out, store)
    ds = sv.DetectionDataset.from_pascal_voc(images_directory_path=str(out / "JPEGImages"),
                                             annotations_directory_path=str(out / "Annotations"))
    assert set(ds.classes) <= set(CLASSES)
    # VOC boxes are whole pixels (1-based, inclusive); supervision maps them back to pixel edges.
    check_dataset(ds, expected, tol=1e-6, round_boxes=True)
