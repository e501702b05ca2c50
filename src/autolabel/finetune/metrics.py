"""Validation mAP during fine-tuning, by the evaluation's pycocotools set-up (as ``autolabel eval``):
IoU .50:.05:.95, area ``all``, the 100 best detections per image, in original oriented pixels."""

from __future__ import annotations

import numpy as np


def coco_map(data, predictions, class_names: list[str], max_dets: int = 100) -> dict:
    """mAP@[.5:.95], mAP@.5, mAP@.75 and per-class AP of ``predictions`` (one ``Detections`` per
    example of the ``Dataset`` ``data``; class ids index ``class_names``) against its labels.

    Returns {"map", "map50", "map75": float in [0, 1], "per_class": {name: AP}}; classes without
    ground truth are left out of the mean and of ``per_class`` (COCO's rule); 0.0 when undefined.
    """
    from autolabel.evaluation.cocoeval import coco_metrics
    from autolabel.evaluation.sources import LabelImage, LabelSet

    if len(data.examples) != len(predictions):
        raise ValueError(f"{len(data.examples)} examples but {len(predictions)} predictions")
    truth = LabelSet(data.ontology.names, [LabelImage(e.path, *e.size, None, e.labels) for e in data.examples],
                     data.description).for_classes(list(class_names))
    best = [dets[np.argsort(-dets.scores, kind="stable")[:max_dets]] for dets in predictions]
    pairs = [(gt, LabelImage(gt.path, gt.width, gt.height, None, p)) for gt, p in zip(truth.images, best)]
    metrics = coco_metrics(pairs, list(class_names))
    return {
        "map": metrics.map or 0.0,
        "map50": metrics.ap50 or 0.0,
        "map75": metrics.ap75 or 0.0,
        "per_class": {name: ap for name, (ap, _, _) in metrics.per_class.items() if ap is not None},
    }
