"""ui.review: each Review action lands in the store at once, and exports follow the review."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autolabel.detections import Detections
from autolabel.errors import StoreError
from autolabel.ontology import Ontology
from autolabel.store import ImageResult, open_store
from autolabel.ui import review


@pytest.fixture
def store(tmp_path, photos):
    """A run of three photos: image 1 has a confident car and a doubtful person; image 2 a doubtful
    car; image 3 nothing."""
    ontology = Ontology.from_prompts(["car=car,van", "person"])
    s = open_store(tmp_path / "run")
    s.bind_config({"model": "m", "mode": "detect", "ontology": ontology.to_dict()})
    dets = [
        Detections(np.array([[10, 10, 60, 80], [5, 5, 20, 30]]), np.array([0.9, 0.2]), np.array([0, 1]),
                   np.array([0, 2])),
        Detections(np.array([[1, 1, 50, 50]]), np.array([0.25]), np.array([0]), np.array([1])),
        Detections.empty(),
    ]
    s.write_results([ImageResult(str(p), "sha", 120 if i % 2 == 0 else 160, 170 if i % 2 == 0 else 120, d)
                     for i, (p, d) in enumerate(zip(photos, dets))])
    yield s
    s.close()


def _ids(store):
    return [r.id for r in store.images("done")]


def test_filters(store):
    first, second, third = _ids(store)
    assert review.image_ids(store, "all") == [first, second, third]
    assert review.image_ids(store, "low score", 0.3) == [first, second]
    assert review.image_ids(store, "low score", 0.21) == [first]
    store.accept_image(first)
    assert review.image_ids(store, "unreviewed") == [second, third]
    with pytest.raises(StoreError, match="filter"):
        review.image_ids(store, "everything")


def test_most_uncertain_first_follows_the_review_queue(store):
    first, second, third = _ids(store)
    # The third image has no box where the run's median is one; the first has two, slightly overlapping.
    assert review.image_ids(store, "most uncertain first") == [third, first, second]
    store.accept_image(third)  # reviewed images go last
    assert review.image_ids(store, "most uncertain first") == [first, second, third]


def test_rejected_low_score_label_no_longer_flags_the_image(store):
    first, second, _ = _ids(store)
    labels = review.labels(store, first)
    person = int(labels.ids[labels.class_ids == 1][0])
    review.reject(store, first, person)
    assert review.image_ids(store, "low score", 0.3) == [second]


def test_actions_write_to_the_store(store, tmp_path):
    first, second, third = _ids(store)
    car, person = review.labels(store, first).ids.tolist()
    review.accept(store, first, car)
    review.reject(store, first, str(person))  # ids arrive from the browser as strings too
    assert review.labels(store, first).reviews.tolist() == ["accepted", "rejected"]
    assert store.labels(first).ids.tolist() == [car]  # rejected excluded from exports

    (doubt,) = review.labels(store, second).ids.tolist()
    review.set_class(store, second, doubt, "person")
    review.move_box(store, second, doubt, (2, 3, 40, 45))
    moved = review.labels(store, second)
    assert (moved.class_ids.tolist(), moved.xyxy.tolist()) == ([1], [[2, 3, 40, 45]])
    assert moved.reviews.tolist() == ["accepted"]
    # Changed by a person: a human label without score; the model's prediction is kept for evaluation.
    assert moved.sources.tolist() == ["human"] and not moved.has_score.any()
    assert store.model_predictions(second).scores.tolist() == [0.25]

    new_id = review.add_box(store, third, "car", (10, 20, 30, 40)).label_id
    added = review.labels(store, third)
    assert (added.ids.tolist(), added.sources.tolist(), added.reviews.tolist(), added.has_score.tolist()) == \
        ([new_id], ["human"], ["accepted"], [False])
    review.delete(store, third, new_id)
    assert len(review.labels(store, third)) == 0

    # Durable at once: another connection (the next page load, an export) sees every edit.
    with open_store(tmp_path / "run", create=False) as other:
        assert other.labels(second).class_ids.tolist() == [1]
        assert other.labels(first, include_rejected=True).reviews.tolist() == ["accepted", "rejected"]


def test_accept_image_accepts_pending_and_marks_reviewed(store):
    first, *_ = _ids(store)
    car, person = review.labels(store, first).ids.tolist()
    review.reject(store, first, person)
    assert store.accept_image(first) == 1
    assert review.labels(store, first).reviews.tolist() == ["accepted", "rejected"]
    assert store.image(first).reviewed


@pytest.mark.parametrize("bad", [None, "", "abc"])
def test_actions_need_a_label_id(store, bad):
    first, *_ = _ids(store)
    with pytest.raises(StoreError):
        review.accept(store, first, bad)


def test_actions_refuse_a_label_of_another_image(store):
    first, second, _ = _ids(store)
    (other,) = review.labels(store, second).ids.tolist()
    for action in (review.accept, review.reject, review.delete):
        with pytest.raises(StoreError, match="not on this image"):
            action(store, first, other)
    with pytest.raises(StoreError, match="unknown class"):
        review.set_class(store, second, other, "dragon")
    with pytest.raises(StoreError, match="choose the class"):
        review.add_box(store, first, "", (1, 1, 5, 5))


def test_undo_and_redo_put_labels_back_exactly(store):
    first, *_ = _ids(store)
    car, person = review.labels(store, first).ids.tolist()
    original = store.detection_row(car)
    moved = review.move_box(store, first, car, (1, 2, 30, 40))
    deleted = review.delete(store, first, person)
    added = review.add_box(store, first, "person", (3, 3, 9, 9))
    for change in (added, deleted, moved):  # undo, newest first
        review.revert(store, change)
    assert store.detection_row(car) == original and store.detection_row(person) == deleted.before
    assert store.detection_row(added.label_id) is None
    redo = review.revert(store, review.Change(moved.after, moved.before))  # redo the move
    assert store.detection_row(car) == moved.after and redo == review.Change(original, moved.after)


def test_undo_refuses_to_overwrite_a_later_edit(store):
    first, *_ = _ids(store)
    car, _ = review.labels(store, first).ids.tolist()
    moved = review.move_box(store, first, car, (1, 2, 30, 40))
    review.set_class(store, first, car, "person")  # edited again, e.g. in another browser tab
    with pytest.raises(StoreError, match="changed since"):
        review.revert(store, moved)
    assert review.labels(store, first)[review.labels(store, first).ids == car].class_ids.tolist() == [1]


def test_markdown_text_is_escaped():
    text = review.md_text("<img src=x onerror=alert(1)> *car* [a](b)")
    assert "<" not in text and "&lt;img" in text and "\\*car\\*" in text and "\\[a\\]" in text


def test_canvas_value_has_boxes_legend_and_masks(store):
    from PIL import Image

    from autolabel.geometry import box_to_rle

    first, second, _ = _ids(store)
    record = store.image(first)
    labels = review.labels(store, first)
    review.reject(store, first, int(labels.ids[1]))
    labels = review.labels(store, first)
    value = review.canvas_value(record, labels, ["<b>car</b>", "person"], Image.new("RGB", (60, 85)), None, [],
                                True, False)
    assert [b["id"] for b in value["boxes"]] == labels.ids.tolist() and value["boxes"][1]["rejected"]
    assert value["boxes"][0]["xyxy"] == [10.0, 10.0, 60.0, 80.0] and value["image"].startswith("data:image/jpeg")
    assert [(c["name"], c["count"]) for c in value["legend"]] == [("<b>car</b>", 1), ("person", 0)]
    assert value["masks"] is None and (value["can_undo"], value["can_redo"]) == (True, False)
    with_mask = labels[:1]
    with_mask.masks = [box_to_rle((10, 10, 60, 80), record.height, record.width)]
    value = review.canvas_value(record, with_mask, ["car", "person"], Image.new("RGB", (60, 85)), None, [], False,
                                False)
    assert value["masks"].startswith("data:image/png")


def test_table_rows_and_choice_labels(store):
    first, *_ = _ids(store)
    labels = review.labels(store, first)
    car = int(labels.ids[0])
    rows = review.table_rows(labels, ["car", "person"])
    assert rows[0][:5] == [car, "car", 0.9, "pending", "model"] and len(rows[0]) == len(review.TABLE_HEADERS)
    assert review.label_choices(labels, ["car", "person"])[0] == (f"#{car} car 0.90 (pending)", car)


def test_display_images_are_cached_and_scaled(store):
    first, *_ = _ids(store)
    record = store.image(first)
    display = review.DisplayImages(side=1024)
    image, scale = display.get(record)
    assert max(image.size) == 512 and scale == pytest.approx(512 / 170)  # small photos are enlarged
    assert display.get(record)[0] is image


def test_export_reflects_the_review(store, tmp_path):
    from autolabel.ui.exporting import run_export

    first, second, third = _ids(store)
    car, person = review.labels(store, first).ids.tolist()
    review.reject(store, first, person)
    review.add_box(store, third, "person", (10, 20, 40, 60))
    summary = run_export(store, "coco", tmp_path / "out")
    coco = json.loads((tmp_path / "out" / "coco_export.json").read_text())
    assert summary.annotations == len(coco["annotations"]) == 3  # car, the other car, the drawn person
    drawn = [a for a in coco["annotations"] if "score" not in a]
    assert len(drawn) == 1 and drawn[0]["bbox"] == pytest.approx([10, 20, 30, 40])
    assert all(a.get("score") != pytest.approx(0.2) for a in coco["annotations"])


def test_every_export_format_makes_a_zip(store, tmp_path):
    from autolabel.export import FORMATS
    from autolabel.ui.exporting import run_export

    formats = list(FORMATS)
    assert formats[0] == "coco"
    for fmt in formats:
        summary = run_export(store, fmt, tmp_path / fmt, image_size="64", masks="rle", zip_name=f"{fmt}.zip")
        assert summary.path == tmp_path / fmt / f"{fmt}.zip" and summary.path.is_file(), fmt
        assert summary.images == 3


def test_export_refuses_unknown_format_and_masks(store, tmp_path):
    from autolabel.errors import ConfigError
    from autolabel.ui.exporting import run_export

    with pytest.raises(ConfigError, match="unknown export format"):
        run_export(store, "pascal-v9", tmp_path)
    with pytest.raises(ConfigError, match="masks must be one of"):
        run_export(store, "coco", tmp_path, masks="bitmap")


def test_evaluation_table_against_a_ground_truth_run(store, tmp_path, photos):
    from autolabel.ui.exporting import evaluate_against, evaluation_available

    if not evaluation_available():
        pytest.skip("autolabel.evaluation is not installed")
    gt = open_store(tmp_path / "gt")
    gt.bind_config(store.config)
    records = list(store.images("done"))
    gt.write_results([ImageResult(r.path, r.sha256, r.width, r.height, Detections.empty()) for r in records])
    for r in gt.images("done"):
        gt.add_detection(r.id, "car", (10, 10, 60, 80) if r.path == records[0].path else (1, 1, 50, 50))
        gt.set_image_reviewed(r.id)
    headers, rows, text = evaluate_against(store, gt)
    gt.close()
    assert headers[:3] == ["class", "gt", "pred"] and rows[-1][0] == "all"
    car = next(row for row in rows if row[0] == "car")
    assert car[1] == 3 and car[2] == 2  # three true cars; the run found two, both right
    assert "images compared" in text


# -- masks for a person's boxes in runs that keep masks (the Review tab's canvas handler) ------------


def _segment_run(app, photos, name="seg", config=None):
    """A run whose labels carry masks (segment mode unless ``config`` says otherwise): image 1 holds
    a model car with a mask."""
    from autolabel.geometry import box_to_rle

    ontology = Ontology.from_prompts(["car", "person"])
    with open_store(app.config.runs_dir / name) as s:
        s.bind_config(config or {"model": "m", "sam_model": "s", "mode": "segment", "ontology": ontology.to_dict()})
        s.write_results([ImageResult(str(photos[0]), "sha", 120, 170, Detections(
            np.array([[10.0, 10, 60, 80]]), np.array([0.9]), np.array([0]), np.array([0]),
            masks=[box_to_rle((12, 12, 58, 78), 170, 120)]))])
        return next(s.images()).id


@pytest.fixture
def app(ui_config):
    from autolabel.ui.app import AutolabelApp

    app = AutolabelApp(ui_config)
    app.build()
    return app


def _gesture(app, state, masks, **data):
    """One canvas gesture through the tab's handler: every step it yields, the last one's state."""
    from types import SimpleNamespace

    steps = list(app.review.on_canvas(state, "car", masks, SimpleNamespace(_data=data)))
    return steps, steps[-1][app.review.state]


def _row(app, run, label_id):
    with app.open_run(run) as s:
        return s.detection_row(label_id)


def test_drawn_and_moved_boxes_get_masks_and_undo_puts_the_old_mask_back(app, photos):
    from autolabel.ui.session import mask_labeler

    image_id = _segment_run(app, photos)
    rev = app.review
    loaded = rev.load("seg", "all", 0.3)
    assert loaded[rev.masks].visible and loaded[rev.masks].value  # on by default where it applies
    state = loaded[rev.state]
    with app.open_run("seg") as s:
        car = int(s.labels(image_id).ids[0])
        expected = mask_labeler(app.config, app.models, s.config, s.ontology).masks_for_boxes(
            photos[0], [[20, 30, 100, 150], [5, 40, 90, 160]])
    model_row = _row(app, "seg", car)

    steps, state = _gesture(app, state, True, action="add", box=[20, 30, 100, 150])
    assert steps[0][rev.hint] == "Segmenting…" and "with its mask" in steps[-1][rev.hint]
    drawn = state.undo[-1].label_id
    assert json.loads(_row(app, "seg", drawn)["rle"]) == expected[0]  # what the engine makes for the box
    assert steps[-1][rev.canvas]["masks"].startswith("data:image/png")

    steps, state = _gesture(app, state, True, action="move", id=car, box=[5, 40, 90, 160])
    moved = _row(app, "seg", car)
    assert json.loads(moved["rle"]) == expected[1] and moved["rle"] != model_row["rle"]
    assert app.models.segmenter.embed_calls == 1  # one image embedding for every box on the image

    _, state = _gesture(app, state, True, action="undo")
    assert _row(app, "seg", car) == model_row  # the model's box and mask, exactly
    _, state = _gesture(app, state, True, action="undo")
    assert _row(app, "seg", drawn) is None
    _, state = _gesture(app, state, True, action="redo")
    _, state = _gesture(app, state, True, action="redo")
    assert _row(app, "seg", car) == moved and json.loads(_row(app, "seg", drawn)["rle"]) == expected[0]


def test_with_the_checkbox_off_a_box_gets_no_mask(app, photos):
    image_id = _segment_run(app, photos)
    state = app.review.load("seg", "all", 0.3)[app.review.state]
    steps, state = _gesture(app, state, False, action="add", box=[20, 30, 100, 150])
    assert len(steps) == 1 and _row(app, "seg", state.undo[-1].label_id)["rle"] is None
    assert not app.models.is_loaded("segmenter")
    with app.open_run("seg") as s:
        car = int(s.labels(image_id).ids[0])
    _gesture(app, state, False, action="move", id=car, box=[5, 40, 90, 160])
    assert _row(app, "seg", car)["rle"] is None  # a moved box's old mask no longer fits it


@pytest.mark.parametrize("run_config", [
    {"mode": "detect"},  # a detect run: its labels carry no masks
    {"mode": "import", "format": "coco", "source": "x", "masks": False},  # an import without masks
])
def test_runs_without_masks_show_no_checkbox(app, photos, run_config):
    ontology = Ontology.from_prompts(["car", "person"])
    _segment_run(app, photos, config={"model": "m", **run_config, "ontology": ontology.to_dict()})
    loaded = app.review.load("seg", "all", 0.3)
    assert not loaded[app.review.masks].visible and not loaded[app.review.masks].value
    steps, state = _gesture(app, loaded[app.review.state], True, action="add", box=[20, 30, 100, 150])
    assert len(steps) == 1 and _row(app, "seg", state.undo[-1].label_id)["rle"] is None


def test_without_a_segmenter_no_checkbox_and_no_mask(ui_config, photos):
    from dataclasses import replace

    from autolabel.ui.app import AutolabelApp

    app = AutolabelApp(replace(ui_config, sam_model=None))
    app.build()
    _segment_run(app, photos)
    loaded = app.review.load("seg", "all", 0.3)
    assert not loaded[app.review.masks].visible and not loaded[app.review.masks].value
    assert "get no mask: start the UI with" in loaded[app.review.hint]  # the reviewer is told how to get masks
    steps, state = _gesture(app, loaded[app.review.state], True, action="add", box=[20, 30, 100, 150])  # sent anyway
    assert len(steps) == 1 and _row(app, "seg", state.undo[-1].label_id)["rle"] is None


def test_a_failing_segmenter_still_saves_the_box(ui_config, photos):
    from autolabel.errors import ModelLoadError
    from autolabel.ui.app import AutolabelApp
    from autolabel.ui.session import ModelHandles

    def broken(name, device, precision):
        raise ModelLoadError("cannot load the segmenter from /srv/models/sam2: no weights")

    models = ModelHandles(ui_config.model, ui_config.sam_model, device="cpu", loaders={"segmenter": broken})
    app = AutolabelApp(ui_config, models)
    app.build()
    _segment_run(app, photos)
    steps, state = _gesture(app, app.review.load("seg", "all", 0.3)[app.review.state], True, action="add",
                            box=[20, 30, 100, 150])
    hint = steps[-1][app.review.hint]
    assert "Saved: added" in hint and "without a mask" in hint and "no weights" in hint and "/srv" not in hint
    assert "\n" not in hint and "failed to load" in steps[-1][app.status_box]
    row = _row(app, "seg", state.undo[-1].label_id)
    assert row["rle"] is None and [row[k] for k in ("x0", "y0", "x1", "y1")] == [20, 30, 100, 150]


# -- clicks that refine a label's mask (Alt+click on the canvas) -----------------------------------


def test_points_refine_the_mask_and_undo_puts_each_mask_back(app, photos):
    from autolabel.ui.session import mask_labeler

    image_id = _segment_run(app, photos)
    rev = app.review
    state = rev.load("seg", "all", 0.3)[rev.state]
    box, positive, negative = [10.0, 10, 60, 80], (35.0, 45.0, 1), (15.0, 70.0, 0)
    with app.open_run("seg") as s:
        car = int(s.labels(image_id).ids[0])
        labeler = mask_labeler(app.config, app.models, s.config, s.ontology)
    (one,) = labeler.masks_for_boxes(photos[0], [box], points=[[positive]])
    (two,) = labeler.masks_for_boxes(photos[0], [box], points=[[positive, negative]])
    (box_only,) = labeler.masks_for_boxes(photos[0], [box])
    assert len({json.dumps(m) for m in (one, two, box_only)}) == 3
    model_row = _row(app, "seg", car)

    steps, state = _gesture(app, state, True, action="point", id=car, x=35, y=45, positive=True)
    assert steps[0][rev.hint] == "Segmenting…" and "1 point" in steps[-1][rev.hint]
    first = _row(app, "seg", car)
    assert json.loads(first["rle"]) == one and first["source"] == "human"
    assert [first[k] for k in ("x0", "y0", "x1", "y1")] == box  # the same box, a new mask
    assert steps[-1][rev.canvas]["points"] == [{"x": 35.0, "y": 45.0, "positive": True}]

    steps, state = _gesture(app, state, True, action="point", id=car, x=15, y=70, positive=False)
    assert json.loads(_row(app, "seg", car)["rle"]) == two
    assert [p["positive"] for p in steps[-1][rev.canvas]["points"]] == [True, False]
    assert app.models.segmenter.embed_calls == 1  # clicks reuse the image's embedding

    _, state = _gesture(app, state, True, action="undo")
    assert _row(app, "seg", car) == first and state.points == (positive,)
    _, state = _gesture(app, state, True, action="undo")
    assert _row(app, "seg", car) == model_row and state.points == ()  # the model's mask, exactly
    _, state = _gesture(app, state, True, action="redo")
    steps, state = _gesture(app, state, True, action="redo")
    assert json.loads(_row(app, "seg", car)["rle"]) == two and len(steps[-1][rev.canvas]["points"]) == 2

    steps, state = _gesture(app, state, True, action="clear-points", id=car)
    assert json.loads(_row(app, "seg", car)["rle"]) == box_only and steps[-1][rev.canvas]["points"] == []

    _, state = _gesture(app, state, True, action="point", id=car, x=35, y=45, positive=True)
    assert len(state.points) == 1
    steps, state = _gesture(app, state, True, action="add", box=[20, 30, 100, 150])  # another label selected
    assert steps[-1][rev.canvas]["points"] == []
    steps, state = _gesture(app, state, True, action="select", id=car)
    assert steps[-1][rev.canvas]["points"] == [] and state.points == ()
    with pytest.raises(StoreError, match="outside the image"):
        _gesture(app, state, True, action="point", id=car, x=500, y=45, positive=True)


def test_a_point_without_masks_leaves_the_label_as_it_was(app, photos):
    image_id = _segment_run(app, photos)
    state = app.review.load("seg", "all", 0.3)[app.review.state]
    with app.open_run("seg") as s:
        car = int(s.labels(image_id).ids[0])
    before = _row(app, "seg", car)
    steps, state = _gesture(app, state, False, action="point", id=car, x=35, y=45, positive=True)
    assert len(steps) == 1 and "Masks for my boxes" in steps[-1][app.review.hint]
    assert _row(app, "seg", car) == before and not state.undo and not app.models.is_loaded("segmenter")


def test_a_failing_segmenter_leaves_the_label_as_it_was(ui_config, photos):
    from autolabel.errors import ModelLoadError
    from autolabel.ui.app import AutolabelApp
    from autolabel.ui.session import ModelHandles

    def broken(name, device, precision):
        raise ModelLoadError("cannot load the segmenter from /srv/models/sam2: no weights")

    app = AutolabelApp(ui_config, ModelHandles(ui_config.model, ui_config.sam_model, device="cpu",
                                               loaders={"segmenter": broken}))
    app.build()
    image_id = _segment_run(app, photos)
    state = app.review.load("seg", "all", 0.3)[app.review.state]
    with app.open_run("seg") as s:
        car = int(s.labels(image_id).ids[0])
    before = _row(app, "seg", car)
    steps, state = _gesture(app, state, True, action="point", id=car, x=35, y=45, positive=False)
    hint = steps[-1][app.review.hint]
    assert "unchanged" in hint and "no weights" in hint and "/srv" not in hint and "\n" not in hint
    assert _row(app, "seg", car) == before and not state.undo and state.points == ()
