import numpy as np
import pytest

from autolabel.detections import NO_PROMPT, Detections

RLE = {"size": [4, 4], "counts": "04?0"}


def _labels() -> Detections:
    # a model label with a mask, a human label (no score, no prompt, no mask), a rejected model label
    return Detections(
        np.array([[0, 0, 2, 2], [1.1, 1.2, 3.3, 3.4], [0, 1, 2, 3]], dtype=np.float64),
        [0.9, np.nan, 0.4], [0, 1, 0], [0, NO_PROMPT, 1], [RLE, None, RLE],
        ids=[7, 8, 9], sources=["model", "human", "model"], reviews=["pending", "accepted", "rejected"],
    )


def test_optional_fields_default_to_model_pending_and_no_ids():
    det = Detections([[0, 0, 1, 1]], [0.5], [0], [0])
    assert det.ids is None and det.masks is None
    assert det.sources.tolist() == ["model"] and det.reviews.tolist() == ["pending"]
    assert det.has_score.tolist() == [True]


@pytest.mark.parametrize("given, kept", [
    (np.float32, np.float32),  # model outputs stay float32
    (np.float64, np.float64),  # store / dataset values keep every digit
    (int, np.float64),
])
def test_float_fields_keep_their_precision(given, kept):
    det = Detections(np.array([[0.1, 0.2, 3.3, 4.4]], dtype=given), np.array([1], dtype=given), [0], [0])
    assert det.xyxy.dtype == kept and det.scores.dtype == kept
    if given is np.float64:
        assert det.xyxy[0, 2] == 3.3


def test_indexing_keeps_every_field_aligned():
    det = _labels()
    for picked in (det[[2, 0]], det[2::-2]):  # an index array, a slice
        assert picked.ids.tolist() == [9, 7]
        assert picked.sources.tolist() == ["model", "model"]
        assert picked.reviews.tolist() == ["rejected", "pending"]
        assert picked.masks == [RLE, RLE] and picked.prompt_ids.tolist() == [1, 0]
    human = det[det.sources == "human"]  # a boolean mask
    assert human.ids.tolist() == [8] and human.masks == [None] and np.isnan(human.scores[0])
    one = det[1]
    assert len(one) == 1 and one.ids.tolist() == [8] and one.masks == [None] and not one.has_score[0]


@pytest.mark.parametrize("kwargs, message", [
    ({"xyxy": [[0, 0, 1]]}, r"xyxy must have shape \(N, 4\)"),  # three coordinates
    ({"scores": [0.1, 0.2]}, "scores must have 1 rows"),
    ({"ids": [1, 2]}, "ids must have 1 rows"),
    ({"sources": ["robot"]}, "sources must be one of model, human"),
    ({"reviews": ["maybe"]}, "reviews must be one of pending, accepted, rejected"),
])
def test_bad_input_names_the_field(kwargs, message):
    fields = {"xyxy": [[0, 0, 1, 1]], "scores": [0.5], "class_ids": [0], "prompt_ids": [0], **kwargs}
    with pytest.raises(ValueError, match=message):
        Detections(**fields)


def test_empty():
    det = Detections.empty()
    assert len(det) == 0 and det.xyxy.shape == (0, 4) and det.sources.shape == (0,)
    assert det[np.zeros(0, dtype=bool)].area.shape == (0,)
