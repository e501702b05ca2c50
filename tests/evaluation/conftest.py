"""Synthetic ground truth with known answers: images on disk, a COCO file, and runs we choose."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from autolabel.testing.synthetic import Label, SyntheticImage, make_run

SIZE = (200, 200)
# Ground truth per image: 40x40 boxes far apart, three classes.
GT = {
    "img0.jpg": [("car", (10, 10, 50, 50)), ("person", (100, 10, 140, 50)), ("dog", (10, 100, 50, 140))],
    "img1.jpg": [("car", (60, 60, 100, 100)), ("car", (120, 120, 160, 160))],
    "img2.jpg": [("person", (20, 120, 60, 160)), ("dog", (140, 20, 180, 60))],
    "img3.jpg": [("car", (100, 100, 140, 140)), ("person", (10, 10, 50, 50))],
}
# COCO category ids in another order than the run's classes: classes are matched by name.
GT_CATEGORIES = {"dog": 5, "car": 9, "person": 2, "bike": 1}


def write_coco(path: Path, image_dir: Path, gt: dict = GT) -> Path:
    """A COCO file for the ground truth (boxes only; ``bike`` is a category without instances)."""
    images, annotations = [], []
    for image_id, (name, labels) in enumerate(sorted(gt.items()), start=1):
        images.append({"id": image_id, "file_name": name, "width": SIZE[0], "height": SIZE[1]})
        for class_name, (x0, y0, x1, y1) in labels:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": GT_CATEGORIES[class_name], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    document = {"images": images, "annotations": annotations,
                "categories": [{"id": i, "name": n} for n, i in GT_CATEGORIES.items()]}
    path.write_text(json.dumps(document))
    return path


def predictions(shift: float = 0.0, drop: set[str] = frozenset(), score=lambda k: 0.9 - 0.05 * k) -> list[SyntheticImage]:
    """The ground-truth boxes as predictions, shifted right by ``shift`` pixels, without ``drop`` classes."""
    out = []
    for name, labels in sorted(GT.items()):
        preds = [Label(c, (x0 + shift, y0, x1 + shift, y1), score(k))
                 for k, (c, (x0, y0, x1, y1)) in enumerate(labels) if c not in drop]
        out.append(SyntheticImage(name, SIZE, preds))
    return out


@pytest.fixture()
def make_eval_run(tmp_path):
    """Build a run over the ground-truth images (the same files the COCO file names)."""
    stores = []

    def build(name: str, images: list[SyntheticImage], classes=("car", "person", "dog")):
        store = make_run(tmp_path / name, tmp_path / "images", list(classes), images)
        stores.append(store)
        return store

    yield build
    for store in stores:
        store.close()


@pytest.fixture()
def gt_coco(tmp_path, make_eval_run):
    """The ground truth as a COCO file next to the images (builds the images through a first run)."""
    make_eval_run("identical", predictions())
    return write_coco(tmp_path / "images" / "gt.json", tmp_path / "images")


@pytest.fixture()
def gt_data():
    """The helpers above, for tests (conftest modules are not imported by name)."""
    return SimpleNamespace(GT=GT, SIZE=SIZE, predictions=predictions, write_coco=write_coco)
