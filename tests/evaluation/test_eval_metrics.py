"""COCO metrics on synthetic ground truth with known answers (4 images, 40x40 boxes, 3 classes)."""

from __future__ import annotations

import shutil

import pytest

from autolabel.errors import ConfigError
from autolabel.evaluation import evaluate_run
from autolabel.importers import import_dataset
from autolabel.store import open_store
from autolabel.testing.synthetic import Label, SyntheticImage, write_image

pytest.importorskip("pycocotools")


def class_named(result, name: str):
    """The result of class ``name``."""
    return next(c for c in result.classes if c.name == name)


@pytest.fixture()
def identical(make_eval_run, gt_data):
    return make_eval_run("identical-2", gt_data.predictions())


def test_identical_predictions_give_ap_1_for_every_class(identical, gt_coco):
    result = evaluate_run(identical, gt_coco)
    assert (result.map, result.ap50, result.ap75) == (pytest.approx(1.0), pytest.approx(1.0), pytest.approx(1.0))
    assert [c.name for c in result.classes] == ["car", "person", "dog"]  # the run's order, matched by name
    for c in result.classes:
        assert (c.ap, c.ap50, c.ap75) == (pytest.approx(1.0),) * 3
        assert (c.precision, c.recall, c.f1) == (1.0, 1.0, 1.0)
    assert result.images == 4 and result.missing == []
    assert result.gt_only_classes == ["bike"] and result.run_only_classes == []


def test_boxes_shifted_to_iou_0_63_give_ap50_1_and_ap75_0(make_eval_run, gt_coco, gt_data):
    # A 40 px box shifted 9 px: IoU = 31 / 49 = 0.633 -> matched at IoU 0.50, 0.55, 0.60 only.
    store = make_eval_run("shifted", gt_data.predictions(shift=9))
    result = evaluate_run(store, gt_coco)
    assert result.ap50 == pytest.approx(1.0)
    assert result.ap75 == pytest.approx(0.0)
    assert result.map == pytest.approx(0.3)  # 3 of 10 IoU thresholds
    for c in result.classes:
        assert (c.ap50, c.ap75) == (pytest.approx(1.0), pytest.approx(0.0))
    strict = evaluate_run(store, gt_coco, iou=0.7)  # precision/recall at a stricter IoU: nothing matches
    assert all(c.precision == 0.0 and c.recall == 0.0 for c in strict.classes)


def test_a_class_without_predictions_has_ap_0(make_eval_run, gt_coco, gt_data):
    store = make_eval_run("no-dogs", gt_data.predictions(drop={"dog"}))
    result = evaluate_run(store, gt_coco)
    dog = class_named(result, "dog")
    assert (dog.ap, dog.ap50, dog.ap75) == (0.0, 0.0, 0.0)
    assert dog.predictions == 0 and dog.gt == 2 and dog.recall == 0.0 and dog.precision is None
    assert dog.best_f1 is None
    assert class_named(result, "car").ap == pytest.approx(1.0)
    assert result.map == pytest.approx(2 / 3)  # mean over car, person, dog


def test_false_positives_lower_precision_but_not_recall(make_eval_run, gt_coco, gt_data):
    images = gt_data.predictions()
    images[0].labels.append(Label("car", (150, 150, 190, 190), 0.95))  # a confident miss
    result = evaluate_run(make_eval_run("extra", images), gt_coco)
    car = class_named(result, "car")
    assert (car.gt, car.predictions, car.recall) == (4, 5, 1.0)
    assert car.precision == pytest.approx(0.8)
    assert car.ap < 1.0


@pytest.mark.parametrize("source", ["coco", "imported-run", "store"])
def test_ground_truth_sources_agree(make_eval_run, gt_coco, gt_data, tmp_path, source):
    """A COCO file, an imported run folder and an open store give the same numbers."""
    store = make_eval_run("shifted", gt_data.predictions(shift=9))
    expected = evaluate_run(store, gt_coco)
    if source == "coco":
        result = evaluate_run(store, gt_coco)
    else:
        import_dataset(gt_coco, tmp_path / "gt-run")
        if source == "imported-run":
            result = evaluate_run(store, tmp_path / "gt-run")
        else:
            with open_store(tmp_path / "gt-run", create=False) as gt:
                result = evaluate_run(store, gt)
    assert result.table_rows() == expected.table_rows()


def test_images_pair_by_content_when_paths_differ_and_missing_ones_are_listed(make_eval_run, gt_coco, gt_data,
                                                                                tmp_path):
    store = make_eval_run("identical-3", gt_data.predictions())
    moved = tmp_path / "moved"
    shutil.copytree(gt_coco.parent, moved)
    extra = dict(gt_data.GT, **{"new.jpg": [("car", (1, 1, 41, 41))]})
    write_image(moved / "new.jpg", gt_data.SIZE, seed=99)
    gt = gt_data.write_coco(moved / "gt.json", moved, extra)
    result = evaluate_run(store, gt)
    assert result.images == 4
    assert [p.rsplit("/", 1)[1] for p in result.missing] == ["new.jpg"]
    assert result.map == pytest.approx(1.0)


def test_human_labels_in_the_run_count_with_score_1(make_eval_run, gt_coco, gt_data):
    images = gt_data.predictions(drop={"dog"})
    for image in images:  # the dogs drawn by hand instead
        image.labels += [Label(c, box, None) for c, box in gt_data.GT[image.relpath] if c == "dog"]
    result = evaluate_run(make_eval_run("human", images), gt_coco)
    assert class_named(result, "dog").ap == pytest.approx(1.0)


def test_model_only_scores_what_the_model_predicted_before_review(make_eval_run, gt_coco, gt_data):
    store = make_eval_run("reviewed", gt_data.predictions())
    for record in store.images():  # a reviewer moves every dog far off its place
        labels = store.labels(record.id)
        for label_id, class_id in zip(labels.ids, labels.class_ids):
            if store.ontology.names[class_id] == "dog":
                store.update_detection(int(label_id), xyxy=(0, 0, 3, 3))
    assert class_named(evaluate_run(store, gt_coco), "dog").ap == pytest.approx(0.0)
    assert class_named(evaluate_run(store, gt_coco, model_only=True), "dog").ap == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"iou": 0.0}, "--iou"),  # out of range
        ({"target_precision": 1.5}, "--target-precision"),  # out of range
    ],
)
def test_bad_options(identical, gt_coco, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        evaluate_run(identical, gt_coco, **kwargs)


def test_no_shared_class_or_image_is_an_error(make_eval_run, gt_coco, gt_data, tmp_path):
    trucks = make_eval_run("trucks", [SyntheticImage("img0.jpg", gt_data.SIZE, [])], classes=("truck",))
    with pytest.raises(ConfigError, match="share no class name"):
        evaluate_run(trucks, gt_coco)
    write_image(tmp_path / "elsewhere" / "z.jpg", gt_data.SIZE, seed=5)
    other = gt_data.write_coco(tmp_path / "elsewhere" / "gt.json", tmp_path / "elsewhere",
                               {"z.jpg": [("car", (1, 1, 5, 5))]})
    with pytest.raises(ConfigError, match="none of the 1 ground-truth images"):
        evaluate_run(make_eval_run("identical-4", gt_data.predictions()), other)


def test_pycocotools_prints_nothing_and_stdout_is_never_swapped(capsys):
    """pycocotools' progress lines are silenced inside its own modules; sys.stdout stays the same
    object throughout (other threads keep printing where they print)."""
    import sys

    from pycocotools import coco, cocoeval

    from autolabel.evaluation.cocoeval import _silenced_pycocotools

    stdout = sys.stdout
    with _silenced_pycocotools():
        assert sys.stdout is stdout
        coco.COCO().createIndex()
        print("ours")
    assert capsys.readouterr().out == "ours\n"
    assert not hasattr(coco, "print") and not hasattr(cocoeval, "print")  # lifted afterwards
