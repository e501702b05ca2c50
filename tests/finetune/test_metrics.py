"""Validation mAP (through autolabel.evaluation) on hand-made predictions."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.detections import Detections
from autolabel.finetune.data import Dataset, Example
from autolabel.finetune.metrics import coco_map
from autolabel.geometry import Size
from autolabel.importers.dataset import human_labels
from autolabel.ontology import Ontology

EXAMPLES = Dataset((
    Example("a.png", Size(100, 100), human_labels([[10, 10, 50, 50], [60, 60, 90, 90]], [0, 1])),
    Example("b.png", Size(80, 60), human_labels(np.zeros((0, 4)), [])),
), Ontology.from_classes(["cat", "dog"]))


def _dets(boxes, scores, classes):
    n = len(scores)
    return Detections(np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(scores), np.array(classes),
                      np.zeros(n))


def test_perfect_predictions_score_one_and_none_score_zero():
    perfect = [_dets([[10, 10, 50, 50], [60, 60, 90, 90]], [0.9, 0.8], [0, 1]), Detections.empty()]
    result = coco_map(EXAMPLES, perfect, ["cat", "dog"])
    assert result["map"] == pytest.approx(1.0)
    assert result["per_class"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)}
    nothing = coco_map(EXAMPLES, [Detections.empty(), Detections.empty()], ["cat", "dog"])
    assert nothing["map"] == 0.0 and nothing["map50"] == 0.0


def test_wrong_class_and_false_positives_lower_the_score():
    # The dog is called a cat; a confident false positive on the empty image.
    preds = [_dets([[10, 10, 50, 50], [60, 60, 90, 90]], [0.9, 0.8], [0, 0]), _dets([[0, 0, 20, 20]], [0.95], [0])]
    result = coco_map(EXAMPLES, preds, ["cat", "dog", "bird"])
    assert result["per_class"]["dog"] == 0.0 and 0.0 < result["per_class"]["cat"] < 1.0
    assert "bird" not in result["per_class"]  # no ground truth: not part of the mean
    assert result["map"] == pytest.approx((result["per_class"]["cat"] + 0.0) / 2)


def test_ground_truth_is_matched_to_the_predicted_classes_by_name():
    # The validation data names its classes in another order and has one the model does not predict.
    other_order = Dataset(EXAMPLES.examples, Ontology.from_classes(["dog", "cat"]))
    preds = [_dets([[10, 10, 50, 50], [60, 60, 90, 90]], [0.9, 0.8], [1, 0]), Detections.empty()]
    result = coco_map(other_order, preds, ["cat"])
    assert result["per_class"] == {"cat": pytest.approx(1.0)} and result["map"] == pytest.approx(1.0)
