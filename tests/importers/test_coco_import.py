"""``import`` of COCO files: every annotation form, crowd and broken entries, EXIF frames, safety."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autolabel.errors import ConfigError
from autolabel.geometry import mask_iou, mask_to_rle, rle_to_mask, rle_to_xyxy
from autolabel.importers import import_dataset, load_dataset
from autolabel.importers.dataset import orient_box, orient_rle
from autolabel.store import open_store


def _image(path, size, orientation=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, (90, 120, 200))
    if orientation is None:
        im.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(path, exif=exif)
    return path


def _write(path, document):
    path.write_text(json.dumps(document))
    return path


@pytest.fixture()
def coco_dir(tmp_path):
    """A COCO file with non-contiguous category ids and every annotation form."""
    root = tmp_path / "data"
    _image(root / "images" / "a.jpg", (100, 80))
    _image(root / "images" / "sub" / "b.png", (60, 40))
    mask = np.zeros((80, 100), bool)
    mask[10:30, 20:60] = True
    uncompressed_mask = np.zeros((40, 60), bool)
    uncompressed_mask[5:15, 5:25] = True
    flat = uncompressed_mask.T.ravel().astype(int)  # COCO runs are column-major, starting with zeros
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]))
    runs = ([0] if flat[0] else []) + np.diff(bounds).tolist()
    document = {
        "images": [{"id": 10, "file_name": "a.jpg", "width": 100, "height": 80},
                   {"id": 11, "file_name": "sub/b.png", "width": 60, "height": 40}],
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [1.5, 2.5, 10, 20], "iscrowd": 0},  # box only
            {"id": 2, "image_id": 10, "category_id": 7, "bbox": [20, 10, 40, 20], "iscrowd": 0,
             "segmentation": [[20, 10, 60, 10, 60, 30, 20, 30]]},  # polygon
            {"id": 3, "image_id": 10, "category_id": 7, "bbox": [20, 10, 40, 20], "iscrowd": 0,
             "segmentation": mask_to_rle(mask)},  # compressed RLE
            {"id": 4, "image_id": 11, "category_id": 3, "bbox": [0, 0, 0, 0], "iscrowd": 0,
             "segmentation": {"size": [40, 60], "counts": runs}},  # uncompressed RLE, no box: from the mask
            {"id": 5, "image_id": 11, "category_id": 3, "bbox": [0, 0, 60, 40], "iscrowd": 1,
             "segmentation": mask_to_rle(np.ones((40, 60), bool))},  # crowd
            {"id": 6, "image_id": 11, "category_id": 7, "bbox": [5, 5, 0, 3], "iscrowd": 0},  # degenerate
        ],
    }
    return _write(root / "instances.json", document), mask, uncompressed_mask


def test_import_reads_every_annotation_form(coco_dir, tmp_path):
    json_path, mask, small_mask = coco_dir
    summary = import_dataset(json_path, tmp_path / "run")
    assert (summary.images, summary.failed, summary.labels) == (2, 0, 4)
    assert (summary.skipped_crowd, summary.skipped_invalid) == (1, 1)
    with open_store(tmp_path / "run", create=False) as store:
        assert store.ontology.names == ["dog", "cat"]  # category id order: 3, 7
        assert store.config["mode"] == "import" and store.config["format"] == "coco"
        images = {r.path.rsplit("/", 1)[1]: r for r in store.images()}
        assert set(images) == {"a.jpg", "b.png"} and all(r.reviewed for r in images.values())
        assert (images["a.jpg"].width, images["a.jpg"].height) == (100, 80)
        a = store.detections(images["a.jpg"].id)
        assert all(d.source == "human" and d.review == "accepted" and d.score is None for d in a)
        box_only = next(d for d in a if d.class_name == "dog")
        assert box_only.xyxy == (1.5, 2.5, 11.5, 22.5) and box_only.rle is None
        polygon, rle = [d for d in a if d.class_name == "cat"]
        assert mask_iou(rle_to_mask(polygon.rle), mask) == 1.0
        assert mask_iou(rle_to_mask(rle.rle), mask) == 1.0
        [b] = store.detections(images["b.png"].id)
        assert mask_iou(rle_to_mask(b.rle), small_mask) == 1.0
        assert b.xyxy == (5.0, 5.0, 25.0, 15.0)  # the box of the mask
    # Importing again replaces the labels instead of adding them.
    import_dataset(json_path, tmp_path / "run")
    with open_store(tmp_path / "run", create=False) as store:
        assert store.counts()["per_class"] == {"dog": 2, "cat": 2}


def test_crowd_regions_are_kept_for_evaluation(coco_dir):
    json_path, _, _ = coco_dir
    dataset = load_dataset(json_path)
    crowd = [lab for im in dataset.images for lab in im.labels if lab.iscrowd]
    assert len(crowd) == 1 and dataset.crowd == 1


def test_images_are_found_in_an_images_folder_or_given_one(tmp_path):
    _image(tmp_path / "pics" / "x.jpg", (30, 20))
    doc = {"images": [{"id": 1, "file_name": "x.jpg", "width": 30, "height": 20}],
           "categories": [{"id": 1, "name": "a"}], "annotations": []}
    json_path = _write(tmp_path / "ann.json", doc)
    missing = load_dataset(json_path)
    assert missing.images[0].error is not None  # not next to the JSON, not in images/
    found = load_dataset(json_path, images_dir=tmp_path / "pics")
    assert found.images[0].error is None and found.images[0].path == str((tmp_path / "pics" / "x.jpg").resolve())


def test_missing_and_mismatched_images_fail_alone(tmp_path):
    _image(tmp_path / "images" / "ok.jpg", (30, 20))
    _image(tmp_path / "images" / "other.jpg", (50, 50))
    doc = {"images": [{"id": 1, "file_name": "ok.jpg", "width": 30, "height": 20},
                      {"id": 2, "file_name": "gone.jpg", "width": 30, "height": 20},
                      {"id": 3, "file_name": "other.jpg", "width": 30, "height": 20}],
           "categories": [{"id": 1, "name": "a"}],
           "annotations": [{"id": 1, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5]}]}
    summary = import_dataset(_write(tmp_path / "ann.json", doc), tmp_path / "run")
    assert (summary.images, summary.failed) == (1, 2)
    errors = dict(summary.failures)
    assert any("gone.jpg" in p for p in errors)
    assert any("COCO says 30x20 but the image is 50x50" in e for e in errors.values())
    with open_store(tmp_path / "run", create=False) as store:
        assert store.counts()["failed"] == 2


@pytest.mark.parametrize(
    "file_name",
    [
        "../secret.jpg",  # climbs out of the image folder
        "/etc/passwd",  # absolute
        "a/../../b.jpg",  # climbs out after normalising
    ],
)
def test_names_outside_the_image_folder_are_refused(tmp_path, file_name):
    doc = {"images": [{"id": 1, "file_name": file_name, "width": 3, "height": 3}],
           "categories": [{"id": 1, "name": "a"}], "annotations": []}
    with pytest.raises(ConfigError, match="image name"):
        load_dataset(_write(tmp_path / "ann.json", doc))


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),  # syntax error
        ('{"images": []}', "needs 'images' and 'categories'"),  # not COCO
        ('{"images": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}]}', "used twice"),
        ('{"images": [], "categories": [{"id": 1, "name": "a"}], "annotations": [{"id": 1, "image_id": 5, '
         '"category_id": 1, "bbox": [0, 0, 1, 1]}]}', "not in 'images'"),  # dangling reference
    ],
)
def test_broken_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "ann.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_dataset(path)


def test_labels_drawn_on_stored_pixels_are_turned_into_the_oriented_frame(tmp_path):
    """EXIF orientation 6 (rotate 90 clockwise to display): stored 100x60, shown 60x100."""
    _image(tmp_path / "images" / "raw.jpg", (100, 60), orientation=6)
    _image(tmp_path / "images" / "oriented.jpg", (100, 60), orientation=6)
    raw_mask = np.zeros((60, 100), bool)
    raw_mask[5:25, 10:30] = True
    doc = {"images": [{"id": 1, "file_name": "raw.jpg", "width": 100, "height": 60},  # the stored frame
                      {"id": 2, "file_name": "oriented.jpg", "width": 60, "height": 100}],  # the oriented frame
           "categories": [{"id": 1, "name": "a"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 20],
                            "segmentation": mask_to_rle(raw_mask)},
                           {"id": 2, "image_id": 2, "category_id": 1, "bbox": [10, 5, 20, 20]}]}
    dataset = load_dataset(_write(tmp_path / "ann.json", doc))
    by_name = {Path(im.path).name: im for im in dataset.images}
    raw, oriented = by_name["raw.jpg"], by_name["oriented.jpg"]
    assert (raw.width, raw.height) == (60, 100)
    [label] = raw.labels
    # Orientation 6 maps a stored point (x, y) to (H - y, x) with H = 60.
    assert label.xyxy == (35.0, 10.0, 55.0, 30.0)
    np.testing.assert_allclose(rle_to_xyxy(label.rle), label.xyxy)
    assert oriented.labels[0].xyxy == (10.0, 5.0, 30.0, 25.0)  # already oriented: unchanged


@pytest.mark.parametrize("orientation", range(1, 9))
def test_box_and_mask_orientation_agree(orientation):
    mask = np.zeros((30, 50), bool)
    mask[4:11, 7:20] = True
    box = orient_box((7, 4, 20, 11), orientation, 50, 30)
    np.testing.assert_allclose(rle_to_xyxy(orient_rle(mask_to_rle(mask), orientation)), box)
