"""The validator: when it runs, and that it scores the predictions against the validation boxes
with the model in eval mode, leaving the model's mode as it found it."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from autolabel.detections import Detections
from autolabel.finetune import validate
from autolabel.finetune.data import Dataset, Example
from autolabel.finetune.validate import Validator
from autolabel.geometry import Size
from autolabel.importers.dataset import human_labels
from autolabel.ontology import Ontology


def _dataset() -> Dataset:
    examples = (Example("/a.jpg", Size(100, 100), human_labels([[10, 10, 40, 40]], [0])),
                Example("/b.jpg", Size(100, 100), human_labels([[50, 20, 90, 70]], [1])))
    return Dataset(examples, Ontology.from_classes(["cat", "dog"]))


@pytest.mark.parametrize("every, steps, due", [
    (2, 5, [2, 4, 5]),  # every 2 steps, and always at the end
    (0, 5, [5]),  # 0: only at the end
    (5, 5, [5]),
])
def test_due_every_n_steps_and_at_the_end(every, steps, due):
    validator = Validator(_dataset(), _dataset().ontology, None, every=every, steps=steps)
    assert [s for s in range(1, steps + 1) if validator.due(s)] == due


def test_measure_scores_the_predictions_in_eval_mode(monkeypatch):
    data = _dataset()
    model = torch.nn.Linear(1, 1).train()
    modes = []

    def perfect(detector, examples, ontology, **kwargs):
        modes.append(detector.model.training)
        return [Detections(e.labels.xyxy, np.ones(len(e.labels)), e.labels.class_ids, np.zeros(len(e.labels)))
                for e in examples]

    monkeypatch.setattr(validate, "predict_examples", perfect)
    validator = Validator(data, data.ontology, types.SimpleNamespace(model=model), every=1, steps=1)
    metrics = validator.measure()
    assert modes == [False] and model.training
    assert metrics["map"] == pytest.approx(1.0) and set(metrics["per_class"]) == {"cat", "dog"}
