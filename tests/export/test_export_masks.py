"""The box/mask rule of segmentation runs: the same box in COCO, YOLO, VOC and Label Studio."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from autolabel.export import FORMATS, export_dataset
from autolabel.export.masks import fit_mask_to_box, grown_box
from autolabel.geometry import mask_to_rle
from autolabel.testing.synthetic import Label, SyntheticImage, make_run

W, H = 120, 80
CLIPPED = (20.0, 20.0, 62.0, 60.0)  # the box (20, 20, 60, 60) grown by 2 px cuts the leak at x = 62
FAR_BOX = (90.0, 50.0, 110.0, 70.0)  # a box whose mask lies wholly outside it


def _leaky_mask() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[20:60, 20:60] = True
    mask[30:40, 60:100] = True  # leaks 40 px to the right of the box
    return mask


def _far_mask() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[2:6, 2:6] = True
    return mask


@pytest.mark.parametrize("box, margin", [
    ((20, 20, 60, 60), (18, 18, 62, 62)),  # small box: at least 2 px
    ((0, 10, 200, 110), (0, 8, 204, 112)),  # 2% of each side, cut at the image's top/left
])
def test_grown_box(box, margin):
    assert grown_box(box, 1000, 1000) == pytest.approx(margin)


def test_fit_mask_to_box_clips_and_recomputes_the_box():
    box, rle = fit_mask_to_box((20, 20, 60, 60), mask_to_rle(_leaky_mask()))
    assert tuple(box) == CLIPPED and rle["size"] == [H, W]
    box, rle = fit_mask_to_box(FAR_BOX, mask_to_rle(_far_mask()))
    assert tuple(box) == FAR_BOX and rle is None


def _exported_boxes(fmt: str, out) -> list[tuple[float, ...]]:
    """The exported (x0, y0, x1, y1) of each label, from the format's files (polygon extents where the
    format has no box)."""
    if fmt == "coco":
        anns = json.loads((out / "coco_export.json").read_text())["annotations"]
        return [(x, y, x + w, y + h) for x, y, w, h in (a["bbox"] for a in anns)]
    if fmt == "yolo":
        rows = [list(map(float, line.split()[1:])) for line in (out / "labels/train/a.txt").read_text().splitlines()]
        return [(min(r[0::2]) * W, min(r[1::2]) * H, max(r[0::2]) * W, max(r[1::2]) * H) for r in rows]
    if fmt == "voc":
        boxes = ET.parse(out / "Annotations/a.xml").getroot().iter("bndbox")
        return [(int(b.findtext("xmin")) - 1, int(b.findtext("ymin")) - 1, int(b.findtext("xmax")), int(b.findtext("ymax")))
                for b in boxes]
    results = json.loads((out / "tasks.json").read_text())[0]["predictions"][0]["result"]
    points = [np.array(r["value"]["points"]) / 100 * [W, H] for r in results]
    return [(p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()) for p in points]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_leaking_mask_is_clipped_to_its_box_in_every_format(tmp_path, fmt):
    leaky = Label("car", (20.0, 20.0, 60.0, 60.0), 0.9, _leaky_mask())
    far = Label("person", FAR_BOX, 0.8, _far_mask())
    store = make_run(tmp_path / "run", tmp_path / "src", ["car", "person"], [SyntheticImage("a.png", (W, H), [leaky, far])])
    with store:
        export_dataset(store, tmp_path / fmt, fmt)
    # The leak is gone from the mask and the box, the same in every format; the far label keeps its box.
    np.testing.assert_allclose(_exported_boxes(fmt, tmp_path / fmt), [CLIPPED, FAR_BOX], atol=0.5)
