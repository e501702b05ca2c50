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
        a = store.labels(images["a.jpg"].id)
        assert (a.sources == "human").all() and (a.reviews == "accepted").all() and np.isnan(a.scores).all()
        a_names = [store.ontology.names[c] for c in a.class_ids]
        box_only = a_names.index("dog")
        assert a.xyxy[box_only].tolist() == [1.5, 2.5, 11.5, 22.5] and a.masks[box_only] is None
        polygon, rle = [a.masks[i] for i, name in enumerate(a_names) if name == "cat"]
        assert mask_iou(rle_to_mask(polygon), mask) == 1.0
        assert mask_iou(rle_to_mask(rle), mask) == 1.0
        b = store.labels(images["b.png"].id)
        assert len(b) == 1
        assert mask_iou(rle_to_mask(b.masks[0]), small_mask) == 1.0
        assert b.xyxy[0].tolist() == [5.0, 5.0, 25.0, 15.0]  # the box of the mask
    # Importing again replaces the labels instead of adding them.
    import_dataset(json_path, tmp_path / "run")
    with open_store(tmp_path / "run", create=False) as store:
        assert store.counts()["per_class"] == {"dog": 2, "cat": 2}


def test_crowd_regions_are_kept_apart_for_evaluation(coco_dir):
    json_path, _, _ = coco_dir
    dataset = load_dataset(json_path)
    b = next(im for im in dataset.images if im.path.endswith("b.png"))
    assert len(b.crowd) == 1 and dataset.crowd == 1 and b.crowd.class_ids.tolist() == [0]  # dog
    assert len(b.labels) == 1 and (b.labels.sources == "human").all() and np.isnan(b.labels.scores).all()


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


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])  # Pillow reports a TIFF's size already turned
def test_labels_drawn_on_stored_pixels_are_turned_into_the_oriented_frame(tmp_path, suffix):
    """EXIF orientation 6 (rotate 90 clockwise to display): stored 100x60, shown 60x100."""
    _image(tmp_path / "images" / f"raw{suffix}", (100, 60), orientation=6)
    _image(tmp_path / "images" / f"oriented{suffix}", (100, 60), orientation=6)
    raw_mask = np.zeros((60, 100), bool)
    raw_mask[5:25, 10:30] = True
    doc = {"images": [{"id": 1, "file_name": f"raw{suffix}", "width": 100, "height": 60},  # the stored frame
                      {"id": 2, "file_name": f"oriented{suffix}", "width": 60, "height": 100}],  # the oriented frame
           "categories": [{"id": 1, "name": "a"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 20],
                            "segmentation": mask_to_rle(raw_mask)},
                           {"id": 2, "image_id": 2, "category_id": 1, "bbox": [10, 5, 20, 20]}]}
    summary = import_dataset(_write(tmp_path / "ann.json", doc), tmp_path / "run")
    assert (summary.images, summary.failed) == (2, 0)
    with open_store(tmp_path / "run", create=False) as store:
        by_name = {Path(r.path).stem: r for r in store.images()}
        assert (by_name["raw"].width, by_name["raw"].height) == (60, 100)
        raw = store.labels(by_name["raw"].id)
        oriented = store.labels(by_name["oriented"].id)
    assert len(raw) == 1 and len(oriented) == 1
    # Orientation 6 maps a stored point (x, y) to (H - y, x) with H = 60.
    assert raw.xyxy[0].tolist() == [35.0, 10.0, 55.0, 30.0]
    np.testing.assert_allclose(rle_to_xyxy(raw.masks[0]), raw.xyxy[0])
    assert oriented.xyxy[0].tolist() == [10.0, 5.0, 30.0, 25.0]  # already oriented: unchanged


def _one_annotation(tmp_path, segmentation):
    _image(tmp_path / "images" / "a.png", (100, 80))
    return _write(tmp_path / "ann.json", {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": 42, "image_id": 1, "category_id": 1, "bbox": [20, 10, 40, 20],
                         "segmentation": segmentation}]})


def _truncated_rle():
    mask = np.zeros((80, 100), bool)
    mask[10:30, 20:60] = True
    rle = mask_to_rle(mask)
    return {"size": rle["size"], "counts": rle["counts"][:-2]}


@pytest.mark.parametrize(
    "segmentation, message",
    [
        (_truncated_rle(), "RLE counts end in the middle of a run"),  # pycocotools would read past the mask
        ({"size": [80, 100], "counts": [10, 20]}, "RLE counts cover 30 pixels"),  # uncompressed, short
        ({"size": [80, 100], "counts": "\x7f"}, "outside the COCO alphabet"),
        ({"size": [40, 50], "counts": "PY1"}, "is not the image's"),  # RLE of another image size
        ([[20, 10, 60, 10, 60]], "even number"),  # odd polygon
        ([[20, 10, 60, 10]], "at least 6"),  # two points
        ([[20, 10, 60, 10, 60, float("nan")]], "finite"),
        ([[20, 10, 600, 10, 60, 30]], "outside the 100x80 image"),
    ],
)
def test_broken_segmentations_name_the_image_and_annotation(tmp_path, segmentation, message):
    path = _one_annotation(tmp_path, segmentation)
    with pytest.raises(ConfigError, match=message) as caught:
        load_dataset(path)
    assert "'a.png'" in str(caught.value) and "annotation 42" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_polygons_may_touch_the_border_within_the_slack(tmp_path):
    dataset = load_dataset(_one_annotation(tmp_path, [[-1, -1, 101, -1, 101, 81, -1, 81]]))
    [label] = dataset.images[0].labels.masks
    assert rle_to_mask(label).all()
