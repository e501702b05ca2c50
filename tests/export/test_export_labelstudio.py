"""Label Studio: tasks follow the documented predictions format, and agree with label_config.xml.

Format (labelstud.io, "Import pre-annotated data"): a task is ``{"data": {"image": ...},
"annotations": [{"result": [...]}], "predictions": [{"model_version", "score", "result": [...]}]}``
(reviewed labels are annotations, the model's pending ones predictions); a result has ``id``, ``type``,
``from_name`` (a control tag's name), ``to_name`` (the image tag's name), ``original_width`` /
``original_height`` and ``value``; rectangles ``{x, y, width, height, rotation, rectanglelabels}``
and polygons ``{points: [[x, y], ...], polygonlabels}``, all in percent of the image size.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from autolabel.export import ExportOptions, export_dataset
from autolabel.export.labelstudio import DEFAULT_IMAGE_PREFIX
from autolabel.geometry import mask_iou, polygons_to_rle, rle_to_mask
from autolabel.testing.synthetic import CLASSES, stored_labels

PERCENT_KEYS = ("x", "y", "width", "height")


def _config(out):
    root = ET.parse(out / "label_config.xml").getroot()
    image = root.find("Image")
    controls = {c.get("name"): (c.tag, c.get("toName"), [lab.get("value") for lab in c.findall("Label")])
                for c in root if c.tag in ("RectangleLabels", "PolygonLabels")}
    return image.get("name"), image.get("value"), controls


def _results(task) -> list[dict]:
    """Every result of a task, annotations first."""
    return [r for key in ("annotations", "predictions") for entry in task.get(key, []) for r in entry["result"]]


def _by_region(task) -> dict[str, dict]:
    return {r["id"]: r for r in _results(task)}


def validate_tasks(out, prefix=DEFAULT_IMAGE_PREFIX) -> list[dict]:
    """Check every task against the documented structure; return the tasks."""
    image_tag, image_value, controls = _config(out)
    assert image_value == "$image"
    tasks = json.loads((out / "tasks.json").read_text())
    assert isinstance(tasks, list)
    for task in tasks:
        assert {"data"} < set(task) <= {"data", "annotations", "predictions"}
        url = task["data"]["image"]
        assert url.startswith(prefix)
        image_file = out / unquote(url[len(prefix):])
        assert image_file.is_file()
        with Image.open(image_file) as im:
            width, height = im.size
        for prediction in task.get("predictions", []):
            assert prediction["model_version"] == "autolabel" and isinstance(prediction["result"], list)
            if any("score" in r for r in prediction["result"]):
                assert 0.0 <= prediction["score"] <= 1.0
        for annotation in task.get("annotations", []):
            assert set(annotation) == {"result"} and not any("score" in r for r in annotation["result"])
        ids = [r["id"] for r in _results(task)]
        assert len(set(ids)) == len(ids)
        for result in _results(task):
            tag, to_name, labels = controls[result["from_name"]]
            assert result["to_name"] == to_name == image_tag
            assert (result["original_width"], result["original_height"]) == (width, height)
            assert result["image_rotation"] == 0
            value = result["value"]
            if result["type"] == "rectanglelabels":
                assert tag == "RectangleLabels"
                assert all(0.0 <= value[k] <= 100.0 for k in PERCENT_KEYS)
                assert value["x"] + value["width"] <= 100.0 + 1e-6 and value["y"] + value["height"] <= 100.0 + 1e-6
                assert value["rotation"] == 0
                [name] = value["rectanglelabels"]
            else:
                assert result["type"] == "polygonlabels" and tag == "PolygonLabels"
                points = np.array(value["points"], dtype=float)
                assert points.ndim == 2 and points.shape[1] == 2 and len(points) >= 3
                assert ((points >= 0) & (points <= 100)).all() and value["closed"] is True
                [name] = value["polygonlabels"]
            assert name in labels
            if "score" in result:
                assert 0.0 <= result["score"] <= 1.0
    return tasks


def _pixels(value, width, height):
    return np.array([value["x"] * width, value["y"] * height, (value["x"] + value["width"]) * width,
                     (value["y"] + value["height"]) * height]) / 100.0


@pytest.mark.parametrize(
    "size, letterbox",
    [
        (None, False),  # original size
        ("100x50", False),  # stretched: x and y percent of different sizes
    ],
)
def test_rectangles_are_percent_of_the_image_with_scores(det_run, tmp_path, size, letterbox):
    out = tmp_path / "ls"
    export_dataset(det_run, out, "labelstudio", ExportOptions.build(image_size=size, letterbox=letterbox))
    tasks = validate_tasks(out)
    _, _, controls = _config(out)
    assert controls == {"label": ("RectangleLabels", "image", CLASSES)}  # no masks: no polygon control
    manifest = {e["image"]: e for e in json.loads((out / "manifest.json").read_text())["images"]}
    original = stored_labels(det_run)
    assert len(tasks) == 5
    for task in tasks:
        entry = manifest[task["data"]["image"][len(DEFAULT_IMAGE_PREFIX):]]
        (sx, sy), (w, h) = entry["scale"], entry["size"]
        dets = original[entry["source"]]
        regions, task_id = _by_region(task), tasks.index(task) + 1  # region ids: "<task>-<label>"
        results = [regions[f"{task_id}-{k}"] for k in range(1, len(dets) + 1)]
        names = [det_run.ontology.names[c] for c in dets.class_ids]
        assert [r["value"]["rectanglelabels"][0] for r in results] == names
        assert [r.get("score") for r in results] == [pytest.approx(float(s), abs=1e-5) if has else None
                                                      for s, has in zip(dets.scores, dets.has_score)]
        for result, xyxy in zip(results, dets.xyxy):
            np.testing.assert_allclose(_pixels(result["value"], w, h), np.array(xyxy, dtype=float) * [sx, sy, sx, sy],
                                       atol=1e-6 * 100 * max(w, h))


def test_masks_become_polygons_in_percent(seg_run, tmp_path):
    out = tmp_path / "ls"
    export_dataset(seg_run, out, "labelstudio", ExportOptions.build(split="train=0.5,val=0.5"))
    tasks = validate_tasks(out)
    _, _, controls = _config(out)
    assert controls["polygon"] == ("PolygonLabels", "image", CLASSES)
    assert {t["data"]["split"] for t in tasks} == {"train", "val"}
    manifest = {e["image"]: e for e in json.loads((out / "manifest.json").read_text())["images"]}
    original = stored_labels(seg_run)
    for task in tasks:
        entry = manifest[task["data"]["image"][len(DEFAULT_IMAGE_PREFIX):]]
        w, h = entry["size"]
        results = _results(task)
        dets = original[entry["source"]]
        for class_id, rle in zip(dets.class_ids, dets.masks or [None] * len(dets)):
            parts = [r for r in results if r["value"]["polygonlabels"] == [seg_run.ontology.names[class_id]]]
            polygons = [(np.array(r["value"]["points"]) / 100.0 * [w, h]).ravel().tolist() for r in parts]
            assert mask_iou(rle_to_mask(polygons_to_rle(polygons, h, w)), rle_to_mask(rle)) > 0.99


def test_image_prefix_is_configurable(det_run, tmp_path):
    out = tmp_path / "ls"
    export_dataset(det_run, out, "labelstudio", ExportOptions(image_prefix="http://files.local/data/"))
    tasks = validate_tasks(out, prefix="http://files.local/data/")
    assert all(t["data"]["image"].startswith("http://files.local/data/images/") for t in tasks)


def test_reviewed_labels_are_annotations_and_pending_ones_predictions(det_run, tmp_path):
    from autolabel.store import open_store

    records = {r.path: r for r in det_run.images()}
    with_two = next(path for path, r in records.items() if len(det_run.labels(r.id)) >= 2)
    image_id = records[with_two].id
    labels = det_run.labels(image_id)
    moved, accepted = int(labels.ids[0]), int(labels.ids[1])
    det_run.update_detection(moved, xyxy=labels.xyxy[0] + 1)  # a person's label now
    det_run.set_review(accepted, "accepted")
    reviewed_image = next(r for path, r in records.items() if path != with_two)
    det_run.accept_image(reviewed_image.id)
    out = tmp_path / "ls"
    export_dataset(det_run, out, "labelstudio", ExportOptions())
    tasks = validate_tasks(out)
    manifest = json.loads((out / "manifest.json").read_text())["images"]
    task_of = {e["source"]: t for e, t in zip(manifest, tasks)}
    edited = task_of[with_two]
    [annotation] = edited["annotations"]
    assert len(annotation["result"]) == 2  # the moved and the accepted label, without scores
    predicted = [r for p in edited.get("predictions", []) for r in p["result"]]
    assert len(predicted) == len(labels) - 2 and all("score" in r for r in predicted)
    accepted_task = task_of[reviewed_image.path]
    assert "predictions" not in accepted_task and len(accepted_task["annotations"][0]["result"]) == len(
        det_run.labels(reviewed_image.id))
    untouched = [t for path, t in task_of.items() if path not in (with_two, reviewed_image.path)
                 and not (det_run.labels(records[path].id).sources == "human").any()]
    assert untouched and all("annotations" not in t and "predictions" in t for t in untouched)
    with open_store(det_run.run_dir, create=False) as store:  # the model's prediction stays for evaluation
        assert store.model_predictions(image_id).has_score.all()
