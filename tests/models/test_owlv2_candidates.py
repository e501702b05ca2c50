"""Kept candidates of OWLv2: re-scoring them with any prompts gives the class head's logits for
those patches, so a relabel equals a full re-run restricted to the kept boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autolabel.candidates import load_candidates, save_candidates
from autolabel.errors import ConfigError
from autolabel.models.owlv2 import candidate_logits
from autolabel.models.registry import load_detector

SHA = "cd" + "1" * 62


@pytest.fixture(scope="module")
def detector(tiny_owlv2):
    return load_detector(str(tiny_owlv2), "cpu", "fp32")


def _features(detector, n: int = 2):
    torch.manual_seed(0)
    return detector.encode_images(torch.randn(n, 3, detector.image_size, detector.image_size))


def test_candidates_are_the_top_k_patches_by_objectness_in_patch_order(detector):
    features = _features(detector)
    kept = detector.candidates(features, 6)
    with torch.inference_mode():
        objectness = detector.model.objectness_predictor(features.image_feats)
    for i, c in enumerate(kept):
        c = c.to_host()
        assert list(c.patch_index) == sorted(objectness[i].topk(6).indices.tolist())
        np.testing.assert_array_equal(c.pred_boxes, features.pred_boxes[i, c.patch_index].numpy())


def test_rescored_candidates_equal_the_class_head_on_those_patches(detector):
    features = _features(detector)
    # A padded query list too: padding must come out at the float32 minimum, as in the class head.
    text = detector.encode_text(("car", "a red bicycle", "person"))
    text = type(text)(text.queries, text.embeds, torch.tensor([True, True, False]))
    full = detector.score(features, text).logits.numpy()
    for i, c in enumerate(detector.candidates(features, 6)):
        c = c.to_host()
        np.testing.assert_allclose(candidate_logits(c, text).numpy(), full[i, c.patch_index], atol=1e-4, rtol=0)


def test_saved_fp16_embeddings_stay_close(detector, tmp_path):
    features = _features(detector, 1)
    text = detector.encode_text(("car", "person"))
    c = detector.candidates(features, 6)[0].to_host()
    save_candidates(tmp_path, SHA, c)
    d = load_candidates(tmp_path, SHA)
    full = detector.score(features, text).logits.numpy()[0, c.patch_index]
    np.testing.assert_allclose(candidate_logits(d, text).numpy(), full, atol=5e-3, rtol=0)


@pytest.mark.parametrize("min_score", [0.0, 0.45, 0.5, 1.0])
def test_scored_candidates_keep_those_that_can_pass_the_floor_in_patch_order(detector, min_score):
    from autolabel.candidates import Candidates

    features = _features(detector, 3)
    text = detector.encode_text(("car", "person"))
    batch = Candidates.stack([c.to_host() for c in detector.candidates(features, 8)])
    logits = candidate_logits(batch, text).numpy()
    scores = detector.score_candidates(batch, text, min_score=min_score)
    for i in range(3):
        passing = np.flatnonzero(1 / (1 + np.exp(-logits[i].max(axis=1).astype(np.float64))) > min_score)
        n = len(passing)
        np.testing.assert_array_equal(scores.logits[i, :n].numpy(), logits[i, passing])  # same rows, same order
        np.testing.assert_array_equal(scores.pred_boxes[i, :n].numpy(), batch.pred_boxes[i, passing])
        assert (scores.logits[i, n:].numpy() == np.finfo(np.float32).min).all()  # padding never passes
    assert scores.logits.shape[1] == max(
        int((1 / (1 + np.exp(-logits[i].max(axis=1).astype(np.float64))) > min_score).sum()) for i in range(3))


def test_owlvit_says_it_cannot_rank_candidates(tmp_path):
    from autolabel.testing.owlvit_checkpoint import build_owlvit_checkpoint

    owlvit = load_detector(str(build_owlvit_checkpoint(tmp_path / "owlvit")), "cpu", "fp32")
    assert not owlvit.ranks_candidates
    with pytest.raises(ConfigError, match="objectness"):
        owlvit.candidates(_features(owlvit, 1), 4)
