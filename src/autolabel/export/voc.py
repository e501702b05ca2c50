"""Pascal VOC export: one XML file per image.

Layout (the VOC devkit's): ``JPEGImages/<stem>.jpg`` (always JPEG: many readers assume ``<id>.jpg``),
``Annotations/<stem>.xml``, ``ImageSets/Main/<split>.txt`` (``trainval.txt`` too for ``train`` +
``val``, or alone without ``--split``) and ``labels.txt`` (class names in the run's order).

Boxes follow the devkit: 1-based inclusive integer pixels, so pixel-edge ``[0, 10)`` is ``xmin=1,
xmax=10`` (``xmin = round(x0) + 1``, ``xmax = round(x1)``). Masks are added as ``<polygon>`` elements
(1-based like the boxes, one per part), the extension supervision and Roboflow read. VOC has no score.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from autolabel.export.items import ExportItem, ExportLabel, ExportOptions, ExportPlan
from autolabel.store import Store

IMAGE_DIR = "JPEGImages"
ANNOTATION_DIR = "Annotations"
SETS_DIR = "ImageSets/Main"
LABELS_FILE = "labels.txt"


def _text(parent: ET.Element, tag: str, value) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = str(value)
    return element


def voc_box(xyxy, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel-edge ``xyxy`` -> VOC ``(xmin, ymin, xmax, ymax)``, 1-based inclusive, inside the image."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in xyxy)
    xmin, ymin = min(max(x0, 0), width - 1) + 1, min(max(y0, 0), height - 1) + 1
    xmax, ymax = max(min(x1, width), xmin), max(min(y1, height), ymin)
    return xmin, ymin, xmax, ymax


def voc_object(label: ExportLabel, width: int, height: int) -> ET.Element:
    obj = ET.Element("object")
    _text(obj, "name", label.class_name)
    _text(obj, "pose", "Unspecified")
    x0, y0, x1, y1 = label.xyxy
    _text(obj, "truncated", int(x0 <= 0 or y0 <= 0 or x1 >= width or y1 >= height))
    _text(obj, "difficult", 0)
    box = ET.SubElement(obj, "bndbox")
    for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), voc_box(label.xyxy, width, height)):
        _text(box, tag, value)
    for part in label.polygons:
        polygon = ET.SubElement(obj, "polygon")
        for k, (x, y) in enumerate(np.asarray(part, dtype=np.float64).reshape(-1, 2), start=1):
            _text(polygon, f"x{k}", f"{x + 1:.2f}")
            _text(polygon, f"y{k}", f"{y + 1:.2f}")
    return obj


def voc_xml(item: ExportItem) -> bytes:
    """The annotation document of one exported image."""
    root = ET.Element("annotation")
    _text(root, "folder", IMAGE_DIR)
    _text(root, "filename", item.name)
    source = ET.SubElement(root, "source")
    _text(source, "database", "autolabel")
    size = ET.SubElement(root, "size")
    _text(size, "width", item.width)
    _text(size, "height", item.height)
    _text(size, "depth", 3)
    _text(root, "segmented", 0)
    for label in item.labels:
        root.append(voc_object(label, item.width, item.height))
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"


class VocWriter:
    index_name = SETS_DIR

    def __init__(self, store: Store, options: ExportOptions) -> None:
        self.ids: dict[str | None, list[str]] = {}

    def image_path(self, item: ExportItem) -> str:
        return f"{IMAGE_DIR}/{item.name}"

    def add(self, item: ExportItem, sink) -> list[str]:
        path = f"{ANNOTATION_DIR}/{item.stem}.xml"
        sink.write(path, voc_xml(item))
        self.ids.setdefault(item.split, []).append(item.stem)
        return [path]

    def finish(self, plan: ExportPlan, sink) -> list[str]:
        sink.write(LABELS_FILE, "".join(n + "\n" for n in plan.ontology.names).encode("utf-8"))
        sets = {("trainval" if split is None else split): self.ids.get(split, []) for split in plan.split_names}
        if "train" in sets and "val" in sets and "trainval" not in sets:
            sets["trainval"] = sorted(sets["train"] + sets["val"])
        written = [LABELS_FILE]
        for name, ids in sets.items():
            path = f"{SETS_DIR}/{name}.txt"
            sink.write(path, "".join(i + "\n" for i in ids).encode("utf-8"))
            written.append(path)
        return written
