"""``import`` of Label Studio JSON exports: our tasks reviewed and back (multi-part masks too),
annotation choice, result types, brush masks, image references, EXIF frames, broken files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autolabel.detections import Detections
from autolabel.errors import ConfigError
from autolabel.export import ExportOptions, export_dataset
from autolabel.geometry import mask_iou, rle_to_mask
from autolabel.images import file_sha256, oriented_size
from autolabel.importers import detect_format, import_dataset, load_dataset
from autolabel.orientation import orient_boxes
from autolabel.store import ImageResult, open_store
from autolabel.testing.synthetic import (CLASSES, Label, SyntheticImage, assert_boxes_close, blob_mask,
                                         detection_images, make_run, segmentation_images, stored_labels)

EXIF = Path(__file__).parents[1] / "data" / "exif"
BRUSH = json.loads((Path(__file__).parents[1] / "data" / "labelstudio" / "brush_vectors.json").read_text())
EXIF_BOXES = {"Landscape_6.jpg": [[100.5, 200.25, 900.0, 1100.75]], "Portrait_8.jpg": [[10.0, 1500.0, 1190.0, 1790.5]]}


def _accept_predictions(tasks_path: Path) -> Path:
    """What a reviewer accepting every prediction in Label Studio makes of our tasks."""
    tasks = json.loads(tasks_path.read_text())
    for task in tasks:
        results = [r for a in task.get("annotations", []) for r in a["result"]]
        results += [{k: v for k, v in r.items() if k != "score"} for p in task.pop("predictions", []) for r in p["result"]]
        task["annotations"] = [{"id": 1, "result": results, "was_cancelled": False}]
    tasks_path.write_text(json.dumps(tasks))
    return tasks_path


def _reviewed_export(tmp_path: Path, synthetic: bool) -> tuple[Path, dict]:
    """A run holding EXIF-rotated photos (and with ``synthetic`` the synthetic images), exported to
    Label Studio and accepted there; also its labels by source path."""
    from autolabel.ontology import Ontology

    if synthetic:
        store = make_run(tmp_path / "run", tmp_path / "src", CLASSES, detection_images())
    else:
        store = open_store(tmp_path / "run")
        store.bind_config({"model": "synthetic", "mode": "detect", "ontology": Ontology.from_prompts(CLASSES).to_dict(),
                           "detect": {"threshold": 0.1}})
    results = []
    (tmp_path / "exif").mkdir()
    for name, boxes in EXIF_BOXES.items():
        path = Path(shutil.copy(EXIF / name, tmp_path / "exif" / name))
        results.append(ImageResult(str(path.resolve()), file_sha256(path), *oriented_size(path),
                                   Detections(np.array(boxes), [0.8], [1], [1])))
    store.write_results(results)
    export_dataset(store, tmp_path / "ls", "labelstudio", ExportOptions.build())
    original = stored_labels(store)
    store.close()
    return _accept_predictions(tmp_path / "ls" / "tasks.json"), original


def _by_class(labels: Detections, classes: list[str]) -> tuple[list[str], np.ndarray]:
    """Class names and boxes, sorted (a reviewer's annotation lists regions in its own order)."""
    order = sorted(range(len(labels)), key=lambda i: (classes[labels.class_ids[i]], *labels.xyxy[i].round(3)))
    return [classes[labels.class_ids[i]] for i in order], labels.xyxy[order].reshape(-1, 4)


def test_our_reviewed_export_comes_back(tmp_path):
    tasks_path, original = _reviewed_export(tmp_path, synthetic=True)
    assert detect_format(tasks_path) == "labelstudio"
    summary = import_dataset(tasks_path, tmp_path / "gt")  # images under the JSON's folder (?d=images/...)
    assert (summary.images, summary.failed, summary.notes) == (len(original), 0, [])
    manifest = json.loads((tasks_path.parent / "manifest.json").read_text())
    source_of = {str((tasks_path.parent / e["image"]).resolve()): e["source"] for e in manifest["images"]}
    with open_store(tmp_path / "gt", create=False) as gt:
        assert sorted(gt.ontology.names) == CLASSES  # in the order they first appear
        imported = stored_labels(gt)
        sizes = {r.path: (r.width, r.height) for r in gt.images()}
        names = gt.ontology.names
    assert sorted(source_of[p] for p in imported) == sorted(original)
    for path, labels in imported.items():
        got_names, got_boxes = _by_class(labels, names)
        want_names, want_boxes = _by_class(original[source_of[path]], CLASSES)
        assert got_names == want_names
        assert_boxes_close(got_boxes, want_boxes, sizes[path])  # percent with 4 decimals: < 1e-6


def test_original_rotated_photos_are_found_by_name(tmp_path):
    """--images pointing at the photos as taken (EXIF orientation 6 and 8): the same boxes."""
    tasks_path, original = _reviewed_export(tmp_path, synthetic=False)
    summary = import_dataset(tasks_path, tmp_path / "gt", images_dir=tmp_path / "exif")
    assert (summary.images, summary.failed) == (2, 0)
    with open_store(tmp_path / "gt", create=False) as gt:
        imported = stored_labels(gt)
    assert sorted(imported) == sorted(original)  # the photos themselves, not the exported copies
    for path, labels in imported.items():
        assert_boxes_close(labels.xyxy, original[path].xyxy, oriented_size(path))


def _task(image, results, **extra):
    return {"id": extra.pop("id", 1), "data": {"image": image},
            "annotations": [{"id": 1, "result": results, "was_cancelled": False}], **extra}


def _rect(x, y, w, h, label, size=(200, 100), **extra):
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": extra.pop("rotation", 0), "rectanglelabels": [label]}
    return {"id": extra.pop("id", label), "type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "original_width": size[0], "original_height": size[1], "image_rotation": 0, "value": value, **extra}


def _write(path, tasks):
    path.write_text(json.dumps(tasks))
    return path


def test_stored_frame_of_a_rotated_photo_is_turned(tmp_path):
    shutil.copy(EXIF / "Landscape_6.jpg", tmp_path / "photo.jpg")  # stored 1200x1800, shown 1800x1200
    tasks = [_task("photo.jpg", [_rect(10, 20, 30, 40, "a", size=(1200, 1800))])]
    [image] = load_dataset(_write(tmp_path / "tasks.json", tasks)).images
    stored_box = [[120.0, 360.0, 480.0, 1080.0]]
    np.testing.assert_allclose(image.labels.xyxy, orient_boxes(stored_box, 6, (1200, 1800)))
    tasks[0]["annotations"][0]["result"][0].update(original_width=1000, original_height=1000)
    [image] = load_dataset(_write(tmp_path / "tasks.json", tasks)).images
    assert "says 1000x1000 but the image is 1800x1200" in image.error


def test_annotation_choice_and_result_types(tmp_path):
    Image.new("RGB", (200, 100)).save(tmp_path / "a.png")
    Image.new("RGB", (200, 100)).save(tmp_path / "b.png")
    polygon = {"id": "p", "type": "polygonlabels", "original_width": 200, "original_height": 100,
               "value": {"points": [[10, 10], [30, 10], [30, 50], [10, 50]], "polygonlabels": ["cat"]}}
    paired = [{"id": "r", "type": "rectangle", "original_width": 200, "original_height": 100,
               "value": {"x": 0, "y": 0, "width": 5, "height": 5}},
              {"id": "r", "type": "labels", "value": {"x": 0, "y": 0, "width": 5, "height": 5, "labels": ["dog"]}}]
    tasks = [
        {"id": 1, "data": {"image": "a.png"}, "annotations": [
            {"id": 1, "updated_at": "2024-05-01T10:00:00Z", "was_cancelled": False, "result": [_rect(0, 0, 10, 10, "old")]},
            {"id": 2, "updated_at": "2024-05-02T10:00:00Z", "was_cancelled": False,
             "result": [_rect(50, 20, 10, 30, "dog", rotation=90), polygon, *paired,
                        {"id": "c", "type": "choices", "value": {"choices": ["day"]}}]},
            {"id": 3, "updated_at": "2024-05-03T10:00:00Z", "was_cancelled": True, "result": []}]},  # newest: cancelled
        {"id": 2, "data": {"image": "b.png"}, "predictions": [{"result": [_rect(0, 0, 10, 10, "dog")]}]},  # no review
    ]
    dataset = load_dataset(_write(tmp_path / "tasks.json", tasks))
    assert dataset.classes == ["dog", "cat"] and len(dataset.images) == 1
    labels = dataset.images[0].labels
    assert labels.class_ids.tolist() == [0, 1, 0]
    # Turned 90 degrees clockwise about its top-left corner (100, 20): width down, height to the left.
    np.testing.assert_allclose(labels.xyxy, [[70, 20, 100, 40], [20, 10, 60, 50], [0, 0, 10, 5]])
    mask = rle_to_mask(labels.masks[1])
    assert mask.shape == (100, 200) and mask[10:50, 20:60].all() and mask.sum() == 40 * 40
    assert labels.masks[0] is None and labels.masks[2] is None
    assert dataset.notes == [
        "skipped 1 tasks without a submitted annotation (predictions alone are not ground truth)",
        "1 rotated rectangles became their axis-aligned hull",
        "skipped 1 results of other types (choices)"]


def test_multi_part_masks_come_back_as_one_label(tmp_path):
    """A mask of two parts is two polygons in Label Studio and one label again; two one-part masks of
    one class in one image stay two labels."""
    twins = SyntheticImage("siteD/twins.png", (80, 60), [Label.from_mask("car", blob_mask((80, 60), box))
                                                          for box in ((5, 5, 30, 30), (40, 20, 75, 55))])
    store = make_run(tmp_path / "run", tmp_path / "src", CLASSES, segmentation_images() + [twins])
    export_dataset(store, tmp_path / "ls", "labelstudio", ExportOptions.build())
    original = stored_labels(store)
    store.close()
    tasks_path = _accept_predictions(tmp_path / "ls" / "tasks.json")
    ids = [r["id"] for task in json.loads(tasks_path.read_text()) for a in task["annotations"] for r in a["result"]]
    assert "1-1-1" in ids and "1-1-2" in ids  # the ring with a second part
    summary = import_dataset(tasks_path, tmp_path / "gt")
    assert (summary.failed, summary.labels) == (0, sum(len(labels) for labels in original.values()))
    manifest = json.loads((tasks_path.parent / "manifest.json").read_text())
    source_of = {str((tasks_path.parent / e["image"]).resolve()): e["source"] for e in manifest["images"]}
    with open_store(tmp_path / "gt", create=False) as gt:
        imported = stored_labels(gt)
        sizes = {r.path: (r.width, r.height) for r in gt.images()}
        names = gt.ontology.names
    for path, labels in imported.items():
        want = original[source_of[path]]
        assert [names[c] for c in labels.class_ids] == [CLASSES[c] for c in want.class_ids]
        assert_boxes_close(labels.xyxy, want.xyxy, sizes[path])
        for got_rle, want_rle in zip(labels.masks or [], want.masks or []):
            assert mask_iou(rle_to_mask(got_rle), rle_to_mask(want_rle)) > 0.99


def _polygon(region_id, label, x0):
    return {"id": region_id, "type": "polygonlabels", "original_width": 200, "original_height": 100,
            "value": {"points": [[x0, 10], [x0 + 4, 10], [x0 + 4, 50], [x0, 50]], "polygonlabels": [label]}}


@pytest.mark.parametrize(
    "parts, areas",
    [
        ([("3-1-1", "a"), ("3-1-2", "a"), ("3-1-3", "a")], [960]),  # all parts: one label
        ([("3-1-2", "a"), ("3-2", "b"), ("3-1-1", "a")], [640, 320]),  # in any order, beside a one-part mask
        ([("3-1-1", "a"), ("3-1-3", "a")], [320, 320]),  # part 2 missing
        ([("3-1-1", "a"), ("3-1-2", "b")], [320, 320]),  # different labels
        ([("3-1-1", "a"), ("3-1-1", "a"), ("3-1-2", "a")], [320, 320, 320]),  # a part twice
        ([("3-1", "a"), ("3-2", "a")], [320, 320]),  # one-part masks of one image
        ([("x-1", "a"), ("x-2", "a")], [320, 320]),  # not our export's ids
        ([("3-1-1", "a")], [320]),  # a lone first part
    ],
)
def test_only_complete_part_sequences_are_joined(tmp_path, parts, areas):
    """Each part is 8 x 40 pixels (320), 20 pixels right of the one before."""
    Image.new("RGB", (200, 100)).save(tmp_path / "a.png")
    results = [_polygon(region_id, label, 10 * k) for k, (region_id, label) in enumerate(parts)]
    [image] = load_dataset(_write(tmp_path / "tasks.json", [_task("a.png", results)])).images
    assert [int(rle_to_mask(rle).sum()) for rle in image.labels.masks] == areas
    if areas == [960]:
        np.testing.assert_allclose(image.labels.xyxy, [[0, 10, 48, 50]])  # the union's box


def _brush(region_id, rle, size, label="cat"):
    return {"id": region_id, "type": "brushlabels", "original_width": size[0], "original_height": size[1],
            "image_rotation": 0, "value": {"format": "rle", "rle": rle, "brushlabels": [label]}}


# A 7x5 brush mask with nothing in it: 140 values, word size 8, widths [3, 4, 8, 16], one run of 0.
EMPTY_7X5 = [0, 0, 0, 140, 57, 27, 254, 139, 0]


def test_brush_masks(tmp_path):
    """Decoded masks and tight boxes; the stored frame of a rotated photo turned; an empty mask left
    out and counted; a broken one fails its image alone, in one line naming the task."""
    big, small = BRUSH["big"], BRUSH["small"]
    Image.new("RGB", (big["width"], big["height"])).save(tmp_path / "big.png")
    Image.new("RGB", (7, 5)).save(tmp_path / "broken.png")
    rotated = Image.new("RGB", (7, 5))  # stored 7x5, shown 5x7
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "rotated.jpg", exif=exif)
    tasks = [_task("big.png", [_brush("b", big["rle"], (big["width"], big["height"]))], id=1),
             _task("rotated.jpg", [_brush("b", small["rle"], (7, 5), "dog"), _brush("e", EMPTY_7X5, (7, 5))], id=2),
             _task("broken.png", [_brush("b", small["rle"][:-3], (7, 5))], id=3)]
    dataset = load_dataset(_write(tmp_path / "tasks.json", tasks))
    images = {Path(image.path).name: image for image in dataset.images}
    assert dataset.classes == ["cat", "dog"]

    want = np.zeros((big["height"], big["width"]), dtype=bool)
    for x0, y0, x1, y1 in big["rects_xyxy"]:
        want[y0:y1, x0:x1] = True
    labels = images["big.png"].labels
    assert labels.class_ids.tolist() == [0]
    np.testing.assert_array_equal(rle_to_mask(labels.masks[0]), want)
    np.testing.assert_array_equal(labels.xyxy, [[10, 20, 391, 290]])

    labels = images["rotated.jpg"].labels
    assert labels.class_ids.tolist() == [1] and dataset.skipped_invalid == 1  # the empty mask
    stored = np.array([[c == "1" for c in row] for row in small["rows"]])
    np.testing.assert_array_equal(rle_to_mask(labels.masks[0]), np.rot90(stored, -1))  # turned clockwise
    np.testing.assert_array_equal(labels.xyxy, [[0, 0, 5, 7]])

    error = images["broken.png"].error
    assert "tasks.json: task 3: result b: invalid brush mask (the stream is truncated" in error and "\n" not in error


@pytest.mark.parametrize(
    "reference, found",
    [
        ("/data/local-files/?d=sub/photo.jpg", "sub/photo.jpg"),  # local files storage
        ("/data/local-files/?d=mnt/data/sub/photo.jpg", "sub/photo.jpg"),  # under another document root
        ("http://localhost:8080/data/local-files/?d=sub%2Fphoto.jpg", "sub/photo.jpg"),  # a full URL
        ("/data/upload/3/0a1b2c3d-other.png", "deep/other.png"),  # an upload: Label Studio's prefix dropped
        ("s3://bucket/any/where/other.png", "deep/other.png"),  # cloud storage: by name
        ("deep/other.png", "deep/other.png"),  # a plain relative path
    ],
)
def test_image_references(tmp_path, reference, found):
    for rel in ("pics/sub/photo.jpg", "pics/deep/other.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (200, 100)).save(tmp_path / rel)
    dataset = load_dataset(_write(tmp_path / "tasks.json", [_task(reference, [_rect(0, 0, 50, 50, "a")])]),
                           images_dir=tmp_path / "pics")
    [image] = dataset.images
    assert image.error is None and image.path == str((tmp_path / "pics" / found).resolve())
    assert image.labels.xyxy.tolist() == [[0.0, 0.0, 100.0, 50.0]]


def test_missing_ambiguous_and_turned_images_fail_alone(tmp_path):
    for rel in ("a/x.png", "b/x.png", "ok.png", "turned.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (200, 100)).save(tmp_path / rel)
    tasks = [_task("gone.png", [], id=1), _task("s3://b/x.png", [], id=2), _task("ok.png", [_rect(0, 0, 5, 5, "a")], id=3),
             _task("turned.png", [_rect(0, 0, 5, 5, "a", image_rotation=90)], id=4)]
    summary = import_dataset(_write(tmp_path / "tasks.json", tasks), tmp_path / "run")
    assert (summary.images, summary.failed, summary.labels) == (1, 3, 1)
    errors = sorted(error for _, error in summary.failures)
    assert "task 1: image 'gone.png' not found under" in errors[0]
    assert "task 2: image 's3://b/x.png' 2 files under" in errors[1] and "named 'x.png'" in errors[1]
    assert "task 4: image_rotation 90" in errors[2]


@pytest.mark.parametrize(
    "content, message",
    [
        ("[{", "is not valid JSON"),
        ('[{"annotations": []}]', "task 0 is not a Label Studio task"),  # no data
        ('[{"id": 7, "data": {"image": "a.png"}, "annotations": {}}]', "task 7: 'annotations' must be a list"),
        ('[{"id": 7, "data": {}, "annotations": [{"result": []}]}]', "task 7: 'data' has no 'image'"),
        ('[{"id": 7, "data": {"image": "a.png"}, "annotations": [{"result": [{"id": "r", "type": "rectanglelabels", '
         '"value": {"x": "1", "y": 0, "width": 1, "height": 1, "rectanglelabels": ["a"]}}]}]}]',
         "task 7: result r: value.x must be a finite number"),
        ('[{"id": 7, "data": {"image": "a.png"}, "annotations": [{"result": [{"id": "r", "type": "polygonlabels", '
         '"value": {"points": [[0, 0], [500, 0], [0, 10]], "polygonlabels": ["a"]}}]}]}]',
         "task 7: result r: invalid polygon (polygon reaches outside the 20x10 image)"),
        ('[{"id": 7, "data": {"image": "a.png"}, "predictions": [{"result": []}]}]',
         "no submitted annotation has a labelled region; skipped 1 tasks without a submitted annotation"),
        ('[{"id": 7, "data": {"image": "a.png"}, "annotations": [{"result": [{"id": "r", "type": "polygonlabels", '
         '"image_rotation": "90", "value": {"points": [], "polygonlabels": ["a"]}}]}]}]',
         "task 7: result r: value.image_rotation must be a finite number"),
    ],
)
def test_broken_files_are_one_line_errors(tmp_path, content, message):
    Image.new("RGB", (20, 10)).save(tmp_path / "a.png")
    path = tmp_path / "tasks.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        load_dataset(path, fmt="labelstudio")
    assert "tasks.json" in str(caught.value) and "\n" not in str(caught.value)


def test_a_json_object_is_not_a_task_list(tmp_path):
    path = _write(tmp_path / "tasks.json", {"data": {}})
    assert detect_format(path) == "coco"
    with pytest.raises(ConfigError, match="must be a list of tasks"):
        load_dataset(path, fmt="labelstudio")
