"""``evaluate_run``: a run's labels against ground truth, with per-class threshold calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autolabel.errors import ConfigError
from autolabel.evaluation.calibration import Matches, best_f1, for_precision, match_image, pr_curve
from autolabel.evaluation.cocoeval import coco_metrics, has_masks
from autolabel.evaluation.result import ClassResult, EvalResult
from autolabel.evaluation.sources import LabelSet, from_path, from_store, pair_images
from autolabel.store import Store

#: IoU at which precision, recall and the calibrated thresholds are computed by default.
DEFAULT_IOU = 0.5


def evaluate_run(
    store: Store,
    gt: "Store | LabelSet | str | Path",
    *,
    iou: float = DEFAULT_IOU,
    target_precision: float | None = None,
    gt_images: str | Path | None = None,
    gt_format: str | None = None,
) -> EvalResult:
    """Evaluate the labels of ``store`` against ground truth ``gt``.

    Args:
        store: the run to evaluate (its labels, rejected ones excluded; human labels score 1.0).
        gt: a COCO ``.json``, a YOLO ``data.yaml``, a run folder or an open :class:`Store` (its
            reviewed images: all of an imported run), or a ready :class:`LabelSet`.
        iou: IoU at which precision, recall and the calibrated thresholds are computed (COCO AP
            always uses 0.50:0.95).
        target_precision: also find, per class, the lowest threshold with at least this precision.
        gt_images: image folder of a COCO ``gt`` (default: next to the JSON).
        gt_format: ``coco`` or ``yolo`` when the path does not tell.

    Classes are matched by name; only classes both sides have are evaluated. Images are paired by
    path, then by content hash; ground-truth images the run lacks are listed in ``missing``.
    All coordinates are original oriented pixels on both sides.
    """
    if not 0.0 < iou <= 1.0:
        raise ConfigError(f"--iou must be in (0, 1], got {iou}")
    if target_precision is not None and not 0.0 < target_precision <= 1.0:
        raise ConfigError(f"--target-precision must be in (0, 1], got {target_precision}")
    if isinstance(gt, Store):
        truth = from_store(gt, ground_truth=True)
    elif isinstance(gt, LabelSet):
        truth = gt
    else:
        truth = from_path(gt, gt_images, gt_format)
    pred = from_store(store, ground_truth=False)
    classes = [name for name in pred.classes if name in truth.classes]
    if not classes:
        raise ConfigError(f"the run and the ground truth share no class name: run has {', '.join(pred.classes)}; "
                          f"ground truth has {', '.join(truth.classes)}")
    pairing = pair_images(truth.for_classes(classes), pred.for_classes(classes))
    if not pairing.pairs:
        raise ConfigError(f"none of the {len(truth.images)} ground-truth images is labelled in {store.run_dir} "
                          "(images are matched by path, then by file content)")

    box_metrics = coco_metrics(pairing.pairs, classes, "bbox")
    segm = coco_metrics(pairing.pairs, classes, "segm") if has_masks(pairing.pairs) else None
    results = []
    for k, name in enumerate(classes):
        parts = []
        for g, p in pairing.pairs:
            preds, gts, crowd = (det[det.class_ids == k] for det in (p.labels, g.labels, g.crowd))
            parts.append(match_image(preds.xyxy, preds.scores, np.concatenate([gts.xyxy, crowd.xyxy]),
                                     np.arange(len(gts) + len(crowd)) >= len(gts), iou))
        matches = Matches.merge(parts)
        curve = pr_curve(matches, pred.threshold_floor.get(name, 0.0))
        tp = int(matches.tp.sum())
        n = len(matches.scores)
        precision = tp / n if n else None
        recall = tp / matches.n_gt if matches.n_gt else None
        f1 = (2 * precision * recall / (precision + recall) if precision + recall else 0.0) \
            if precision is not None and recall is not None else None
        ap, ap50, ap75 = box_metrics.per_class[name]
        results.append(ClassResult(
            name, matches.n_gt, n, ap, ap50, ap75, segm.per_class[name][0] if segm else None,
            precision, recall, f1, best_f1(curve),
            for_precision(curve, target_precision) if target_precision is not None else None,
            matches, curve))
    return EvalResult(
        run=str(store.run_dir), ground_truth=truth.description, images=len(pairing.pairs), missing=pairing.missing,
        classes=results, map=box_metrics.map, ap50=box_metrics.ap50, ap75=box_metrics.ap75,
        segm_map=segm.map if segm else None, iou=float(iou), target_precision=target_precision,
        gt_only_classes=[n for n in truth.classes if n not in classes],
        run_only_classes=[n for n in pred.classes if n not in classes],
    )


def score_histogram(matches: Matches, bins: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, true-positive counts, false-positive counts) of a class's scores on [0, 1]."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    tp, _ = np.histogram(matches.scores[matches.tp], edges)
    fp, _ = np.histogram(matches.scores[~matches.tp], edges)
    return edges, tp, fp
