"""Shared post-processing: negatives suppress what they match better than the class (controlled
logits, known answers), exemplar columns carry no prompt id."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autolabel.geometry import Size
from autolabel.models.omdet import pair_logits_to_detections
from autolabel.models.owlv2 import postprocess_logits
from autolabel.models.postprocess import BoxScores, per_image, suppress_negatives, thresholded
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig

ONTOLOGY = Ontology.from_prompts(["car=car,van;not=toy car", "person"])
# Columns: car, van, person | toy car (negative of car).
LOGITS = np.array([
    [2.0, 1.0, -5.0, 3.0],  # 0: "toy car" beats car's best prompt -> not a car
    [3.0, 0.5, -5.0, 1.0],  # 1: car beats "toy car" -> a car
    [-5.0, -5.0, 2.0, 5.0],  # 2: a person; "toy car" only takes the car columns away
    [1.0, 2.5, -5.0, 2.0],  # 3: van (car's best prompt) beats "toy car" -> a car
], dtype=np.float32)
# Four separate boxes (cx, cy, w, h normalised), so NMS keeps every one.
BOXES = np.array([[0.1, 0.1, 0.1, 0.1], [0.4, 0.4, 0.1, 0.1], [0.7, 0.7, 0.1, 0.1], [0.9, 0.2, 0.1, 0.1]],
                 dtype=np.float32)
CONFIG = DetectConfig(threshold=0.0, nms_iou=None)


def test_a_negative_suppresses_only_the_boxes_it_matches_better_within_its_class():
    positive = suppress_negatives(LOGITS, ONTOLOGY)
    assert positive.shape == (4, 3)
    assert np.isneginf(positive[0, :2]).all() and positive[0, 2] == -5.0  # still scored as a person
    np.testing.assert_array_equal(positive[[1, 3]], LOGITS[[1, 3], :3])
    assert np.isneginf(positive[2, :2]).all() and positive[2, 2] == 2.0


def test_owl_postprocessing_drops_the_suppressed_box():
    scores = BoxScores(torch.from_numpy(LOGITS)[None], torch.from_numpy(BOXES)[None])
    [dets] = per_image(scores, [Size(100, 100)], ONTOLOGY, CONFIG, postprocess_logits)
    # Box 0's best class is now person (sigmoid(-5)), the others keep their class and prompt.
    found = {tuple(np.round(b, 1)): (int(c), int(p)) for b, c, p in zip(dets.xyxy, dets.class_ids, dets.prompt_ids)}
    assert found == {(5.0, 5.0, 15.0, 15.0): (1, 2), (35.0, 35.0, 45.0, 45.0): (0, 0),
                     (65.0, 65.0, 75.0, 75.0): (1, 2), (85.0, 15.0, 95.0, 25.0): (0, 1)}
    assert dets.scores[dets.class_ids == 1].min() == pytest.approx(1 / (1 + np.exp(5.0)), rel=1e-5)


def test_pair_postprocessing_drops_the_suppressed_pairs_only():
    # OmDet keeps the best N (box, prompt) pairs: box 0's car pairs go, its person pair may stay.
    scores = BoxScores(torch.from_numpy(LOGITS)[None], torch.from_numpy(BOXES)[None])
    [dets] = per_image(scores, [Size(100, 100)], ONTOLOGY, CONFIG, pair_logits_to_detections)
    pairs = sorted(zip(np.round(dets.xyxy[:, 0]).astype(int).tolist(), dets.prompt_ids.tolist()))
    assert (5, 0) not in pairs and (5, 1) not in pairs
    assert pairs == [(35, 0), (65, 2), (85, 0), (85, 1)]  # the 4 best remaining pairs


def test_columns_must_match_the_ontology():
    with pytest.raises(ValueError, match="3 score columns for an ontology with 3 positive and 1 negative"):
        suppress_negatives(LOGITS[:, :3], ONTOLOGY)


def test_exemplar_columns_name_their_class_and_no_prompt(tmp_path):
    from PIL import Image

    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    ontology = Ontology.from_data([{"name": "car"}, {"name": "widget", "exemplars": [
        {"image": "a.png", "box": [0, 0, 10, 10]}]}], base=tmp_path)
    columns = np.array([0, 1, 1])  # the text prompt "car", then the exemplar column of "widget"
    boxes = np.array([[0, 0, 5, 5], [5, 5, 9, 9], [10, 10, 19, 19]], dtype=np.float32)
    dets = thresholded(np.array([0.9, 0.8, 0.7]), columns, boxes, Size(20, 20), ontology, CONFIG)
    assert dets.class_ids.tolist() == [0, 1, 1]
    assert dets.prompt_ids.tolist() == [0, -1, -1]


@pytest.mark.parametrize("negative, wins", [("tiger", True), ("statue", False)])
def test_omdet_negatives_on_the_tiny_checkpoint(tmp_path_factory, negative, wins):
    # The tiny random model scores every box of an image alike, so a negative wins everywhere or nowhere.
    from autolabel.models.omdet import OmDetTurboDetector
    from autolabel.pipeline import Labeler, PreparedImage
    from autolabel.testing.omdet_checkpoint import build_omdet_checkpoint

    detector = OmDetTurboDetector.from_pretrained(str(build_omdet_checkpoint(tmp_path_factory.mktemp("omdet"))))
    labeler = Labeler(Ontology.from_prompts([f"cat;not={negative}", "dog"]), detector=detector, config=CONFIG)
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (50, 130, 3), dtype=np.uint8))
    launched = labeler.score(labeler.encode([PreparedImage("<image>", "", Size(130, 50), pixels=pixels)]))
    [dets] = labeler.finish(launched)
    logits = launched.scores.logits[0].numpy().copy()  # cat, dog | the negative: one decoder pass reads all three
    suppressed = logits[:, 2] > logits[:, 0]
    assert suppressed.all() if wins else not suppressed.any()
    logits[suppressed, 0] = -np.inf
    expected = pair_logits_to_detections(logits[:, :2], launched.scores.pred_boxes[0].numpy(), Size(130, 50),
                                         Ontology.from_prompts(["cat", "dog"]), CONFIG)
    assert len(dets) == len(expected)
    np.testing.assert_array_equal(dets.xyxy, expected.xyxy)
    np.testing.assert_array_equal(dets.prompt_ids, expected.prompt_ids)
