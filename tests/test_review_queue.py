"""review_queue: each uncertainty term alone moves the right image first; reviewed images go last."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.detections import Detections
from autolabel.ontology import Ontology
from autolabel.review_queue import QueueEntry, build_queue, rank, run_thresholds, score_image
from autolabel.testing.synthetic import Label, SyntheticImage, make_run

ONTOLOGY = Ontology.from_prompts(["car=car,van", "person"])  # prompts: 0 car, 1 van, 2 person
THRESHOLDS = {"car": 0.3, "person": 0.3}
CAR, PERSON = 0, 1


def _labels(*rows) -> Detections:
    """Rows ``(class id, prompt id, score, xyxy)``."""
    return Detections(np.array([r[3] for r in rows], dtype=np.float64).reshape(-1, 4), [r[2] for r in rows],
                      [r[0] for r in rows], [r[1] for r in rows])


CALM = _labels((CAR, 0, 0.9, (0, 0, 10, 10)), (CAR, 0, 0.8, (50, 50, 60, 60)))  # far from the threshold, apart

CASES = {
    # a car scored just above the car threshold
    "near_threshold": _labels((CAR, 0, 0.32, (0, 0, 10, 10)), (CAR, 0, 0.9, (50, 50, 60, 60))),
    # "car" and "van" boxes on one object (IoU 1/3) with scores 0.3 apart
    "prompt_disagreement": _labels((CAR, 0, 0.9, (0, 0, 10, 10)), (CAR, 1, 0.6, (5, 0, 15, 10))),
    # a car and a person box on one object (IoU 2/3)
    "class_overlap": _labels((CAR, 0, 0.9, (0, 0, 10, 10)), (PERSON, 2, 0.8, (2, 0, 12, 10))),
    # eight boxes where the other images have two
    "box_count": _labels(*[(CAR, 0, 0.9, (20 * i, 0, 20 * i + 10, 10)) for i in range(8)]),
}


@pytest.mark.parametrize("term", list(CASES))
def test_each_term_alone_moves_its_image_first(term):
    entries = [QueueEntry(name, score_image(CALM, ONTOLOGY, THRESHOLDS)) for name in ("a.jpg", "b.jpg", "c.jpg")]
    entries.append(QueueEntry("z.jpg", score_image(CASES[term], ONTOLOGY, THRESHOLDS)))
    ranked = rank(entries)
    assert [e.path for e in ranked] == ["z.jpg", "a.jpg", "b.jpg", "c.jpg"]  # the rest: ties by path
    first = ranked[0].uncertainty
    assert {k for k, v in first.terms.items() if v > 0} == {term}
    assert first.reason == first.reasons[term]
    assert all(e.uncertainty.score == 0 and e.uncertainty.reason == "nothing stands out" for e in ranked[1:])


def test_reasons_in_words():
    def reason(term):
        return score_image(CASES[term], ONTOLOGY, THRESHOLDS, median_boxes=2).reasons[term]

    assert reason("near_threshold") == "car scored 0.32, threshold 0.30"
    assert reason("prompt_disagreement") == "prompts of car disagree: 'car' 0.90 vs 'van' 0.60"
    assert reason("class_overlap") == "car and person boxes overlap (IoU 0.67)"
    assert reason("box_count") == "8 boxes (run median 2)"


def test_terms_follow_their_definitions():
    near = score_image(_labels((CAR, 0, 0.35, (0, 0, 10, 10))), ONTOLOGY, THRESHOLDS).terms["near_threshold"]
    assert near == pytest.approx(0.5)  # half of NEAR_MARGIN away
    one_prompt = _labels((CAR, 0, 0.9, (0, 0, 10, 10)), (CAR, 0, 0.6, (5, 0, 15, 10)))
    assert score_image(one_prompt, ONTOLOGY, THRESHOLDS).terms["prompt_disagreement"] == 0  # no second prompt
    assert score_image(CALM, ONTOLOGY, THRESHOLDS, median_boxes=0).terms["box_count"] == pytest.approx(
        np.log2(3) / 2)
    overlap = CASES["class_overlap"][[0, 1]]  # a copy
    overlap.reviews[1] = "rejected"  # a rejected label no longer counts
    assert score_image(overlap, ONTOLOGY, THRESHOLDS).score == 0
    assert score_image(CASES["near_threshold"], ONTOLOGY, {}).score == 0  # no thresholds: an imported run


def test_reviewed_images_go_last():
    near = score_image(CASES["near_threshold"], ONTOLOGY, THRESHOLDS)
    calm = score_image(CALM, ONTOLOGY, THRESHOLDS)
    ranked = rank([QueueEntry("a.jpg", near, reviewed=True), QueueEntry("b.jpg", calm),
                   QueueEntry("c.jpg", near), QueueEntry("d.jpg", calm, reviewed=True)])
    assert [e.path for e in ranked] == ["c.jpg", "b.jpg", "a.jpg", "d.jpg"]


def test_build_queue_reads_the_run(tmp_path):
    images = [SyntheticImage("a.jpg", (64, 48), [Label("car", (0, 0, 20, 20), 0.9)]),
              SyntheticImage("b.jpg", (64, 48), [Label("car", (0, 0, 20, 20), 0.12)]),  # run threshold 0.1
              SyntheticImage("c.jpg", (64, 48), [Label("car", (0, 0, 20, 20), 0.12)])]
    with make_run(tmp_path / "run", tmp_path / "images", ["car", "person"], images) as store:
        ids = {r.path.rsplit("/", 1)[-1]: r.id for r in store.images()}
        store.set_image_reviewed(ids["c.jpg"])
        assert run_thresholds(store) == {"car": pytest.approx(0.1), "person": pytest.approx(0.1)}
        queue = build_queue(store)
    assert [e.image_id for e in queue] == [ids["b.jpg"], ids["a.jpg"], ids["c.jpg"]]
    assert queue[0].uncertainty.reason == "car scored 0.12, threshold 0.10"
    assert queue[2].reviewed
