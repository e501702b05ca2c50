"""COCO metrics with pycocotools' ``COCOeval`` on in-memory label sets (standard parameters: IoU
0.50:0.05:0.95, area ``all``, 100 detections per image). Ground-truth ``area`` is the mask's when
there is one, as in COCO. The summary numbers are computed from ``COCOeval.eval["precision"]``
exactly as ``COCOeval.summarize`` does, without its printing.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import numpy as np

from autolabel.detections import Detections
from autolabel.evaluation.sources import LabelImage

_SILENCE_LOCK = threading.Lock()
_silenced = 0


@contextlib.contextmanager
def _silenced_pycocotools():
    """pycocotools prints progress from createIndex/evaluate/accumulate and has no switch for it.
    A module global named ``print`` shadows the builtin inside its two modules only, so nothing is
    printed and ``sys.stdout`` is never swapped (other threads' output is untouched); a count keeps
    overlapping evaluations (UI threads) from lifting the shadow early."""
    from pycocotools import coco, cocoeval

    global _silenced
    with _SILENCE_LOCK:
        _silenced += 1
        for module in (coco, cocoeval):
            module.print = lambda *args, **kwargs: None
    try:
        yield
    finally:
        with _SILENCE_LOCK:
            _silenced -= 1
            if not _silenced:
                for module in (coco, cocoeval):
                    del module.print


@dataclass(frozen=True)
class CocoMetrics:
    """mAP@[.5:.95], AP50, AP75 over classes with ground truth, and the same per class (None: no
    ground truth for that class)."""

    map: float | None
    ap50: float | None
    ap75: float | None
    per_class: dict[str, tuple[float | None, float | None, float | None]]


def _annotations(labels: Detections, image_id: int, first_id: int, *, iscrowd: bool, ground_truth: bool,
                 segm: bool) -> list[dict]:
    from autolabel.geometry import rle_area

    anns = []
    for i, (x0, y0, x1, y1) in enumerate(labels.xyxy.tolist()):
        rle = labels.masks[i] if labels.masks is not None else None
        ann = {"id": first_id + i, "image_id": image_id, "category_id": int(labels.class_ids[i]) + 1,
               "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": int(iscrowd)}
        if not ground_truth:
            ann["score"] = float(labels.scores[i])
        if segm:
            ann["segmentation"] = rle
        ann["area"] = float(rle_area(rle)) if rle is not None and (segm or ground_truth) else (x1 - x0) * (y1 - y0)
        anns.append(ann)
    return anns


def _mean_precision(precision: np.ndarray, iou_thresholds: np.ndarray, iou: float | None) -> float | None:
    """``COCOeval.summarize``'s AP: the mean of the defined precisions (area ``all``, 100 detections)."""
    values = precision[..., 0, -1]  # [T, R, K]
    if iou is not None:
        values = values[iou_thresholds == iou]
    values = values[values > -1]
    return float(values.mean()) if values.size else None


def coco_metrics(pairs: list[tuple[LabelImage, LabelImage]], classes: list[str], iou_type: str = "bbox") -> CocoMetrics:
    """Evaluate paired images (ground truth, prediction) whose class ids index ``classes``.

    ``iou_type``: ``bbox`` or ``segm`` (every label on both sides must then have a mask).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    segm = iou_type == "segm"
    images = [{"id": i + 1, "width": g.width, "height": g.height} for i, (g, _) in enumerate(pairs)]
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(classes)]
    gt_anns, dt_anns = [], []
    for image_id, (g, p) in enumerate(pairs, start=1):
        for labels, crowd in ((g.labels, False), (g.crowd, True)):
            gt_anns += _annotations(labels, image_id, len(gt_anns) + 1, iscrowd=crowd, ground_truth=True, segm=segm)
        dt_anns += _annotations(p.labels, image_id, len(dt_anns) + 1, iscrowd=False, ground_truth=False, segm=segm)

    def coco(anns: list[dict]) -> COCO:
        c = COCO()
        c.dataset = {"images": images, "categories": categories, "annotations": anns}
        c.createIndex()
        return c

    with _silenced_pycocotools():
        evaluator = COCOeval(coco(gt_anns), coco(dt_anns), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    thresholds = evaluator.params.iouThrs
    per_class = {}
    for k, name in enumerate(classes):
        class_precision = precision[:, :, k : k + 1]
        ap = _mean_precision(class_precision, thresholds, None)
        per_class[name] = (ap, _mean_precision(class_precision, thresholds, 0.5),
                           _mean_precision(class_precision, thresholds, 0.75)) if ap is not None else (None, None, None)
    return CocoMetrics(_mean_precision(precision, thresholds, None), _mean_precision(precision, thresholds, 0.5),
                       _mean_precision(precision, thresholds, 0.75), per_class)


def has_masks(pairs: list[tuple[LabelImage, LabelImage]]) -> bool:
    """Whether mask AP is possible: there is ground truth and every label on both sides has a mask."""
    sides = [det for g, p in pairs for det in (g.labels, g.crowd, p.labels) if len(det)]
    return any(len(g.labels) + len(g.crowd) for g, _ in pairs) and all(
        det.masks is not None and all(m is not None for m in det.masks) for det in sides)
