"""ui.exemplars and the Test tab's example boxes: drawn boxes become exemplars of a class, their
images are kept like guarded uploads, and the next query (and a batch) uses them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from autolabel.errors import ConfigError
from autolabel.ui import exemplars
from autolabel.ui.app import AutolabelApp
from autolabel.ui.exemplars import add_box, move_box, query_ontology, remove_box

from ui_helpers import make_config

pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated:Warning"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning")]


def test_a_box_keeps_its_image_under_its_hash_in_the_work_folder(photos, tmp_path):
    from autolabel.images import file_sha256

    boxes = add_box((), photos[0], (1, 2, 30, 40), "widget", False, tmp_path, 10**7)
    boxes = add_box(boxes, photos[0], (50, 60, 90, 100), "widget", True, tmp_path, 10**7)
    sha = file_sha256(photos[0])
    kept = list((tmp_path / exemplars.EXEMPLARS).iterdir())
    assert [p.name for p in kept] == [f"{sha}.jpg"]  # one copy for both boxes, named by content
    assert [b.exemplar.image for b in boxes] == [str(kept[0])] * 2 and boxes[0].sha256 == sha
    assert [b.exemplar.negative for b in boxes] == [False, True] and boxes[0].file_name == "img_000.jpg"
    assert exemplars.rows(boxes)[1] == [2, "widget", "negative", "img_000.jpg", "50, 60, 90, 100"]


@pytest.mark.parametrize("case", ["html", "svg_named_png", "too_many_pixels", "too_large"])
def test_only_images_within_the_caps_are_kept(case, photos, tmp_path, monkeypatch):
    upload = tmp_path / "upload"
    upload.mkdir()
    max_pixels = 10**7
    if case == "html":  # a page: never an example image
        path = upload / "page.html"
        path.write_text("<script>alert(1)</script>")
    elif case == "svg_named_png":  # content decides, not the name
        path = upload / "logo.png"
        path.write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    elif case == "too_many_pixels":
        path, max_pixels = photos[0], 100
    else:
        path = photos[0]
        monkeypatch.setattr(exemplars, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(ConfigError):
        add_box((), path, (1, 1, 5, 5), "widget", False, tmp_path / "work", max_pixels)
    assert not (tmp_path / "work" / exemplars.EXEMPLARS).exists() or not any(
        (tmp_path / "work" / exemplars.EXEMPLARS).iterdir())


def test_box_edits_and_bad_boxes(photos, tmp_path):
    boxes = add_box((), photos[0], (1, 2, 30, 40), "widget", False, tmp_path, 10**7)
    boxes = add_box(boxes, photos[0], (5, 5, 20, 20), "gadget", False, tmp_path, 10**7)
    moved = move_box(boxes, 1, (6, 7, 21.556, 22))
    assert moved[1].exemplar.box == (6.0, 7.0, 21.56, 22.0) and moved[0] == boxes[0]
    assert [b.class_name for b in remove_box(moved, 0)] == ["gadget"]
    with pytest.raises(ConfigError, match="gone"):
        remove_box(moved, 5)
    with pytest.raises(ConfigError, match="class of the example box"):
        add_box((), photos[0], (1, 2, 30, 40), "  ", False, tmp_path, 10**7)
    with pytest.raises(ConfigError, match="reaches outside"):  # img_000 is 120x170
        add_box((), photos[0], (1, 2, 300, 40), "widget", False, tmp_path, 10**7)


def test_boxes_join_the_prompt_classes_or_make_their_own(photos, tmp_path):
    boxes = add_box((), photos[0], (1, 2, 30, 40), "car", False, tmp_path, 10**7)
    boxes = add_box(boxes, photos[0], (5, 5, 20, 20), "widget", True, tmp_path, 10**7)
    boxes = add_box(boxes, photos[0], (5, 5, 60, 60), "widget", False, tmp_path, 10**7)
    ontology = query_ontology("car=car,van\nperson", boxes)
    assert ontology.names == ["car", "person", "widget"]
    car, person, widget = ontology.classes
    assert car.prompts == ("car", "van") and len(car.exemplars) == 1 and not person.exemplars
    assert widget.prompts == () and [e.negative for e in widget.exemplars] == [True, False]
    assert query_ontology("# only a comment", boxes[:1]).names == ["car"]  # the boxes alone define it
    with pytest.raises(ConfigError, match="at least one class"):
        query_ontology("", ())
    assert exemplars.class_choices("car=car,van;not=toy\n# x\nperson", boxes) == ["car", "person", "widget"]


def test_the_canvas_shows_the_boxes_of_this_image_only(photos, tmp_path):
    from PIL import Image

    boxes = add_box((), photos[0], (1, 2, 30, 40), "car", False, tmp_path, 10**7)
    boxes = add_box(boxes, photos[1], (5, 5, 20, 20), "car", True, tmp_path, 10**7)
    value = exemplars.canvas_value(Image.new("RGB", (60, 85)), (120, 170), boxes[1].sha256, boxes)
    assert (value["width"], value["height"], value["key"]) == (120, 170, boxes[1].sha256)
    assert value["image"].startswith("data:image/jpeg;base64,")  # never a served file
    (shown,) = value["boxes"]
    assert shown["id"] == 1 and shown["rejected"] is True and shown["text"] == "2: not car"
    assert value["legend"] == [{"name": "car", "color": shown["color"], "count": 2}] and value["can_undo"]


@pytest.fixture
def app(tiny_owlv2, tiny_sam2, tmp_path):
    app = AutolabelApp(make_config(tmp_path, tiny_owlv2, tiny_sam2))
    app.build()
    return app


def test_drawing_on_the_test_tab_adds_a_box_and_queries_with_it(app, photos):
    import gradio as gr

    from autolabel.ui.tab_batch import examples_text

    tab, path = app.test, str(photos[0])

    def gesture(examples, **data):
        return list(tab.on_canvas(path, "", 0.1, "detect", None, "", examples, "off", "widget", "is the class",
                                  SimpleNamespace(_data=data)))

    first, *queried = gesture((), action="add", box=[10, 10, 60, 80])
    (box,) = examples = first[tab.examples]
    assert box.class_name == "widget" and box.exemplar.box == (10, 10, 60, 80)
    assert first[tab.canvas]["boxes"][0]["xyxy"] == [10, 10, 60, 80] and len(first[tab.example_list]) == 1
    result = queried[-1]
    assert "classes widget" in result[tab.timing] and set(result[tab.table]["prompt"]) <= {"(example box)"}
    # Select picks the box for removal; undo removes the last box; redo changes nothing.
    assert gesture(examples, action="select", id=0) == [{tab.example_pick: gr.update(value=0)}]
    assert gesture(examples, action="undo")[0][tab.examples] == ()
    assert gesture(examples, action="redo") == [gr.skip()]
    # The Batch tab says it starts from the same boxes.
    assert "1 example box drawn on the Test tab (widget)" in examples_text(examples)


def test_a_box_needs_an_uploaded_image_and_removal_queries_again(app, photos):
    tab, path = app.test, str(photos[0])
    with pytest.raises(ConfigError, match="upload an image"):
        list(tab.on_canvas(None, "car", 0.1, "detect", None, "", (), "off", "car", "is the class",
                           SimpleNamespace(_data={"action": "add", "box": [1, 1, 5, 5]})))
    boxes = add_box((), photos[0], (1, 2, 30, 40), "car", False, app.config.work_dir, 10**7)
    shown, *queried = list(tab.remove_example(path, "car", 0.1, "detect", None, "", boxes, "off", 0))
    assert shown[tab.examples] == () and shown[tab.canvas]["boxes"] == [] and queried
    cleared, *_ = list(tab.clear_examples(path, "car", 0.1, "detect", None, "", boxes, "off"))
    assert cleared[tab.examples] == ()
