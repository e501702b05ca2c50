"""How many reviewed images the calibrated thresholds needed to settle, on constructed ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from autolabel.cli import main
from autolabel.detections import Detections
from autolabel.errors import ConfigError
from autolabel.evaluation import evaluate_run
from autolabel.evaluation.calibration import match_image
from autolabel.evaluation.sources import LabelImage, LabelSet
from autolabel.evaluation.stability import prefix_thresholds, stable_after
from autolabel.testing.synthetic import Label, SyntheticImage, make_run

SIZE = (100, 80)
CAR = (10, 10, 40, 40)
ELSEWHERE = (60, 40, 90, 70)


@pytest.mark.parametrize("thresholds, expected", [
    ([0.5, 0.7, 0.52, 0.51, 0.53], 3),  # settles at the third image
    ([0.5, 0.54, 0.46, 0.5], 1),  # never further than 0.05 from the first
    ([0.3, 0.5, 0.3, 0.5], None),  # keeps jumping
    ([0.5, None, 0.5], None),  # undefined on the way (no correct prediction yet)
    ([None, 0.5, 0.5], 2),
    ([0.5], None),  # nothing after it confirms it
    ([], None),
])
def test_stable_after(thresholds, expected):
    assert stable_after(thresholds) == expected


def test_prefix_thresholds_match_calibrating_each_prefix_at_once():
    parts = [match_image([CAR], [0.9], [CAR]), match_image([CAR, ELSEWHERE], [0.9, 0.7], [CAR]),
             match_image([CAR], [0.82], [CAR])]
    assert prefix_thresholds(parts, floor=0.1) == [0.5, 0.8, 0.76]
    assert prefix_thresholds(parts, floor=0.1, target_precision=0.5) == [0.5, 0.4, 0.4]  # all kept: P >= 0.5


@pytest.fixture()
def settling_run(tmp_path):
    """Five images with one true car each; img1 also has a wrong car at 0.7 (and so the most boxes).

    Max-F1 thresholds in path order: 0.5 (img0 alone: keep all, down to the run's 0.1), then 0.8
    (img1's wrong car must go), then 0.76 (img2's right car scores 0.82) -> stable after 2 images.
    Review order puts img1 first (more boxes than the median): 0.8, 0.8, 0.76 ... -> stable after 1.
    """
    scores = [0.9, 0.9, 0.82, 0.85, 0.9]
    images = [SyntheticImage(f"img{i}.jpg", SIZE, [Label("car", CAR, s)]) for i, s in enumerate(scores)]
    images[1].labels.append(Label("car", ELSEWHERE, 0.7))
    make_run(tmp_path / "run", tmp_path / "images", ["car", "person"], images).close()
    car = Detections(np.array([CAR], dtype=np.float64), [np.nan], [0], [-1])
    car_and_person = Detections(np.array([CAR, ELSEWHERE], dtype=np.float64), [np.nan] * 2, [0, 1], [-1] * 2)
    truth = LabelSet(["car", "person"], [  # img0 also has a person the run never finds
        LabelImage(str((tmp_path / "images" / im.relpath).resolve()), *SIZE, None, car_and_person if i == 0 else car)
        for i, im in enumerate(images)], "constructed")
    return tmp_path / "run", truth


def test_eval_counts_images_until_thresholds_settle(settling_run):
    from autolabel.store import open_store

    run, truth = settling_run
    with open_store(run, create=False) as store:
        by_path = {c.name: c.stable_after for c in evaluate_run(store, truth, order="path").classes}
        by_review = evaluate_run(store, truth)
        with pytest.raises(ConfigError, match="order"):
            evaluate_run(store, truth, order="random")
    assert by_path == {"car": 2, "person": None}
    assert {c.name: c.stable_after for c in by_review.classes} == {"car": 1, "person": None}
    assert by_review.to_dict()["classes"][0]["stable_after"] == 1 and by_review.to_dict()["order"] == "review"


def test_eval_command_prints_the_stabilisation(settling_run, tmp_path):
    run, truth = settling_run
    coco = tmp_path / "gt.json"
    coco.write_text(json.dumps({
        "images": [{"id": i + 1, "file_name": Path(im.path).name, "width": SIZE[0], "height": SIZE[1]}
                   for i, im in enumerate(truth.images)],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}],
        "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "bbox": [CAR[0], CAR[1], CAR[2] - CAR[0], CAR[3] - CAR[1]]}
                        for i in range(len(truth.images))]}))
    result = CliRunner().invoke(main, ["eval", str(run), "--gt", str(coco), "--gt-images", str(tmp_path / "images"),
                                       "--no-report", "--order", "path"])
    assert result.exit_code == 0, result.output
    assert ("thresholds stable (within 0.05 from then on, images in path order): car after 2 images, "
            "person not stable") in result.output
