"""Validation mAP during fine-tuning, through the evaluation code (``autolabel.evaluation``).

The examples (ground truth) and the model's ``Detections`` are turned into the evaluation's label
sets and scored by the same pycocotools ``COCOeval`` set-up as ``autolabel eval``: IoU .50:.05:.95,
area ``all``, the 100 best detections per image. Both sides are in the examples' frame (oriented
original pixels), so nothing is rescaled here.
"""

from __future__ import annotations

import numpy as np


def coco_map(examples, predictions, class_names: list[str], max_dets: int = 100) -> dict:
    """mAP@[.5:.95], mAP@.5, mAP@.75 and per-class AP of ``predictions`` (one ``Detections`` per
    example; class ids index ``class_names``) against the examples' boxes.

    Returns {"map", "map50", "map75": float in [0, 1], "per_class": {name: AP}}; classes without
    ground truth are left out of the mean and of ``per_class`` (COCO's rule); 0.0 when undefined.
    """
    from autolabel.detections import NO_PROMPT, Detections
    from autolabel.evaluation.cocoeval import coco_metrics
    from autolabel.evaluation.sources import LabelImage

    if len(examples) != len(predictions):
        raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
    pairs = []
    for ex, dets in zip(examples, predictions):
        n = len(ex.boxes)
        truth = Detections(ex.boxes, np.full(n, np.nan), [class_names.index(c) for c in ex.classes],
                           np.full(n, NO_PROMPT), sources=["human"] * n)
        best = dets[np.argsort(-dets.scores, kind="stable")[:max_dets]]
        pairs.append((LabelImage(ex.path, ex.width, ex.height, None, truth),
                      LabelImage(ex.path, ex.width, ex.height, None, best)))
    metrics = coco_metrics(pairs, list(class_names))
    return {
        "map": metrics.map or 0.0,
        "map50": metrics.ap50 or 0.0,
        "map75": metrics.ap75 or 0.0,
        "per_class": {name: ap for name, (ap, _, _) in metrics.per_class.items() if ap is not None},
    }
