"""Label Studio export: reviewed labels as *annotations*, the model's unreviewed ones as *predictions*.

A label is reviewed when a person drew or changed it (source ``human``) or accepted it; its result
carries no score. Pending model labels are one prediction per task, with their scores. A task has
``annotations`` when it has reviewed labels or its image was accepted as a whole (an empty result
then says "nothing here"), and ``predictions`` when it has pending labels or no annotation.

Layout: ``images/[<split>/]<name>``, ``tasks.json`` (import it into a project) and
``label_config.xml`` (the labeling interface whose control names the tasks use). ``data.image`` is
``image_prefix`` + the image's path in the export; the default prefix serves the images through
Label Studio's local file storage when ``LOCAL_FILES_DOCUMENT_ROOT`` is the export folder.

Coordinates are **percent** of the exported image's size, as Label Studio stores them. A label
without a mask is a ``rectanglelabels`` result; a label with a mask is one ``polygonlabels`` result
per mask part (a Label Studio polygon has one ring; holes are joined to their part by a zero-width cut).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from autolabel.export.items import ExportItem, ExportLabel, ExportOptions, ExportPlan
from autolabel.export.package import json_bytes
from autolabel.store import Store

TASKS_FILE = "tasks.json"
CONFIG_FILE = "label_config.xml"
DEFAULT_IMAGE_PREFIX = "/data/local-files/?d="
IMAGE_TAG = "image"
RECT_CONTROL = "label"
POLYGON_CONTROL = "polygon"
MODEL_VERSION = "autolabel"


def _pct(value: float, size: int) -> float:
    return round(float(value) / size * 100.0, 4)


def label_results(label: ExportLabel, width: int, height: int, region_id: str, scored: bool = True) -> list[dict]:
    """Label Studio results of one label (percent coordinates of the exported image); ``scored``:
    whether its score, if any, is written (never for a reviewed label)."""
    common = {"from_name": RECT_CONTROL, "to_name": IMAGE_TAG, "original_width": width,
              "original_height": height, "image_rotation": 0}
    if scored and label.score is not None:
        common["score"] = round(float(label.score), 5)
    parts = label.polygons
    if not parts:
        x0, y0, x1, y1 = label.xyxy
        value = {"x": _pct(x0, width), "y": _pct(y0, height), "width": _pct(x1 - x0, width),
                 "height": _pct(y1 - y0, height), "rotation": 0, "rectanglelabels": [label.class_name]}
        return [{"id": region_id, "type": "rectanglelabels", **common, "value": value}]
    results = []
    for k, part in enumerate(parts):
        points = [[_pct(x, width), _pct(y, height)] for x, y in np.asarray(part, dtype=np.float64).reshape(-1, 2)]
        value = {"points": points, "closed": True, "polygonlabels": [label.class_name]}
        suffix = "" if len(parts) == 1 else f"-{k + 1}"
        results.append({"id": region_id + suffix, "type": "polygonlabels", **common,
                        "from_name": POLYGON_CONTROL, "value": value})
    return results


def label_config(names: list[str], polygons: bool) -> bytes:
    """The labeling interface (XML) matching the tasks' ``from_name`` / ``to_name``."""
    view = ET.Element("View")
    ET.SubElement(view, "Image", {"name": IMAGE_TAG, "value": "$image", "zoom": "true"})
    controls = [("RectangleLabels", RECT_CONTROL)] + ([("PolygonLabels", POLYGON_CONTROL)] if polygons else [])
    for tag, name in controls:
        control = ET.SubElement(view, tag, {"name": name, "toName": IMAGE_TAG})
        for class_name in names:
            ET.SubElement(control, "Label", {"value": class_name})
    ET.indent(view, space="  ")
    return ET.tostring(view, encoding="utf-8") + b"\n"


class LabelStudioWriter:
    index_name = TASKS_FILE

    def __init__(self, store: Store, options: ExportOptions):
        self.image_prefix = DEFAULT_IMAGE_PREFIX if options.image_prefix is None else options.image_prefix
        self.polygons = False  # whether any polygon result was written
        self.tasks: list[dict] = []

    def image_path(self, item: ExportItem) -> str:
        return f"images/{item.name}" if item.split is None else f"images/{item.split}/{item.name}"

    def add(self, item: ExportItem, sink) -> list[str]:
        annotation, prediction, scores = [], [], []
        for k, label in enumerate(item.labels, start=1):
            region_id = f"{item.image_id}-{k}"
            if label.reviewed:
                annotation += label_results(label, item.width, item.height, region_id, scored=False)
            else:
                prediction += label_results(label, item.width, item.height, region_id)
                if label.score is not None:
                    scores.append(label.score)
        self.polygons = self.polygons or any(r["type"] == "polygonlabels" for r in annotation + prediction)
        data = {"image": self.image_prefix + self.image_path(item)}
        if item.split is not None:
            data["split"] = item.split
        task: dict = {"data": data}
        if annotation or item.record.reviewed:
            task["annotations"] = [{"result": annotation}]
        if prediction or "annotations" not in task:
            task["predictions"] = [{"model_version": MODEL_VERSION, "result": prediction,
                                    **({"score": round(float(np.mean(scores)), 5)} if scores else {})}]
        self.tasks.append(task)
        return []

    def finish(self, plan: ExportPlan, sink) -> list[str]:
        sink.write(CONFIG_FILE, label_config(plan.ontology.names, self.polygons))
        sink.write(TASKS_FILE, json_bytes(self.tasks))
        return [CONFIG_FILE, TASKS_FILE]
