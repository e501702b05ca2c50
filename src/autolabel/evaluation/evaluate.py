"""``evaluate_run``: a run's labels against ground truth, with per-class threshold calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autolabel.errors import ConfigError
from autolabel.evaluation.calibration import Matches, best_f1, for_precision, match_image, pr_curve
from autolabel.evaluation.cocoeval import coco_metrics, has_masks
from autolabel.evaluation.result import ClassResult, EvalResult
from autolabel.evaluation.sources import LabelSet, from_path, from_store, pair_images
from autolabel.evaluation.stability import ORDERS, prefix_thresholds, review_order, stable_after
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
    model_only: bool = False,
    order: str = "review",
) -> EvalResult:
    """Evaluate the labels of ``store`` (rejected ones excluded; human labels score 1.0) against ``gt``.

    ``gt``: a COCO ``.json`` (images under ``gt_images``, default next to it), a YOLO ``data.yaml``,
    a run folder or open :class:`Store` (its reviewed images), or a :class:`LabelSet`; ``gt_format``
    when the path does not tell. ``iou``: for precision, recall and the calibrated thresholds (COCO AP
    always uses 0.50:0.95). ``target_precision``: also find each class's lowest threshold reaching it.
    Classes are matched by name; images by path, then by content hash (``missing``: the others).
    ``model_only``: score what the model predicted, before any review edit. ``order`` (``review``
    or ``path``): the order of the images for ``ClassResult.stable_after`` (``evaluation.stability``).
    """
    if not 0.0 < iou <= 1.0:
        raise ConfigError(f"--iou must be in (0, 1], got {iou}")
    if target_precision is not None and not 0.0 < target_precision <= 1.0:
        raise ConfigError(f"--target-precision must be in (0, 1], got {target_precision}")
    if order not in ORDERS:
        raise ConfigError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    if isinstance(gt, Store):
        truth = from_store(gt, ground_truth=True)
    elif isinstance(gt, LabelSet):
        truth = gt
    else:
        truth = from_path(gt, gt_images, gt_format)
    pred = from_store(store, ground_truth=False, model_only=model_only)
    classes = [name for name in pred.classes if name in truth.classes]
    if not classes:
        raise ConfigError(f"the run and the ground truth share no class name: run has {', '.join(pred.classes)}; "
                          f"ground truth has {', '.join(truth.classes)}")
    pairs, missing = pair_images(truth.for_classes(classes), pred.for_classes(classes))
    if not pairs:
        raise ConfigError(f"none of the {len(truth.images)} ground-truth images is labelled in {store.run_dir} "
                          "(images are matched by path, then by file content)")

    order_ids = _image_order(store, pred if model_only else None, [p.path for _, p in pairs], order)
    box_metrics = coco_metrics(pairs, classes, "bbox")
    segm = coco_metrics(pairs, classes, "segm") if has_masks(pairs) else None
    results = []
    for k, name in enumerate(classes):
        parts = []
        for g, p in pairs:
            preds, gts, crowd = (det[det.class_ids == k] for det in (p.labels, g.labels, g.crowd))
            parts.append(match_image(preds.xyxy, preds.scores, np.concatenate([gts.xyxy, crowd.xyxy]),
                                     np.arange(len(gts) + len(crowd)) >= len(gts), iou))
        matches = Matches.merge(parts)
        floor = pred.threshold_floor.get(name, 0.0)
        curve = pr_curve(matches, floor)
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
            matches, curve, stable_after(prefix_thresholds([parts[i] for i in order_ids], floor, target_precision))))
    return EvalResult(
        run=str(store.run_dir), ground_truth=truth.description, images=len(pairs), missing=missing,
        classes=results, map=box_metrics.map, ap50=box_metrics.ap50, ap75=box_metrics.ap75,
        segm_map=segm.map if segm else None, iou=float(iou), target_precision=target_precision,
        order=order, gt_only_classes=[n for n in truth.classes if n not in classes],
        run_only_classes=[n for n in pred.classes if n not in classes],
    )


def _image_order(store: Store, model: LabelSet | None, paths: list[str], order: str) -> list[int]:
    """Indices of the paired predictions ``paths`` in ``order``. Review order ranks what the model
    predicted (``model``, read from ``store`` when not given): what the queue showed before review."""
    if order == "path":
        return sorted(range(len(paths)), key=paths.__getitem__)
    if model is None:
        model = from_store(store, ground_truth=False, model_only=True)
    by_path = {im.path: im for im in model.images}
    return review_order([by_path[p] for p in paths], store.ontology, model.threshold_floor)
