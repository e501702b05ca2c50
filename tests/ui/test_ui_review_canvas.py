"""The Review canvas in a real headless Chromium: real mouse drags draw, move and resize boxes, and
undo puts a label back; each edit lands in the store at once as a person's label. Screenshots at
1366x768 and 1920x1080 go to ``test-artifacts/ui/``."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from autolabel.detections import Detections
from autolabel.ontology import Ontology
from autolabel.store import ImageResult, open_store
from ui_helpers import live_server, make_config, shot, wait_text

pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated:Warning"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning")]

WIDTH, HEIGHT = 400, 300
RUN = "canvas"
PORTRAIT_RUN = "portrait"
SEGMENT_RUN = "segment"
POINTS_RUN = "points"


@pytest.fixture(scope="module")
def server(browser, tiny_owlv2, tiny_sam2, tmp_path_factory):
    root = tmp_path_factory.mktemp("canvas")
    config = make_config(root, tiny_owlv2, tiny_sam2)
    rng = np.random.default_rng(1)
    paths = []
    for i, name in enumerate(["a.jpg", "b<i>x.jpg"]):  # HTML in a file name stays text
        path = root / name
        Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    ontology = Ontology.from_prompts(["car", "<b>person</b>"])
    with open_store(config.runs_dir / RUN) as store:
        store.bind_config({"model": "m", "mode": "detect", "ontology": ontology.to_dict()})
        store.write_results([
            ImageResult(str(paths[0]), "s0", WIDTH, HEIGHT,
                        Detections(np.array([[40.0, 40, 160, 140]]), np.array([0.8]), np.array([0]), np.array([0]))),
            ImageResult(str(paths[1]), "s1", WIDTH, HEIGHT, Detections.empty())])
    # A run of one portrait photo: the tallest image the canvas must show whole.
    portrait = root / "portrait.jpg"
    Image.fromarray(rng.integers(0, 255, (WIDTH, HEIGHT, 3), dtype=np.uint8)).save(portrait)
    with open_store(config.runs_dir / PORTRAIT_RUN) as store:
        store.bind_config({"model": "m", "mode": "detect", "ontology": ontology.to_dict()})
        store.write_results([ImageResult(str(portrait), "p0", HEIGHT, WIDTH,
                                         Detections(np.array([[30.0, 250, 270, 390]]), np.array([0.8]), np.array([0]),
                                                    np.array([0])))])
    # A segment run whose one label has no mask (e.g. moved with masks off): the overlay starts empty.
    with open_store(config.runs_dir / SEGMENT_RUN) as store:
        store.bind_config({"model": "m", "sam_model": "s", "mode": "segment", "ontology": ontology.to_dict()})
        store.write_results([ImageResult(str(paths[0]), "s0", WIDTH, HEIGHT,
                                         Detections(np.array([[40.0, 40, 160, 140]]), np.array([0.8]), np.array([0]),
                                                    np.array([0])))])
    with open_store(config.runs_dir / POINTS_RUN) as store:  # the same, for refining its mask with clicks
        store.bind_config({"model": "m", "sam_model": "s", "mode": "segment", "ontology": ontology.to_dict()})
        store.write_results([ImageResult(str(paths[0]), "s0", WIDTH, HEIGHT,
                                         Detections(np.array([[40.0, 40, 160, 140]]), np.array([0.8]), np.array([0]),
                                                    np.array([0])))])
    with live_server(config) as live:
        yield live


def _open(browser, server, viewport, run: str = RUN, images: int = 2):
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(60_000)  # a loaded 2-core machine can take long to answer a gesture
    page.goto(server.url)
    page.get_by_role("tab", name="Review").click()
    page.locator("#review-run input").click()
    page.locator(f"#review-run [data-testid=dropdown-option][aria-label='{run}']").click()
    page.click("#review-load")
    wait_text(page, "#review-position", f"Image 1 of {images}")
    page.wait_for_function("document.querySelector('#review-canvas .al-legend').innerText.includes('car: 1')")
    return context, page


def _to_screen(page, x, y):
    """Original pixels -> page coordinates, with the canvas's fit-to-window view (no zoom)."""
    box = page.locator("#review-canvas canvas").bounding_box()
    scale = min(round(box["width"]) / WIDTH, round(box["height"]) / HEIGHT)
    return (box["x"] + (round(box["width"]) - WIDTH * scale) / 2 + x * scale,
            box["y"] + (round(box["height"]) - HEIGHT * scale) / 2 + y * scale)


def _drag(page, start, end):
    page.mouse.move(*_to_screen(page, *start))
    page.mouse.down()
    for k in range(1, 6):  # a real drag: several moves
        page.mouse.move(*_to_screen(page, start[0] + (end[0] - start[0]) * k / 5, start[1] + (end[1] - start[1]) * k / 5))
    page.mouse.up()


def _then(page, action, text: str) -> None:
    """Do ``action``, then wait until the hint is a new one containing ``text``."""
    page.evaluate("document.querySelector('#review-hint').dataset.seen = document.querySelector('#review-hint').innerText")
    action()
    page.wait_for_function("([t]) => { const el = document.querySelector('#review-hint');"
                           " return el.innerText.includes(t) && el.innerText !== el.dataset.seen"
                           " && !el.innerText.includes('processing'); }", arg=[text])


def _saved(server, boxes: list[list[float]], timeout: float = 60):
    """Wait until the store holds exactly ``boxes`` (the hint can repeat an earlier message, the
    store cannot), then give the labels; the next gesture starts from that state."""
    deadline = time.monotonic() + timeout
    while True:
        _, labels = _labels(server)
        got = sorted(labels.xyxy.tolist())
        if len(got) == len(boxes) and all(np.allclose(g, b, atol=1.5) for g, b in zip(got, sorted(boxes))):
            return labels
        if time.monotonic() > deadline:
            raise AssertionError(f"the store holds {got}, not {boxes}")
        time.sleep(0.1)


def _labels(server):
    with server.app.open_run(RUN) as store:
        image_id = next(store.images()).id
        return store, store.labels(image_id)


def test_drag_draw_resize_move_and_undo(browser, server):
    context, page = _open(browser, server, {"width": 1366, "height": 768})
    try:
        assert "<b>" not in page.inner_html("#review-position") and "<b>" not in page.inner_html("#review-canvas .al-legend")
        shot(page, "review-canvas-1366x768")
        # What sits above the tabs must stay short: gestures start on the canvas without scrolling.
        box = page.locator("#review-canvas canvas").bounding_box()
        assert box["y"] + 0.75 * box["height"] <= 768, f"the canvas starts at y={box['y']:.0f} of 768"

        # Resize the model's box by its bottom-right handle: it becomes a person's label.
        _then(page, lambda: _drag(page, (160, 140), (200, 180)), "Saved: moved")
        labels = _saved(server, [[40, 40, 200, 180]])
        assert labels.sources.tolist() == ["human"] and not labels.has_score.any()

        # Move it by dragging its inside.
        _then(page, lambda: _drag(page, (100, 100), (130, 90)), "Saved: moved")
        _saved(server, [[70, 30, 230, 170]])

        # Draw a new box on empty space.
        _then(page, lambda: _drag(page, (260, 200), (380, 280)), "Saved: added")
        labels = _saved(server, [[70, 30, 230, 170], [260, 200, 380, 280]])
        assert len(labels) == 2 and sorted(labels.sources.tolist()) == ["human", "human"]
        drawn = labels[np.isnan(labels.scores) & (labels.xyxy[:, 0] > 250)]
        assert drawn.xyxy.tolist() == [pytest.approx([260, 200, 380, 280], abs=1.5)]
        shot(page, "review-canvas-edited-1366x768")

        # Undo twice with the keyboard: the drawn box goes, the moved box goes back.
        page.click("#review-position")
        _then(page, lambda: page.keyboard.press("Control+z"), "Undo: label #2")
        _then(page, lambda: page.keyboard.press("Control+z"), "Undo: label #1")
        _, labels = _labels(server)
        assert labels.xyxy.tolist() == [pytest.approx([40, 40, 200, 180], abs=1.5)]
        with server.app.open_run(RUN) as store:  # the model's prediction is still there for evaluation
            predicted = store.model_predictions(next(store.images()).id)
        assert predicted.xyxy.tolist() == [[40, 40, 160, 140]] and predicted.scores.tolist() == [pytest.approx(0.8)]

        # The help overlay and the image strip.
        page.keyboard.press("?")
        page.wait_for_selector("#review-canvas .al-help", state="visible")
        page.keyboard.press("Escape")
        page.locator("#review-canvas .al-strip button").nth(1).click()
        wait_text(page, "#review-position", "Image 2 of 2")
        assert "<i>" not in page.inner_html("#review-position")
    finally:
        context.close()


def test_a_box_drawn_in_a_segment_run_gets_its_mask(browser, server):
    context, page = _open(browser, server, {"width": 1366, "height": 768}, SEGMENT_RUN, 1)
    try:
        assert page.locator("#review-masks input").is_checked()  # on by default in a segment run
        assert page.evaluate("document.querySelector('#review-canvas .al-review').dataset.masks") == "none"
        _then(page, lambda: _drag(page, (230, 150), (370, 270)), "Saved: added")
        page.wait_for_function("document.querySelector('#review-canvas .al-review').dataset.masks === 'drawn'")
        with server.app.open_run(SEGMENT_RUN) as store:
            labels = store.labels(next(store.images()).id)
        drawn = labels[labels.xyxy[:, 0] > 200]
        assert drawn.xyxy.tolist() == [pytest.approx([230, 150, 370, 270], abs=1.5)]
        assert drawn.masks[0]["size"] == [HEIGHT, WIDTH] and labels.masks[0] is None  # only the drawn box has one
        assert "with its mask" in page.inner_text("#review-hint")
        shot(page, "review-segment-mask-1366x768", full_page=False)
    finally:
        context.close()


def _alt_click(page, x, y, negative: bool = False) -> None:
    modifiers = ["Alt", "Shift"] if negative else ["Alt"]
    for key in modifiers:
        page.keyboard.down(key)
    page.mouse.click(*_to_screen(page, x, y))
    for key in reversed(modifiers):
        page.keyboard.up(key)


def _points_mask(server):
    with server.app.open_run(POINTS_RUN) as store:
        masks = store.labels(next(store.images()).id).masks
        return masks[0] if masks else None


def test_alt_click_points_refine_the_selected_labels_mask(browser, server):
    import shutil
    from pathlib import Path

    context, page = _open(browser, server, {"width": 1366, "height": 768}, POINTS_RUN, 1)
    root = "document.querySelector('#review-canvas .al-review')"
    try:
        assert _points_mask(server) is None and page.evaluate(f"{root}.dataset.masks") == "none"
        _then(page, lambda: _alt_click(page, 100, 90), "1 point")
        page.wait_for_function(f"{root}.dataset.masks === 'drawn' && {root}.dataset.points === '1'")
        positive = _points_mask(server)
        assert positive is not None and positive["size"] == [HEIGHT, WIDTH]
        _then(page, lambda: _alt_click(page, 60, 125, negative=True), "2 point")
        page.wait_for_function(f"{root}.dataset.points === '2'")
        assert _points_mask(server) not in (None, positive)  # the negative point changed the mask
        page.mouse.move(10, 10)  # the pointer off the canvas for the picture
        path = shot(page, "review-points-1366x768", full_page=False)
        Path("/tmp/ui_shots").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, "/tmp/ui_shots/review-points-1366x768.png")
        _then(page, lambda: page.click("#review-canvas [data-act=clear-points]"), "from its box alone")
        page.wait_for_function(f"{root}.dataset.points === '0'")
        assert _points_mask(server) not in (None, positive)
        with server.app.open_run(POINTS_RUN) as store:
            assert store.labels(next(store.images()).id).xyxy.tolist() == [[40, 40, 160, 140]]  # the box stays
    finally:
        context.close()


def test_canvas_fits_a_large_screen(browser, server):
    context, page = _open(browser, server, {"width": 1920, "height": 1080})
    try:
        box = page.locator("#review-canvas canvas").bounding_box()
        strip = page.locator("#review-canvas .al-strip").bounding_box()
        assert strip["y"] + strip["height"] - box["y"] <= 1080 and box["width"] > 900  # fits when scrolled to
        shot(page, "review-canvas-1920x1080")
    finally:
        context.close()



#: What a reviewer uses on every image: it must all be on a 1366x768 screen without scrolling.
EVERY_IMAGE_CONTROLS = ("review-prev", "review-next", "review-accept-image", "review-accept", "review-reject",
                        "review-class")


@pytest.mark.parametrize("run, images, orientation", [(RUN, 2, "landscape"), (PORTRAIT_RUN, 1, "portrait")])
def test_image_and_controls_fit_a_laptop_screen(browser, server, run, images, orientation):
    viewport = {"width": 1366, "height": 768}
    context, page = _open(browser, server, viewport, run, images)
    try:
        page.evaluate("window.scrollTo(0, 0)")  # choosing the run may have scrolled its list into view
        page.wait_for_timeout(300)  # the canvas sizes itself on the next frame
        shot(page, f"review-{orientation}-1366x768", full_page=False)
        _in_view(page, viewport)
        # A status line that wraps (every model loaded, long names) moves the canvas: it fits again.
        page.evaluate("document.querySelector('#model-status').insertAdjacentHTML('beforeend',"
                      " '<p>' + 'a long model status line '.repeat(8) + '</p>')")
        page.wait_for_timeout(300)
        _in_view(page, viewport)
    finally:
        context.close()


def _in_view(page, viewport) -> None:
    """The whole image, the image strip and ``EVERY_IMAGE_CONTROLS`` lie inside the window."""
    assert page.evaluate("window.scrollY") == 0
    stage = page.locator("#review-canvas canvas").bounding_box()
    drawn = page.evaluate("document.querySelector('#review-canvas .al-review').dataset.imageBox").split(",")
    x0, y0, x1, y1 = (float(v) for v in drawn)  # the image as drawn, in canvas pixels
    assert x1 - x0 > 0 and y1 - y0 > 0 and x0 >= 0 and y0 >= 0
    assert stage["y"] + y1 <= viewport["height"] and stage["x"] + x1 <= viewport["width"], (stage, drawn)
    # The canvas takes the window's height down to the image strip, which is in view too.
    strip = page.locator("#review-canvas .al-strip").bounding_box()
    assert stage["height"] >= 300 and viewport["height"] - 40 <= strip["y"] + strip["height"] <= viewport["height"]
    for elem_id in EVERY_IMAGE_CONTROLS:
        box = page.locator(f"#{elem_id}").bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], (elem_id, box)
        assert box["x"] + box["width"] <= viewport["width"], (elem_id, box)
