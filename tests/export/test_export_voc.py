"""Pascal VOC: the devkit's layout and XML structure, parsed with xml.etree."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from autolabel.export import ExportOptions, export_dataset
from autolabel.export.voc import voc_box
from autolabel.testing.synthetic import CLASSES, stored_labels


def _objects(root):
    out = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        out.append((obj.findtext("name"), [int(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")]))
    return out


def test_voc_structure(det_run, tmp_path):
    out = tmp_path / "voc"
    export_dataset(det_run, out, "voc", ExportOptions.build(split="train=0.6,val=0.4", seed=1))
    manifest = json.loads((out / "manifest.json").read_text())["images"]
    original = stored_labels(det_run)
    assert (out / "labels.txt").read_text().split() == CLASSES
    ids = {s: (out / "ImageSets" / "Main" / f"{s}.txt").read_text().split() for s in ("train", "val", "trainval")}
    assert sorted(ids["train"] + ids["val"]) == sorted(ids["trainval"]) and len(ids["trainval"]) == 5
    for entry in manifest:
        image = out / entry["image"]
        assert image.parent.name == "JPEGImages" and image.suffix == ".jpg"
        with Image.open(image) as im:
            assert im.format == "JPEG" and list(im.size) == entry["size"]  # PNG sources re-encoded as JPEG
        xml_path = out / entry["labels"][0]
        assert xml_path.parent.name == "Annotations" and xml_path.stem == image.stem
        assert image.stem in ids[entry["split"]]
        root = ET.parse(xml_path).getroot()
        assert root.tag == "annotation"
        assert root.findtext("folder") == "JPEGImages" and root.findtext("filename") == image.name
        assert [int(root.findtext(f"size/{t}")) for t in ("width", "height", "depth")] == [*entry["size"], 3]
        assert root.findtext("segmented") == "0"
        dets = original[entry["source"]]
        w, h = entry["size"]
        names = [det_run.ontology.names[c] for c in dets.class_ids]
        assert _objects(root) == [(names[i], list(voc_box(dets.xyxy[i], w, h))) for i in range(len(dets))]
        for obj in root.findall("object"):
            assert obj.findtext("difficult") == "0" and obj.findtext("truncated") in ("0", "1")
            xmin, ymin, xmax, ymax = (int(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
            assert 1 <= xmin <= xmax <= w and 1 <= ymin <= ymax <= h


@pytest.mark.parametrize(
    "xyxy, expected",
    [
        ((0, 0, 10, 10), (1, 1, 10, 10)),  # pixels 0..9 -> 1-based inclusive 1..10
        ((10.4, 20.6, 30.4, 40.6), (11, 22, 30, 41)),  # sub-pixel edges round to the nearest pixel edge
        ((-5, -5, 200, 200), (1, 1, 64, 48)),  # clipped to the image
        ((5.2, 5.2, 5.3, 5.3), (6, 6, 6, 6)),  # a sub-pixel box keeps at least one pixel
    ],
)
def test_voc_box_convention(xyxy, expected):
    assert voc_box(xyxy, 64, 48) == expected


def test_segmentation_run_writes_polygons_one_based(seg_run, tmp_path):
    out = tmp_path / "voc"
    export_dataset(seg_run, out, "voc")
    root = ET.parse(out / "Annotations" / "siteA__photo.xml").getroot()
    car = next(o for o in root.findall("object") if o.findtext("name") == "car")
    polygons = car.findall("polygon")
    assert len(polygons) == 2  # the ring (hole bridged in) and the separate rectangle
    coords = np.array([float(e.text) for e in polygons[1]]).reshape(-1, 2)
    np.testing.assert_allclose(coords.min(axis=0), [111, 81])  # rectangle (110, 80, 150, 110), + 1
    np.testing.assert_allclose(coords.max(axis=0), [151, 111])
