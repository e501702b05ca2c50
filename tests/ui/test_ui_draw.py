"""ui.draw: boxes land on the right display pixels, masks blend, labels say class and score."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from autolabel.detections import Detections
from autolabel.geometry import mask_to_rle
from autolabel.ui.draw import (
    MASK_ALPHA,
    REJECTED_COLOR,
    Shape,
    class_color,
    detection_shapes,
    draw_shapes,
)

GREY = (128, 128, 128)


def _canvas(w=200, h=100):
    return Image.new("RGB", (w, h), GREY)


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0])  # display smaller, equal, larger than the original
def test_box_outline_is_drawn_at_scaled_pixels(scale):
    image = _canvas(round(200 * scale), round(100 * scale))
    out = np.asarray(draw_shapes(image, [Shape((20, 30, 120, 80), "", (255, 0, 0))], scale))
    x0, y0, x1, y1 = (round(v * scale) for v in (20, 30, 120, 80))
    assert tuple(out[(y0 + y1) // 2, x0]) == (255, 0, 0)  # left edge
    assert tuple(out[(y0 + y1) // 2, x1]) == (255, 0, 0)  # right edge
    assert tuple(out[y0, (x0 + x1) // 2]) == (255, 0, 0)  # top edge
    assert tuple(out[(y0 + y1) // 2, (x0 + x1) // 2]) == GREY  # inside untouched (no mask)
    assert tuple(out[2, 2]) == GREY


def test_mask_is_a_translucent_overlay_at_display_size():
    mask = np.zeros((100, 200), dtype=bool)
    mask[40:60, 50:150] = True
    color = (0, 0, 255)
    image = _canvas(100, 50)  # displayed at half size
    out = np.asarray(draw_shapes(image, [Shape((50, 40, 150, 60), "", color, mask_to_rle(mask))], 0.5))
    expected = np.round(np.array(GREY) * (1 - MASK_ALPHA) + np.array(color) * MASK_ALPHA)
    np.testing.assert_array_equal(out[25, 50], expected)  # inside the mask
    assert tuple(out[5, 5]) == GREY  # outside


@pytest.mark.parametrize("display", [(200, 100), (67, 33), (513, 257), (7, 3)])  # same, smaller, larger, tiny
def test_display_masks_are_sampled_from_the_runs_as_a_nearest_resize(display):
    """Masks are drawn without a full-size decode, and look as OpenCV's nearest resize of one."""
    import cv2

    from autolabel.geometry import rle_to_mask
    from autolabel.ui.draw import _mask_for_display

    rng = np.random.default_rng(0)
    mask = np.zeros((100, 200), dtype=bool)
    mask[10:90, 30:170] = rng.random((80, 140)) < 0.7  # many runs, long and short
    rle = mask_to_rle(mask)
    expected = cv2.resize(rle_to_mask(rle).astype(np.uint8), display, interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(_mask_for_display(rle, *display), expected.astype(bool))


def test_labels_are_drawn_and_input_is_not_modified():
    image = _canvas()
    before = np.asarray(image).copy()
    with_label = np.asarray(draw_shapes(image, [Shape((20, 40, 120, 90), "car 0.87", (255, 255, 0))]))
    without = np.asarray(draw_shapes(image, [Shape((20, 40, 120, 90), "", (255, 255, 0))]))
    np.testing.assert_array_equal(np.asarray(image), before)
    # The label sits above the box, on the class colour.
    assert (with_label[20:40, 20:120] != without[20:40, 20:120]).any()


def test_text_scale_draws_larger_labels():
    """Side by side the page shows each result at about half size: its labels are drawn larger."""
    shape = Shape((20, 60, 180, 95), "car 0.87", (255, 255, 0))

    def label_height(text_scale):
        out = np.asarray(draw_shapes(_canvas(), [shape], text_scale=text_scale))
        rows = np.flatnonzero((out[:60] == (255, 255, 0)).all(axis=2).any(axis=1))  # the label's background
        return rows.max() - rows.min() + 1

    assert label_height(2.0) >= 1.4 * label_height(1.0)  # the box padding does not grow


def test_marker_is_drawn():
    out = np.asarray(draw_shapes(_canvas(), [], marker=(100, 50)))
    assert tuple(out[50, 100]) != GREY


def test_detection_shapes_label_class_and_score():
    dets = Detections(np.array([[1, 2, 30, 40], [5, 5, 9, 9]]), np.array([0.875, 0.5]), np.array([1, 0]),
                      np.array([2, 0]))
    shapes = detection_shapes(dets, ["car", "person"])
    assert [s.label for s in shapes] == ["person 0.88", "car 0.50"]
    assert shapes[0].color == class_color(1) and shapes[0].rle is None


def test_stored_labels_show_id_and_review_state():
    RLE = {"size": [8, 8], "counts": "0R10"}
    labels = Detections(np.array([[1, 1, 5, 5]] * 3, dtype=np.float64), [0.9, 0.9, np.nan], [0, 0, 0], [0, 0, -1],
                        [RLE, RLE, None], ids=[1, 2, 3], sources=["model", "model", "human"],
                        reviews=["pending", "rejected", "accepted"])
    shapes = detection_shapes(labels, ["car"], selected_id=3)
    assert shapes[0].label == "#1 car 0.90" and not shapes[0].dashed and shapes[0].rle == RLE
    assert shapes[1].color == REJECTED_COLOR and shapes[1].dashed and shapes[1].rle is None
    assert shapes[1].label == "#2 car 0.90 (rejected)"
    assert shapes[2].label == "#3 car human (ok)" and shapes[2].thick and not shapes[0].thick
