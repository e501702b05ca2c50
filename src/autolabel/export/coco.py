"""COCO detection/segmentation export.

Layout: ``coco_export.json`` + ``images/<name>``. Category ids start at 1 in ontology order; image
ids follow source path order; annotation ids are sequential; ``bbox`` is ``[x, y, w, h]`` in the
exported image's pixels; ``area`` comes from the mask when there is one. Segmentations are polygons
(every part of the mask, holes cut in) or, with ``masks="rle"``, compressed RLE.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autolabel.errors import ConfigError
from autolabel.export.package import ImageSize, encode_image, export_names, open_sink
from autolabel.store import DetectionRecord, ImageRecord, Store

COCO_FILE = "coco_export.json"
MASK_FORMATS = ("polygon", "rle")


@dataclass
class ExportSummary:
    path: Path
    images: int = 0
    annotations: int = 0
    per_class: Counter = field(default_factory=Counter)


def _round(values, ndigits: int = 2) -> list[float]:
    return [round(float(v), ndigits) for v in values]


def coco_annotation(det: DetectionRecord, ann_id: int, image_id: int, category_id: int,
                    sx: float, sy: float, out_w: int, out_h: int, masks: str) -> dict:
    """One COCO annotation, with coordinates scaled by (sx, sy) into the exported image."""
    from autolabel.geometry import clip_boxes, mask_to_polygons, resize_rle, rle_area, rle_to_mask

    x0, y0, x1, y1 = clip_boxes(np.array([det.xyxy], dtype=np.float64) * [sx, sy, sx, sy], out_w, out_h)[0]
    ann = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": _round([x0, y0, x1 - x0, y1 - y0]),
        "area": round(float((x1 - x0) * (y1 - y0)), 2),
        "iscrowd": 0,
    }
    if det.rle is not None:
        rle = det.rle if (out_w, out_h) == (det.rle["size"][1], det.rle["size"][0]) else resize_rle(det.rle, out_w, out_h)
        ann["area"] = int(rle_area(rle))
        if masks == "rle":
            ann["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"]}
        else:
            ann["segmentation"] = [_round(poly) for poly in mask_to_polygons(rle_to_mask(rle))]
    else:
        ann["segmentation"] = []
    if det.score is not None:
        ann["score"] = round(float(det.score), 5)
    return ann


def export_coco(
    store: Store,
    out_dir: str | Path,
    *,
    image_size: str | ImageSize | None = None,
    masks: str = "polygon",
    zip_name: str | None = None,
    max_pixels: int = 178_956_970,
    on_progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Write the store's labels (rejected ones excluded) as a COCO dataset under ``out_dir``.

    With ``zip_name`` the same layout goes into ``out_dir/zip_name`` instead of loose files.
    """
    if masks not in MASK_FORMATS:
        raise ConfigError(f"masks must be one of {', '.join(MASK_FORMATS)}, got {masks!r}")
    size_spec = ImageSize.parse(image_size) if not isinstance(image_size, ImageSize) else image_size
    ontology = store.ontology
    category_ids = {name: i + 1 for i, name in enumerate(ontology.names)}
    records: list[ImageRecord] = list(store.images("done"))
    names = export_names([r.path for r in records])

    sink = open_sink(out_dir, zip_name)
    summary = ExportSummary(path=Path(out_dir) / (zip_name or COCO_FILE))
    images_json, annotations = [], []
    try:
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="export") as pool:
            for start in range(0, len(records), 32):
                chunk = records[start : start + 32]
                sizes = [size_spec.target(r.width, r.height) if size_spec else (r.width, r.height) for r in chunk]
                encoded = pool.map(lambda rs: encode_image(rs[0].path, rs[1], (rs[0].width, rs[0].height), max_pixels),
                                   zip(chunk, sizes))
                for offset, (record, (out_w, out_h), data) in enumerate(zip(chunk, sizes, encoded)):
                    image_id = start + offset + 1
                    name = names[record.path]
                    sink.write(f"images/{name}", data)
                    images_json.append({"id": image_id, "file_name": name, "width": out_w, "height": out_h})
                    sx, sy = out_w / record.width, out_h / record.height
                    for det in store.detections(record.id):
                        if det.class_name not in category_ids:
                            continue
                        annotations.append(coco_annotation(det, len(annotations) + 1, image_id,
                                                           category_ids[det.class_name], sx, sy, out_w, out_h, masks))
                        summary.per_class[det.class_name] += 1
                if on_progress:
                    on_progress(len(chunk))
        document = {
            "info": {"description": "autolabel export", "version": "1.0"},
            "licenses": [],
            "images": images_json,
            "annotations": annotations,
            "categories": [{"id": category_ids[n], "name": n, "supercategory": "object"} for n in ontology.names],
        }
        sink.write(COCO_FILE, json.dumps(document, separators=(",", ":")).encode())
        sink.close()
    except BaseException:
        if hasattr(sink, "abort"):
            sink.abort()
        raise
    summary.images = len(images_json)
    summary.annotations = len(annotations)
    return summary
