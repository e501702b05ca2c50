"""COCO export: loads in pycocotools, self-evaluation AP = 1, masks keep every part, forms agree."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from autolabel.detections import Detections
from autolabel.errors import ConfigError
from autolabel.export import ExportOptions, export_dataset
from autolabel.export.coco import COCO_FILE
from autolabel.export.package import ImageSize, export_names
from autolabel.geometry import mask_iou, mask_to_rle
from autolabel.ontology import Ontology
from autolabel.store import ImageResult, open_store

ONT = Ontology.from_prompts(["car", "person"])



def _export(store, out, **options):
    return export_dataset(store, out, "coco", ExportOptions.build(**options))

def _two_blobs_with_hole(h, w):
    """A mask of two separate parts, the larger one a ring (a hole COCO polygons must not fill)."""
    yy, xx = np.mgrid[:h, :w]
    ring = ((yy - h * 0.4) ** 2 + (xx - w * 0.3) ** 2 < (0.25 * h) ** 2) & ((yy - h * 0.4) ** 2 + (xx - w * 0.3) ** 2 > (0.1 * h) ** 2)
    blob = (np.abs(yy - h * 0.7) < 0.1 * h) & (np.abs(xx - w * 0.8) < 0.1 * w)
    return ring | blob


@pytest.fixture()
def run(tmp_path):
    """A run with two folders holding the same file name, masks, a rejected label and an empty image."""
    images = {}
    for folder, size in [("siteA", (160, 120)), ("siteB", (90, 140)), ("siteC", (64, 64))]:
        (tmp_path / "src" / folder).mkdir(parents=True)
        path = tmp_path / "src" / folder / "photo.jpg"
        Image.new("RGB", size, (40, 90, 160)).save(path)
        images[folder] = (path, size)
    store = open_store(tmp_path / "run")
    store.bind_config({"model": "m", "mode": "segment", "ontology": ONT.to_dict(), "detect": {}})
    results = []
    masks = {}
    for folder in ("siteA", "siteB"):
        path, (w, h) = images[folder]
        mask = _two_blobs_with_hole(h, w)
        ys, xs = np.nonzero(mask)
        box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        second = np.zeros((h, w), bool)
        second[5:25, 5:45] = True
        dets = Detections([box, [5, 5, 45, 25]], [0.9, 0.6], [0, 1], [0, 1], [mask_to_rle(mask), mask_to_rle(second)])
        masks[folder] = [mask, second]
        results.append(ImageResult(str(path), "sha", w, h, dets))
    path, (w, h) = images["siteC"]
    results.append(ImageResult(str(path), "sha", w, h, Detections.empty()))
    store.write_results(results)
    # A rejected label must not be exported.
    first = next(store.images())
    rejected = store.add_detection(first.id, "car", (1, 1, 10, 10))
    store.set_review(rejected, "rejected")
    yield store, masks
    store.close()


def _coco(path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _self_eval(coco, iou_type):
    from pycocotools.cocoeval import COCOeval

    anns = [dict(a, score=1.0) for a in coco.dataset["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco.loadRes(anns)
        ev = COCOeval(coco, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0]


def test_export_loads_in_pycocotools_and_self_evaluates_to_ap_1(run, tmp_path):
    store, _ = run
    summary = _export(store, tmp_path / "out")
    coco = _coco(tmp_path / "out" / COCO_FILE)
    assert summary.images == 3 and summary.annotations == 4
    assert [c["id"] for c in coco.dataset["categories"]] == [1, 2]
    assert [c["name"] for c in coco.dataset["categories"]] == ONT.names
    ann_ids = [a["id"] for a in coco.dataset["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids)
    assert all(a["iscrowd"] == 0 for a in coco.dataset["annotations"])
    # File names stay unique although both source folders hold photo.jpg.
    names = sorted(im["file_name"] for im in coco.dataset["images"])
    assert names == ["siteA__photo.jpg", "siteB__photo.jpg", "siteC__photo.jpg"]
    assert all((tmp_path / "out" / "images" / n).is_file() for n in names)
    assert _self_eval(coco, "bbox") == pytest.approx(1.0)
    assert _self_eval(coco, "segm") == pytest.approx(1.0)


def test_polygons_keep_every_part_and_agree_with_rle(run, tmp_path):
    store, masks = run
    _export(store, tmp_path / "poly")
    _export(store, tmp_path / "rle", masks="rle")
    poly, rle = _coco(tmp_path / "poly" / COCO_FILE), _coco(tmp_path / "rle" / COCO_FILE)
    for image in poly.dataset["images"]:
        folder = image["file_name"].split("__")[0]
        poly_anns = poly.loadAnns(poly.getAnnIds(imgIds=image["id"]))
        rle_anns = rle.loadAnns(rle.getAnnIds(imgIds=image["id"]))
        for index, (pa, ra) in enumerate(zip(poly_anns, rle_anns)):
            original = masks[folder][index]
            from_poly, from_rle = poly.annToMask(pa).astype(bool), rle.annToMask(ra).astype(bool)
            assert mask_iou(from_poly, from_rle) > 0.95
            assert mask_iou(from_poly, original) > 0.95
            assert pa["area"] == int(original.sum())
        if folder in masks:  # siteC is a negative (no labels), the others a ring + a blob each
            assert len(poly_anns) == 2
            assert len(poly_anns[0]["segmentation"]) == 2, "both parts of the mask are exported"
        else:
            assert poly_anns == []


def test_resized_export_scales_boxes_and_masks(run, tmp_path):
    store, masks = run
    _export(store, tmp_path / "small", image_size="80")
    coco = _coco(tmp_path / "small" / COCO_FILE)
    a_image = next(im for im in coco.dataset["images"] if im["file_name"].startswith("siteA"))
    assert (a_image["width"], a_image["height"]) == (80, 60)
    with Image.open(tmp_path / "small" / "images" / a_image["file_name"]) as im:
        assert im.size == (80, 60)
    ann = coco.loadAnns(coco.getAnnIds(imgIds=a_image["id"]))[1]
    np.testing.assert_allclose(ann["bbox"], [2.5, 2.5, 20, 10], atol=0.01)
    import cv2

    expected = cv2.resize(masks["siteA"][0].astype(np.uint8), (80, 60), interpolation=cv2.INTER_NEAREST).astype(bool)
    first = coco.loadAnns(coco.getAnnIds(imgIds=a_image["id"]))[0]
    assert mask_iou(coco.annToMask(first).astype(bool), expected) > 0.95


def test_export_is_deterministic_and_zip_has_the_same_layout(run, tmp_path):
    store, _ = run
    _export(store, tmp_path / "one", image_size="100")
    _export(store, tmp_path / "two", image_size="100")
    assert (tmp_path / "one" / COCO_FILE).read_bytes() == (tmp_path / "two" / COCO_FILE).read_bytes()
    _export(store, tmp_path / "z1", image_size="100", zip_name="dataset.zip")
    _export(store, tmp_path / "z2", image_size="100", zip_name="dataset.zip")
    assert (tmp_path / "z1" / "dataset.zip").read_bytes() == (tmp_path / "z2" / "dataset.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "z1" / "dataset.zip") as zf:
        members = sorted(zf.namelist())
        assert json.loads(zf.read(COCO_FILE)) == json.loads((tmp_path / "one" / COCO_FILE).read_text())
    loose = sorted(str(p.relative_to(tmp_path / "one")) for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert members == loose
    assert not list((tmp_path / "z1").glob(".tmp-*"))


@pytest.mark.parametrize(
    "text, size, expected",
    [
        ("640", (1280, 960), (640, 480)),  # longest side, landscape
        ("640", (960, 1280), (480, 640)),  # longest side, portrait
        ("300x200", (1000, 1000), (300, 200)),  # exact stretch
    ],
)
def test_image_size_spec(text, size, expected):
    assert ImageSize.parse(text).target(*size) == expected


@pytest.mark.parametrize("text", ["0", "abc", "10x", "-5"])
def test_bad_image_size(text):
    with pytest.raises(ConfigError):
        ImageSize.parse(text)


def test_export_names_do_not_depend_on_where_the_dataset_sits():
    """Clashing stems get a hash of the path relative to the inputs' folder, so names (and the
    splits keyed on them) are the same wherever the dataset is."""
    files = ["a/x.jpg", "a/x.png", "b/y.jpg"]
    here, there = export_names([f"/data/{f}" for f in files]), export_names([f"/mnt/other/place/{f}" for f in files])
    assert [here[f"/data/{f}"] for f in files] == [there[f"/mnt/other/place/{f}"] for f in files]
    assert len(set(here.values())) == 3


def test_export_names_never_collide():
    names = export_names(["/d/a/x.jpg", "/d/b/x.jpg", "/d/a/y.jpg", "/d/a/y.jpeg", "/d/a/z.png", "/d/a/z.tif"])
    assert len(set(names.values())) == 6
    assert names["/d/a/x.jpg"] == "a__x.jpg"
    assert names == export_names(list(reversed(list(names))))  # independent of input order


def test_segmentation_run_labels_without_a_mask_get_the_box_as_mask(tmp_path):
    """A human box, or an empty SAM2 mask, in a segmentation run: the annotation still has a mask."""
    path = tmp_path / "a.png"
    Image.new("RGB", (50, 40)).save(path)
    with open_store(tmp_path / "run") as store:
        store.bind_config({"model": "m", "mode": "segment", "ontology": ONT.to_dict(), "detect": {}})
        empty = mask_to_rle(np.zeros((40, 50), bool))
        store.write_results([ImageResult(str(path), "sha", 50, 40, Detections([[10, 10, 20, 30]], [0.9], [0], [0], [empty]))])
        store.add_detection(next(store.images()).id, "person", (30, 5, 45, 15))
        _export(store, tmp_path / "out")
    anns = json.loads((tmp_path / "out" / COCO_FILE).read_text())["annotations"]
    assert sorted(a["area"] for a in anns) == [150, 200]
    assert all(a["segmentation"] and len(a["segmentation"][0]) >= 8 for a in anns)
