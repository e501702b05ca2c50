"""COCO metrics with pycocotools' ``COCOeval`` on in-memory label sets.

Ground truth and predictions are turned into COCO dicts (one image id per paired image, category
ids ``1..K`` over the evaluated classes, boxes ``[x, y, w, h]`` in original oriented pixels) and
evaluated with the standard parameters: IoU 0.50:0.05:0.95, area ``all``, at most 100 detections per
image (the highest scoring). Ground-truth ``area`` is the mask area when there is a mask (as in COCO),
else the box area.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

from autolabel.evaluation.sources import LabelImage


@dataclass(frozen=True)
class CocoMetrics:
    """mAP@[.5:.95], AP50, AP75 over classes with ground truth, and the same per class (None: no
    ground truth for that class). ``stats`` are COCOeval's 12 summary numbers."""

    map: float | None
    ap50: float | None
    ap75: float | None
    per_class: dict[str, tuple[float | None, float | None, float | None]]
    stats: tuple[float, ...]


def _xywh(xyxy) -> list[float]:
    x0, y0, x1, y1 = map(float, xyxy)
    return [x0, y0, x1 - x0, y1 - y0]


def _value(x: float) -> float | None:
    return None if x < 0 else float(x)


def coco_metrics(pairs: list[tuple[LabelImage, LabelImage]], classes: list[str], iou_type: str = "bbox") -> CocoMetrics:
    """Evaluate paired images (ground truth, prediction) on ``classes`` (matched by name).

    ``iou_type``: ``bbox`` or ``segm`` (every label on both sides must then have a mask).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from autolabel.geometry import rle_area

    cat = {name: i + 1 for i, name in enumerate(classes)}
    images = [{"id": i + 1, "width": g.width, "height": g.height} for i, (g, _) in enumerate(pairs)]
    categories = [{"id": cat[n], "name": n} for n in classes]
    gt_anns, dt_anns = [], []
    for image_id, (g, p) in enumerate(pairs, start=1):
        for box in g.boxes:
            if box.class_name not in cat:
                continue
            ann = {"id": len(gt_anns) + 1, "image_id": image_id, "category_id": cat[box.class_name],
                   "bbox": _xywh(box.xyxy), "iscrowd": int(box.iscrowd)}
            ann["area"] = float(rle_area(box.rle)) if box.rle is not None else ann["bbox"][2] * ann["bbox"][3]
            if iou_type == "segm":
                ann["segmentation"] = box.rle
            gt_anns.append(ann)
        for box in p.boxes:
            if box.class_name not in cat:
                continue
            ann = {"id": len(dt_anns) + 1, "image_id": image_id, "category_id": cat[box.class_name],
                   "bbox": _xywh(box.xyxy), "score": float(box.score), "iscrowd": 0}
            if iou_type == "segm":
                ann["segmentation"] = box.rle
                ann["area"] = float(rle_area(box.rle))
            else:
                ann["area"] = ann["bbox"][2] * ann["bbox"][3]
            dt_anns.append(ann)

    def coco(anns: list[dict]) -> COCO:
        c = COCO()
        c.dataset = {"images": images, "categories": categories, "annotations": anns}
        with contextlib.redirect_stdout(io.StringIO()):
            c.createIndex()
        return c

    evaluator = COCOeval(coco(gt_anns), coco(dt_anns), iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]; area 'all' = 0, maxDets 100 = -1
    per_class = {}
    for k, name in enumerate(classes):
        p = precision[:, :, k, 0, -1]
        valid = p[p > -1]
        if valid.size == 0:
            per_class[name] = (None, None, None)
            continue
        ap = float(valid.mean())
        ap50 = float(p[0][p[0] > -1].mean()) if (p[0] > -1).any() else None
        ap75 = float(p[5][p[5] > -1].mean()) if (p[5] > -1).any() else None
        per_class[name] = (ap, ap50, ap75)
    stats = tuple(float(s) for s in evaluator.stats)
    return CocoMetrics(_value(stats[0]), _value(stats[1]), _value(stats[2]), per_class, stats)


def has_masks(pairs: list[tuple[LabelImage, LabelImage]], classes: list[str]) -> bool:
    """Whether mask AP is possible: every label of the evaluated classes, on both sides, has a mask
    (and there is ground truth)."""
    wanted = set(classes)
    gt = [b for g, _ in pairs for b in g.boxes if b.class_name in wanted]
    pred = [b for _, p in pairs for b in p.boxes if b.class_name in wanted]
    return bool(gt) and all(b.rle is not None for b in gt + pred)
