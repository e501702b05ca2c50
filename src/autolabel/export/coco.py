"""COCO detection/segmentation export.

Layout: ``coco_export.json`` + ``images/<name>``; with ``--split``, ``annotations/instances_<split>.json``
and ``images/<split>/`` (the COCO 2017 layout Detectron2 and MMDetection expect). Category ids start
at 1 in ontology order; image ids follow path order, unique across splits. ``bbox`` is ``[x, y, w, h]``
in exported pixels (6 decimals); ``area`` is the mask's when there is one; segmentations are polygons
(every part, holes cut in) or compressed RLE. Model labels carry ``score``.
"""

from __future__ import annotations

from autolabel.export.items import ExportItem, ExportLabel, ExportOptions, ExportPlan
from autolabel.export.package import json_bytes
from autolabel.store import Store

COCO_FILE = "coco_export.json"

__all__ = ["COCO_FILE", "CocoWriter", "coco_annotation", "split_file"]


def _round(values, ndigits: int = 2) -> list[float]:
    return [round(float(v), ndigits) for v in values]


def split_file(split: str | None) -> str:
    """The annotation file of a split (``None``: the unsplit export)."""
    return COCO_FILE if split is None else f"annotations/instances_{split}.json"


def coco_annotation(label: ExportLabel, ann_id: int, image_id: int, masks: str) -> dict:
    """One COCO annotation (coordinates already in the exported image's pixels); ``masks="rle"``
    writes the mask as RLE, anything else as polygons."""
    x0, y0, x1, y1 = label.xyxy
    ann = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": label.class_index + 1,
        "bbox": _round([x0, y0, x1 - x0, y1 - y0], 6),
        "area": round(float((x1 - x0) * (y1 - y0)), 2),
        "iscrowd": 0,
    }
    if label.rle is not None:
        from autolabel.geometry import rle_area

        ann["area"] = rle_area(label.rle)
        if masks == "rle":
            ann["segmentation"] = {"size": list(label.rle["size"]), "counts": label.rle["counts"]}
        else:
            ann["segmentation"] = [_round(poly) for poly in label.polygons]
    else:
        ann["segmentation"] = []
    if label.score is not None:
        ann["score"] = round(float(label.score), 5)
    return ann


class CocoWriter:
    def __init__(self, store: Store, options: ExportOptions):
        self.masks = options.masks
        self.index_name = COCO_FILE if options.split is None else "annotations"
        self.images: dict[str | None, list[dict]] = {}
        self.annotations: dict[str | None, list[dict]] = {}
        self.next_ann_id = 1

    def image_path(self, item: ExportItem) -> str:
        return f"images/{item.name}" if item.split is None else f"images/{item.split}/{item.name}"

    def add(self, item: ExportItem, sink) -> list[str]:
        self.images.setdefault(item.split, []).append(
            {"id": item.image_id, "file_name": item.name, "width": item.width, "height": item.height})
        anns = self.annotations.setdefault(item.split, [])
        for label in item.labels:
            anns.append(coco_annotation(label, self.next_ann_id, item.image_id, self.masks))
            self.next_ann_id += 1
        return []

    def finish(self, plan: ExportPlan, sink) -> list[str]:
        categories = [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(plan.ontology.names)]
        written = []
        for split in plan.split_names:  # every split gets its file, even an empty one
            document = {
                "info": {"description": "autolabel export", "version": "1.0"},
                "licenses": [],
                "images": self.images.get(split, []),
                "annotations": self.annotations.get(split, []),
                "categories": categories,
            }
            sink.write(split_file(split), json_bytes(document))
            written.append(split_file(split))
        return written

