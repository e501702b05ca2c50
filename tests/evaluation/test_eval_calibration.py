"""Matching and threshold calibration on constructed score distributions with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.evaluation import evaluate_run
from autolabel.evaluation.calibration import Matches, best_f1, for_precision, match_image, pr_curve
from autolabel.export import ExportOptions, export_dataset
from autolabel.ontology import Ontology
from autolabel.testing.synthetic import Label, SyntheticImage


def class_named(result, name: str):
    """The result of class ``name``."""
    return next(c for c in result.classes if c.name == name)


# Scores sorted: .95T .90T .88F .85T .80T .70T .60F .50F .40F with 6 ground-truth boxes.
TP_SCORES = [0.95, 0.90, 0.85, 0.80, 0.70]
FP_SCORES = [0.88, 0.60, 0.50, 0.40]
N_GT = 6


def _matches():
    scores = np.array(TP_SCORES + FP_SCORES)
    tp = np.array([True] * len(TP_SCORES) + [False] * len(FP_SCORES))
    order = np.argsort(-scores, kind="stable")
    return Matches(scores[order], tp[order], N_GT)


def test_max_f1_threshold_is_found_by_hand():
    # F1 by cut: 1: .286, 2: .5, 3: .444, 4: .6, 5: .727, 6: .833 (P 5/6, R 5/6), 7: .769, 8: .714, 9: .667.
    best = best_f1(pr_curve(_matches(), floor=0.1))
    assert best.kept == 6
    assert best.f1 == pytest.approx(5 / 6) and best.precision == pytest.approx(5 / 6)
    assert best.threshold == pytest.approx((0.70 + 0.60) / 2)  # between the lowest kept and the next score


@pytest.mark.parametrize(
    "target, kept, threshold, recall",
    [
        (0.9, 2, (0.90 + 0.88) / 2, 2 / 6),  # only the top two are 100% right
        (0.8, 6, (0.70 + 0.60) / 2, 5 / 6),  # 5/6 = 0.83 >= 0.8 at the max-F1 cut; the lowest such threshold
        (0.55, 9, (0.40 + 0.1) / 2, 5 / 6),  # everything: down to the run's own threshold (0.1)
    ],
)
def test_target_precision_takes_the_lowest_threshold_reaching_it(target, kept, threshold, recall):
    point = for_precision(pr_curve(_matches(), floor=0.1), target)
    assert point.kept == kept
    assert point.threshold == pytest.approx(threshold)
    assert point.recall == pytest.approx(recall)


def test_unreachable_precision_and_no_correct_prediction_give_none():
    wrong_first = Matches(np.array([0.9, 0.8]), np.array([False, True]), 1)
    assert for_precision(pr_curve(wrong_first), 0.9) is None
    all_wrong = Matches(np.array([0.9, 0.8]), np.array([False, False]), 3)
    assert best_f1(pr_curve(all_wrong)) is None


def test_tied_scores_cannot_be_separated():
    tied = Matches(np.array([0.9, 0.7, 0.7, 0.7]), np.array([True, True, False, False]), 2)
    curve = pr_curve(tied, floor=0.0)
    assert curve.kept.tolist() == [1, 4]  # no cut inside the three 0.7s


@pytest.mark.parametrize(
    "preds, scores, gts, crowd, expected_tp, kept",
    [
        ([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.9], [[0, 0, 10, 10]], None, [True, False], 2),  # duplicate: higher score wins
        ([[0, 0, 10, 10]], [0.9], [[20, 20, 30, 30]], None, [False], 1),  # no overlap: false positive
        ([[0, 0, 10, 10], [40, 40, 50, 50]], [0.9, 0.8], [[0, 0, 10, 10], [30, 30, 60, 60]], [False, True],
         [True], 1),  # a prediction inside a crowd region is ignored, not false
        ([[0, 0, 10, 10]], [0.9], [[0, 0, 10, 12], [0, 0, 10, 10]], None, [True], 1),  # takes the best IoU
    ],
)
def test_greedy_matching(preds, scores, gts, crowd, expected_tp, kept):
    m = match_image(preds, scores, gts, crowd, iou=0.5)
    assert m.tp.tolist() == expected_tp and len(m.scores) == kept
    assert m.n_gt == len(gts) - (sum(crowd) if crowd else 0)


def test_calibrated_thresholds_reproduce_the_operating_point(make_eval_run, tmp_path, gt_data):
    """End to end: a run whose car scores follow the distribution above; calibrate; export with the
    calibrated ontology; exactly the max-F1 cut survives, and ``label`` accepts the same file."""
    cars = [(10 + 30 * i, 10, 35 + 30 * i, 35) for i in range(6)]  # six cars on one row
    gt = {"cal0.jpg": [("car", box) for box in cars[:2]], "cal1.jpg": [("car", box) for box in cars[2:]]}
    found = [Label("car", box, score) for box, score in zip(cars, TP_SCORES)]  # 5 of the 6 cars are found
    wrong = [Label("car", (10 + 40 * i, 150, 40 + 40 * i, 180), score) for i, score in enumerate(FP_SCORES)]
    images = [SyntheticImage("cal0.jpg", gt_data.SIZE, found[:2] + wrong),
              SyntheticImage("cal1.jpg", gt_data.SIZE, found[2:])]
    store = make_eval_run("calibrate", images, classes=("car",))
    coco = gt_data.write_coco(tmp_path / "images" / "cal.json", tmp_path / "images", gt)

    result = evaluate_run(store, coco, target_precision=0.9)
    car = class_named(result, "car")
    assert (car.gt, car.predictions) == (6, 9)
    assert car.best_f1.threshold == pytest.approx(0.65) and car.best_f1.kept == 6
    assert car.at_precision.threshold == pytest.approx(0.89)
    assert result.thresholds("f1") == {"car": 0.65}
    assert result.thresholds("precision") == {"car": 0.89}

    from autolabel.evaluation.report import thresholds_yaml

    path = tmp_path / "thresholds.yaml"
    path.write_text(thresholds_yaml(result, store.ontology))
    calibrated = Ontology.from_file(path)  # what `label --ontology` reads
    assert calibrated.names == ["car"] and calibrated.classes[0].threshold == pytest.approx(0.65)
    assert calibrated.classes[0].prompts == store.ontology.classes[0].prompts
    summary = export_dataset(store, tmp_path / "out", "coco",
                             ExportOptions(thresholds={c.name: c.threshold for c in calibrated.classes}))
    assert summary.annotations == 6 and summary.filtered == 3


def test_thresholds_are_short_but_never_cross_a_score():
    close = Matches(np.array([0.500031, 0.500019]), np.array([True, False]), 1)
    best = best_f1(pr_curve(close))
    assert 0.500019 < best.threshold < 0.500031  # 4 decimals (0.5) would drop the right one too
    assert round(best.threshold, 5) == best.threshold  # and still short
