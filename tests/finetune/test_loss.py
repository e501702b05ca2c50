"""The OWLv2 detection loss: matcher on hand-made cases, exact values, gradients into the heads."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from autolabel.finetune.loss import LossWeights, Target, detection_loss, generalized_box_iou, hungarian_match

W = LossWeights()


def _t(boxes, labels):
    return Target(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.int64))


def test_giou_known_values():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0],  # identical: 1
                      [0.5, 0.0, 1.5, 1.0],  # iou 1/3, hull = union: 1/3
                      [2.0, 0.0, 3.0, 1.0]])  # disjoint: iou 0, hull 3, union 2 -> -1/3
    torch.testing.assert_close(generalized_box_iou(a, b)[0], torch.tensor([1.0, 1 / 3, -1 / 3]), atol=1e-5, rtol=0)
    point = torch.tensor([[0.5, 0.5, 0.5, 0.5]])  # zero-size boxes stay finite
    assert torch.isfinite(generalized_box_iou(point, point)).all()


def test_matcher_pairs_each_target_with_its_nearest_prediction():
    # Three predictions, two targets; the boxes alone decide (class logits equal).
    pred = torch.tensor([[0.8, 0.8, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1]])
    logits = torch.zeros(3, 2)
    target = _t([[0.21, 0.2, 0.2, 0.2], [0.79, 0.8, 0.2, 0.2]], [0, 1])
    pred_idx, tgt_idx = hungarian_match(logits, pred, target, W)
    assert tgt_idx.tolist() == [0, 1]
    assert pred_idx.tolist() == [1, 0]


def test_matcher_class_score_breaks_a_tie_between_identical_boxes():
    box = [0.5, 0.5, 0.3, 0.3]
    pred = torch.tensor([box, box])
    # Prediction 1 is confident for query 1 and prediction 0 for query 0.
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])
    pred_idx, tgt_idx = hungarian_match(logits, pred, _t([box], [1]), W)
    assert pred_idx.tolist() == [1] and tgt_idx.tolist() == [0]
    pred_idx, _ = hungarian_match(logits, pred, _t([box], [0]), W)
    assert pred_idx.tolist() == [0]


def test_matcher_is_one_to_one_and_handles_empty_and_crowded_images():
    pred = torch.tensor([[0.5, 0.5, 0.2, 0.2]] * 2)
    # No targets: no matches.
    p, t = hungarian_match(torch.zeros(2, 1), pred, _t([], []), W)
    assert len(p) == len(t) == 0
    # More targets than predictions: each prediction is used once.
    p, t = hungarian_match(torch.zeros(2, 1), pred, _t([[0.5, 0.5, 0.2, 0.2]] * 3, [0, 0, 0]), W)
    assert len(p) == 2 and len(set(p.tolist())) == 2 and len(set(t.tolist())) == 2


def test_perfect_predictions_give_zero_box_loss_and_small_class_loss():
    targets = [_t([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.1]], [0, 1]), _t([], [])]
    pred_boxes = torch.full((2, 4, 4), 0.1)
    pred_boxes[:, :, :2] = torch.tensor([[0.1, 0.9], [0.9, 0.1], [0.5, 0.5], [0.9, 0.9]])  # decoys far away
    pred_boxes[0, 1] = targets[0].boxes[0]
    pred_boxes[0, 3] = targets[0].boxes[1]
    logits = torch.full((2, 4, 3), -12.0)
    logits[0, 1, 0] = 12.0
    logits[0, 3, 1] = 12.0
    mask = torch.ones(2, 3, dtype=torch.bool)
    out = detection_loss(logits, pred_boxes, targets, mask, W)
    assert float(out.l1) < 1e-6 and float(out.giou) < 1e-4  # eps in the IoU division
    assert float(out.classification) < 1e-6
    # A wrong class on the matched prediction costs a lot more.
    wrong = logits.clone()
    wrong[0, 1, 0], wrong[0, 1, 2] = -12.0, 12.0
    assert float(detection_loss(wrong, pred_boxes, targets, mask, W).classification) > 1.0


def test_unmatched_predictions_are_pushed_to_zero_and_padding_queries_are_ignored():
    pred_boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])
    confident = torch.tensor([[[8.0, 8.0]]])
    # No boxes: a confident prediction is a false positive for both queries.
    out = detection_loss(confident, pred_boxes, [_t([], [])], torch.tensor([[True, True]]), W)
    expected = sigmoid_focal_loss(confident, torch.zeros_like(confident), W.focal_alpha, W.focal_gamma).sum()
    torch.testing.assert_close(out.classification, expected)
    # With query 1 marked as padding (finfo.min logit from the class head), only query 0 counts.
    padded = torch.tensor([[[8.0, torch.finfo(torch.float32).min]]], requires_grad=True)
    out = detection_loss(padded, pred_boxes, [_t([], [])], torch.tensor([[True, False]]), W)
    torch.testing.assert_close(out.classification, expected / 2)
    out.total.backward()
    assert torch.isfinite(padded.grad).all() and padded.grad[0, 0, 1] == 0


def test_loss_gradient_flows_into_the_heads(owlv2_128):
    from transformers import Owlv2ForObjectDetection

    from autolabel.finetune.model import encode_images, encode_queries, gather_queries, predict, set_trainable
    from autolabel.models.owlv2 import Owlv2Detector

    detector = Owlv2Detector.from_pretrained(str(owlv2_128))
    model: Owlv2ForObjectDetection = detector.model.train()
    groups = set_trainable(model, {"heads", "vision", "text"})
    pixel_values = torch.randn(2, 3, 128, 128)
    feats, fmap = encode_images(model, pixel_values)
    embeds = encode_queries(model, detector.processor.tokenizer, ["square", "circle", "dog"], "cpu")
    query_embeds, mask = gather_queries(embeds, [[0, 1, 2], [1, 2]])
    logits, boxes = predict(model, feats, fmap, query_embeds, mask)
    assert logits.shape == (2, 64, 3) and boxes.shape == (2, 64, 4)
    targets = [_t([[0.3, 0.3, 0.2, 0.2]], [0]), _t([[0.6, 0.5, 0.3, 0.4]], [0])]
    out = detection_loss(logits, boxes, targets, mask, W)
    out.total.backward()
    for name in ("class_head.dense0.weight", "class_head.logit_shift.weight", "class_head.logit_scale.weight",
                 "box_head.dense0.weight", "box_head.dense2.weight", "layer_norm.weight",
                 "owlv2.vision_model.encoder.layers.0.self_attn.q_proj.weight",
                 "owlv2.text_model.encoder.layers.0.self_attn.q_proj.weight", "owlv2.text_projection.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    # Parts detection never uses are frozen.
    assert not model.objectness_head.dense0.weight.requires_grad
    assert {g for g, items in groups.items() if items} == {"heads", "vision", "text"}


@pytest.mark.parametrize("bad", [
    # labels beyond the query list
    lambda: detection_loss(torch.zeros(1, 2, 1), torch.full((1, 2, 4), 0.5), [_t([[0.5, 0.5, 0.1, 0.1]], [3])],
                           torch.ones(1, 1, dtype=torch.bool)),
    # one target per image
    lambda: detection_loss(torch.zeros(2, 2, 1), torch.full((2, 2, 4), 0.5), [_t([], [])],
                           torch.ones(2, 1, dtype=torch.bool)),
    # labels must match boxes
    lambda: _t([[0.5, 0.5, 0.1, 0.1]], [0, 1]),
])
def test_bad_inputs_raise(bad):
    with pytest.raises(ValueError):
        bad()
