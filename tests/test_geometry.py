"""Tests for autolabel.geometry: boxes, NMS, COCO RLE and polygons (known answers + round trips)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util

from autolabel.geometry import (
    batched_nms,
    box_area,
    box_iou,
    clip_boxes,
    mask_iou,
    mask_to_polygons,
    mask_to_rle,
    nms,
    polygons_to_rle,
    region_to_rle,
    rle_area,
    rle_to_mask,
    rle_to_xyxy,
)

# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _disk(h: int, w: int, cx: int, cy: int, r: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    cv2.circle(m, (cx, cy), r, 1, -1)
    return m.astype(bool)


def _place(region: np.ndarray, x0: int, y0: int, height: int, width: int) -> np.ndarray:
    """Reference for region_to_rle: paste region into a full frame, cutting off what falls outside."""
    full = np.zeros((height, width), dtype=bool)
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + region.shape[1], width), min(y0 + region.shape[0], height)
    if fx1 > fx0 and fy1 > fy0:
        full[fy0:fy1, fx0:fx1] = region[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0] != 0
    return full


def _blobby(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random blobs (several parts, holes) from upsampled noise."""
    noise = rng.random((h // 8 + 2, w // 8 + 2)).astype(np.float32)
    return cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC) > 0.55


def _roundtrip(mask: np.ndarray, min_area: float = 4.0) -> np.ndarray:
    polys = mask_to_polygons(mask, min_area=min_area)
    return rle_to_mask(polygons_to_rle(polys, *mask.shape))


# ------------------------------------------------------------------------------------------------
# RLE
# ------------------------------------------------------------------------------------------------

RLE_MASKS = [
    np.zeros((7, 5), dtype=bool),  # empty
    np.ones((7, 5), dtype=bool),  # full
    _rect(7, 5, 0, 1, 0, 1),  # single pixel at the origin (leading zero-length run)
    _rect(7, 5, 6, 7, 4, 5),  # single pixel at the last position (no trailing run)
    np.ones((1, 9), dtype=bool),  # one row
    np.random.default_rng(0).random((13, 17)) < 0.5,  # noise
    _disk(40, 30, 15, 20, 9).astype(np.uint8),  # uint8 input
]


@pytest.mark.parametrize("mask", RLE_MASKS)
def test_mask_rle_round_trip(mask):
    rle = mask_to_rle(mask)
    assert rle["size"] == list(mask.shape)
    assert isinstance(rle["counts"], str)
    json.dumps(rle)  # JSON-ready
    decoded = rle_to_mask(rle)
    assert decoded.dtype == bool
    np.testing.assert_array_equal(decoded, mask != 0)


def test_rle_accepts_bytes_and_uncompressed_counts():
    mask = _rect(6, 8, 1, 4, 2, 7)
    rle = mask_to_rle(mask)
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    np.testing.assert_array_equal(rle_to_mask(as_bytes), mask)
    # column-major run lengths: 2 empty columns (12) + 1 empty row ... built by hand from the mask
    flat = mask.flatten(order="F").astype(np.int64)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flat, [0]))))
    counts = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
    if counts[-1] == 0:
        counts = counts[:-1]
    np.testing.assert_array_equal(rle_to_mask({"size": [6, 8], "counts": counts}), mask)


@pytest.mark.parametrize(
    "bad",
    [
        {"counts": "abc"},  # no size
        {"size": [3], "counts": "abc"},  # size not [h, w]
        {"size": [3, 3], "counts": 5},  # counts of a wrong type
        "not a dict",  # not a dict
    ],
)
def test_rle_bad_input_raises(bad):
    with pytest.raises(ValueError):
        rle_to_mask(bad)


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((2, 3, 4))])  # 1-D, 3-D
def test_mask_to_rle_bad_shape_raises(bad):
    with pytest.raises(ValueError):
        mask_to_rle(bad)


REGION_CASES = [
    # (region shape, x0, y0, frame height, frame width)
    ((5, 4), 3, 2, 20, 30),  # wholly inside
    ((5, 4), 0, 0, 20, 30),  # touching top-left corner
    ((5, 4), 26, 15, 20, 30),  # touching bottom-right corner
    ((5, 4), -2, -3, 20, 30),  # crossing top-left
    ((5, 4), 28, 17, 20, 30),  # crossing bottom-right
    ((40, 50), -5, -7, 20, 30),  # larger than the frame on all sides
    ((20, 30), 0, 0, 20, 30),  # exactly the frame (runs join across columns)
    ((5, 4), 30, 0, 20, 30),  # wholly right of the frame
    ((5, 4), -4, -5, 20, 30),  # wholly above-left of the frame
    ((0, 0), 3, 3, 20, 30),  # zero-size region
]


@pytest.mark.parametrize("shape, x0, y0, height, width", REGION_CASES)
@pytest.mark.parametrize("fill", ["ones", "zeros", "noise"])
def test_region_to_rle_known_cases(shape, x0, y0, height, width, fill):
    rng = np.random.default_rng(1)
    region = {"ones": np.ones(shape, bool), "zeros": np.zeros(shape, bool)}.get(
        fill, rng.random(shape) < 0.5
    )
    expected = mask_to_rle(_place(region, x0, y0, height, width))
    assert region_to_rle(region, x0, y0, height, width) == expected


def test_region_to_rle_equals_mask_to_rle_random():
    rng = np.random.default_rng(2024)
    for _ in range(1500):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        h, w = (int(v) for v in rng.integers(0, 45, 2))
        density = rng.choice([0.0, 0.05, 0.5, 0.95, 1.0])
        region = (rng.random((h, w)) < density).astype(rng.choice([bool, np.uint8]))
        x0 = int(rng.integers(-w - 2, width + 3))
        y0 = int(rng.integers(-h - 2, height + 3))
        got = region_to_rle(region, x0, y0, height, width)
        assert got == mask_to_rle(_place(region, x0, y0, height, width)), (h, w, x0, y0)


def test_region_to_rle_bad_input_raises():
    with pytest.raises(ValueError):
        region_to_rle(np.ones((2, 2, 2), bool), 0, 0, 5, 5)  # 3-D region
    with pytest.raises(ValueError):
        region_to_rle(np.ones((2, 2), bool), 0, 0, 0, 5)  # empty frame


def test_rle_area_and_box():
    mask = _rect(20, 30, 2, 7, 3, 13)  # rows 2..6, cols 3..12
    rle = mask_to_rle(mask)
    assert rle_area(rle) == 50
    np.testing.assert_array_equal(rle_to_xyxy(rle), [3, 2, 13, 7])
    assert rle_to_xyxy(rle).shape == (4,)
    empty = mask_to_rle(np.zeros((4, 4), bool))
    assert rle_area(empty) == 0
    np.testing.assert_array_equal(rle_to_xyxy(empty), [0, 0, 0, 0])


IOU_CASES = [
    # (mask a, mask b, expected IoU)
    (_rect(20, 20, 0, 10, 0, 10), _rect(20, 20, 0, 10, 0, 10), 1.0),  # identical
    (_rect(20, 20, 0, 10, 0, 10), _rect(20, 20, 0, 10, 5, 15), 50 / 150),  # half shifted
    (_rect(20, 20, 0, 10, 0, 10), _rect(20, 20, 10, 20, 10, 20), 0.0),  # disjoint
    (_rect(20, 20, 0, 10, 0, 10), _rect(20, 20, 0, 5, 0, 5), 25 / 100),  # contained
    (np.zeros((20, 20), bool), np.zeros((20, 20), bool), 0.0),  # both empty
]


@pytest.mark.parametrize("a, b, expected", IOU_CASES)
def test_mask_iou(a, b, expected):
    assert mask_iou(a, b) == pytest.approx(expected)


def test_iou_size_mismatch_raises():
    with pytest.raises(ValueError):
        mask_iou(np.zeros((3, 3)), np.zeros((3, 4)))


# ------------------------------------------------------------------------------------------------
# Boxes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        box_area,
        lambda b: clip_boxes(b, 10, 10),
        lambda b: box_iou(b, b),
        lambda b: nms(b, np.ones(len(b)), 0.5),
    ],
)
@pytest.mark.parametrize("bad", [np.zeros((3, 5)), np.zeros(4), np.zeros((2, 2, 4))])
def test_box_functions_reject_bad_shapes(fn, bad):
    with pytest.raises(ValueError):
        fn(bad)


def test_clip_boxes():
    boxes = [[-5, -1, 50, 8], [3, 4, 5, 6]]
    np.testing.assert_array_equal(clip_boxes(boxes, 40, 30), [[0, 0, 40, 8], [3, 4, 5, 6]])
    np.testing.assert_array_equal(clip_boxes([[45, 35, 50, 40]], 40, 30), [[40, 30, 40, 30]])


def test_box_area():
    areas = box_area([[0, 0, 10, 5], [2, 2, 2, 9], [5, 5, 1, 1]])  # normal, zero-width, inverted
    np.testing.assert_array_equal(areas, [50, 0, 0])


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], float)  # a unit-free square and a zero-area box
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 5]], float)
    iou = box_iou(a, b)
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0, 0.25])
    np.testing.assert_array_equal(iou[1], 0.0)  # zero-area box: IoU 0, not NaN
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)


# three boxes: 0 and 1 overlap with IoU 81/119 ~ 0.68, box 2 is far away
NMS_BOXES = np.array([[1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], float)
NMS_SCORES = np.array([0.8, 0.7, 0.9])


@pytest.mark.parametrize(
    "threshold, expected",
    [
        (0.5, [2, 1]),  # overlapping lower-score box suppressed
        (0.7, [2, 0, 1]),  # IoU 0.68 below threshold: all kept, by score
        (1.0, [2, 0, 1]),  # threshold 1 keeps all
        (0.0, [2, 1]),  # only overlapping boxes suppressed, disjoint survive
    ],
)
def test_nms_three_boxes(threshold, expected):
    keep = nms(NMS_BOXES, NMS_SCORES, threshold)
    assert keep.dtype == np.int64
    assert keep.tolist() == expected


def test_nms_duplicates_threshold_one_keeps_all_and_ties_are_stable():
    boxes = np.tile([[0, 0, 10, 10]], (3, 1)).astype(float)
    assert nms(boxes, [0.5, 0.5, 0.5], 1.0).tolist() == [0, 1, 2]
    assert nms(boxes, [0.5, 0.5, 0.5], 0.99).tolist() == [0]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_nms_bad_scores_raise():
    with pytest.raises(ValueError):
        nms(NMS_BOXES, [0.1, 0.2], 0.5)


@pytest.mark.parametrize(
    "class_ids, expected",
    [
        ([0, 0, 0], [2, 1]),  # one class: as plain NMS
        ([1, 5, 0], [2, 0, 1]),  # overlapping boxes in different classes both survive
        ([3, 3, 7], [2, 0, 1]),  # the 0.9 box is alone in its class; the overlap is across classes
        ([7, 3, 7], [2, 1]),  # boxes 0 and 2 share a class: 0 suppressed; order by score overall
    ],
)
def test_batched_nms(class_ids, expected):
    assert batched_nms(NMS_BOXES, NMS_SCORES, class_ids, 0.5).tolist() == expected


def test_batched_nms_order_is_by_score_across_classes():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]], float)
    scores = np.array([0.3, 0.9, 0.6, 0.95])
    keep = batched_nms(boxes, scores, [0, 1, 0, 0], 0.5)
    assert keep.tolist() == [3, 1, 2]
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), 0.5).tolist() == []
    with pytest.raises(ValueError):
        batched_nms(boxes, scores, [0, 1], 0.5)


def _reference_nms(b, s, iou_threshold):
    """The reference greedy NMS (one IoU row per kept box), as ``nms`` was written first."""
    order = np.argsort(-s, kind="stable")
    if iou_threshold >= 1.0 or b.shape[0] <= 1:
        return order.astype(np.int64)
    keep = []
    while order.size:
        keep.append(int(order[0]))
        rest = order[1:]
        order = rest[box_iou(b[order[:1]], b[rest])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def _batched_nms_per_class(boxes, scores, class_ids, iou_threshold):
    """The reference batched NMS: the reference NMS class by class, kept indices ordered by score
    (ties: index)."""
    b, s, c = np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores, float), np.asarray(class_ids)
    kept = [np.flatnonzero(c == k)[_reference_nms(b[c == k], s[c == k], iou_threshold)] for k in np.unique(c)]
    if not kept:
        return np.zeros(0, dtype=np.int64)
    keep = np.sort(np.concatenate(kept))
    return keep[np.argsort(-s[keep], kind="stable")].astype(np.int64)


def _random_nms_case(rng, n):
    """Boxes crowded on a few centres (much overlap), scores with many ties, some duplicate and
    degenerate (zero-area) boxes, integer pixel boxes whose IoU can equal the threshold exactly."""
    centres = rng.uniform(0, 200, (3, 2))
    xy = centres[rng.integers(0, 3, n)] + rng.normal(0, 8, (n, 2))
    wh = rng.uniform(0, 40, (n, 2)) * (rng.random((n, 1)) > 0.05)
    boxes = np.hstack([xy, xy + wh])
    if rng.random() < 0.5:
        boxes = np.round(boxes)
    dup = rng.random(n) < 0.2
    boxes[dup] = boxes[rng.integers(0, n, int(dup.sum()))]
    scores = np.round(rng.random(n), int(rng.integers(1, 3)))  # one or two decimals: ties
    return boxes, scores.astype(rng.choice([np.float32, np.float64])), rng.integers(0, int(rng.integers(1, 5)), n)


@pytest.mark.parametrize("rows_at_once", [256, 7])  # 7: many blocks of IoU rows per call
def test_batched_nms_equals_plain_nms_class_by_class(rows_at_once, monkeypatch):
    from autolabel import geometry

    rng = np.random.default_rng(rows_at_once)
    suppressed = 0
    for case in range(300):
        boxes, scores, class_ids = _random_nms_case(rng, int(rng.integers(0, 60)))
        threshold = float(rng.choice([0.0, 0.3, 0.5, 0.5, 2 / 3, 0.9, 1.0]))
        want = _batched_nms_per_class(boxes, scores, class_ids, threshold)
        want_plain = _reference_nms(np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores, float), threshold)
        monkeypatch.setattr(geometry, "_NMS_ROWS", rows_at_once)
        got = batched_nms(boxes, scores, class_ids, threshold)
        assert got.dtype == np.int64 and got.tolist() == want.tolist(), case
        assert nms(boxes, scores, threshold).tolist() == want_plain.tolist(), case
        monkeypatch.undo()
        suppressed += len(boxes) - len(got)
    assert suppressed > 1000  # the cases do exercise suppression


def test_batched_nms_keeps_a_box_whose_iou_equals_the_threshold():
    # IoU exactly 1/2 (the same rule as nms: suppressed only above the threshold).
    boxes = np.array([[0, 0, 30, 10], [10, 0, 40, 10], [10, 0, 40, 10]], float)
    assert batched_nms(boxes, [0.9, 0.8, 0.7], [0, 0, 1], 0.5).tolist() == [0, 1, 2]
    assert batched_nms(boxes, [0.9, 0.8, 0.7], [0, 0, 0], 0.5).tolist() == [0, 1]


# ------------------------------------------------------------------------------------------------
# Polygons
# ------------------------------------------------------------------------------------------------


def test_raw_opencv_contours_are_half_a_pixel_small():
    """The measurement behind the pixel convention (see geometry module docstring)."""
    mask = _rect(40, 40, 10, 30, 10, 30)  # filled 20x20 square
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    raw = [contours[0].reshape(-1).astype(float).tolist()]
    raw_iou = mask_iou(rle_to_mask(polygons_to_rle(raw, 40, 40)), mask)
    assert raw_iou == pytest.approx(19 * 19 / 400)  # 0.9025: one row/column lost
    assert mask_iou(_roundtrip(mask), mask) == 1.0
    assert mask_to_polygons(mask) == [[30.0, 10.0, 30.0, 30.0, 10.0, 30.0, 10.0, 10.0]]


def _ring() -> np.ndarray:
    return _disk(100, 100, 50, 50, 30) & ~_disk(100, 100, 50, 50, 15)


def _two_holes() -> np.ndarray:
    m = _rect(60, 60, 5, 55, 5, 55)
    m[10:20, 10:20] = False
    m[30:40, 30:50] = False
    return m


def _island_in_hole() -> np.ndarray:
    m = _rect(60, 60, 5, 55, 5, 55)
    m[15:45, 15:45] = False
    m[25:35, 25:35] = True
    return m


POLYGON_CASES = [
    # (mask, expected number of polygons)
    (_rect(40, 40, 10, 30, 10, 30), 1),  # filled 20x20 square
    (_rect(60, 60, 10, 40, 15, 45), 1),  # 30x30 square
    (_disk(100, 100, 50, 50, 30), 1),  # circle
    (_disk(40, 40, 20, 20, 3), 1),  # small circle
    (_ring(), 1),  # ring: one polygon, hole bridged
    (_rect(60, 60, 5, 20, 5, 20) | _rect(60, 60, 30, 50, 35, 55), 2),  # two disjoint blobs
    (_two_holes(), 1),  # blob with two holes
    (_island_in_hole(), 2),  # frame with a hole holding an island
    (_rect(30, 30, 0, 10, 0, 30) | _rect(30, 30, 0, 30, 25, 30), 1),  # touching image borders
    (np.ones((12, 17), bool), 1),  # whole frame
    (_rect(30, 30, 5, 25, 5, 8) | _rect(30, 30, 22, 25, 5, 25), 1),  # L-shape (concave corner)
    (np.eye(12, dtype=bool) | np.eye(12, k=1, dtype=bool), 1),  # diagonal staircase
    (_rect(20, 20, 2, 6, 2, 6) | _rect(20, 20, 6, 10, 6, 10), 1),  # two squares touching at a corner
]


@pytest.mark.parametrize("mask, n_polygons", POLYGON_CASES)
def test_mask_to_polygons_reproduces_mask(mask, n_polygons):
    polys = mask_to_polygons(mask)
    assert len(polys) == n_polygons
    for poly in polys:
        assert len(poly) >= 6 and len(poly) % 2 == 0
        assert all(isinstance(v, float) for v in poly)
    back = _roundtrip(mask)
    assert mask_iou(back, mask) > 0.95
    np.testing.assert_array_equal(back, mask)  # the pixel-edge polygons are exact


def test_polygon_bbox_equals_mask_bbox():
    mask = _disk(100, 100, 40, 60, 25)
    xs = np.concatenate([p[0::2] for p in mask_to_polygons(mask)])
    ys = np.concatenate([p[1::2] for p in mask_to_polygons(mask)])
    np.testing.assert_array_equal([xs.min(), ys.min(), xs.max(), ys.max()], rle_to_xyxy(mask_to_rle(mask)))


def test_ring_hole_is_not_filled():
    ring = _ring()
    polys = mask_to_polygons(ring)
    assert len(polys) == 1
    back = _roundtrip(ring)
    assert not back[50, 50]  # centre of the hole stays empty
    assert not back[40:60, 40:60].any()
    assert mask_iou(back, ring) > 0.95


def test_two_blobs_both_present():
    a, b = _rect(60, 60, 5, 20, 5, 20), _rect(60, 60, 30, 50, 35, 55)
    back = _roundtrip(a | b)
    assert back[a].all() and back[b].all()
    assert not back[~(a | b)].any()


@pytest.mark.parametrize(
    "mask, min_area, n_polygons",
    [
        (np.zeros((10, 10), bool), 4.0, 0),  # empty mask
        (_rect(10, 10, 3, 4, 3, 4) | _rect(10, 10, 7, 8, 1, 2), 4.0, 0),  # one-pixel specks dropped
        (_rect(10, 10, 3, 4, 3, 6), 4.0, 0),  # 3-pixel line below min_area
        (_rect(10, 10, 3, 5, 3, 5), 4.0, 1),  # 2x2 block: area 4 kept
        (_rect(10, 10, 3, 4, 3, 4), 0.0, 1),  # single pixel kept with min_area=0
        (_rect(30, 30, 5, 20, 5, 20) | _rect(30, 30, 25, 26, 25, 26), 4.0, 1),  # blob + speck
    ],
)
def test_mask_to_polygons_specks(mask, min_area, n_polygons):
    assert len(mask_to_polygons(mask, min_area=min_area)) == n_polygons


def test_single_pixel_polygon_is_its_square():
    assert mask_to_polygons(_rect(10, 10, 3, 4, 5, 6), min_area=0) == [
        [6.0, 3.0, 6.0, 4.0, 5.0, 4.0, 5.0, 3.0]
    ]


def test_mask_to_polygons_is_deterministic_and_ordered():
    mask = _rect(60, 60, 30, 50, 5, 20) | _rect(60, 60, 5, 20, 35, 55) | _two_holes()[:, ::-1]
    first = mask_to_polygons(mask)
    assert first == mask_to_polygons(mask.copy())
    tops = [min(p[1::2]) for p in first]
    assert tops == sorted(tops)


def test_random_blobby_masks_round_trip():
    rng = np.random.default_rng(7)
    for _ in range(25):
        h, w = (int(v) for v in rng.integers(40, 120, 2))
        mask = _blobby(rng, h, w)
        back = _roundtrip(mask, min_area=0)
        if mask.any():
            assert mask_iou(back, mask) > 0.95
        np.testing.assert_array_equal(back, mask)


def test_random_noise_masks_round_trip_with_pinches():
    rng = np.random.default_rng(8)
    for _ in range(20):
        mask = rng.random((int(rng.integers(3, 30)), int(rng.integers(3, 30)))) < 0.5
        np.testing.assert_array_equal(_roundtrip(mask, min_area=0), mask)


def test_mask_to_polygons_bad_shape_raises():
    with pytest.raises(ValueError):
        mask_to_polygons(np.zeros((4, 4, 3), bool))


def test_polygons_to_rle():
    square = [0.0, 0.0, 10.0, 0.0, 10.0, 10.0, 0.0, 10.0]
    shifted = [5.0, 0.0, 15.0, 0.0, 15.0, 10.0, 5.0, 10.0]
    rle = polygons_to_rle([square, shifted], 20, 30)
    assert rle["size"] == [20, 30] and isinstance(rle["counts"], str)
    assert rle_area(rle) == 150  # union, not sum
    assert rle_area(polygons_to_rle([], 20, 30)) == 0
    # agrees with pycocotools used directly
    direct = mask_util.merge(mask_util.frPyObjects([square, shifted], 20, 30))
    assert rle["counts"] == direct["counts"].decode("ascii")


@pytest.mark.parametrize(
    "bad",
    [
        [[0.0, 0.0, 1.0, 1.0]],  # 4 coordinates (pycocotools would read a bbox)
        [[0.0, 0.0, 1.0, 1.0, 2.0]],  # odd length
    ],
)
def test_polygons_to_rle_bad_polygon_raises(bad):
    with pytest.raises(ValueError):
        polygons_to_rle(bad, 10, 10)


@pytest.mark.parametrize(
    "box, expected",
    [
        ((2.0, 3.0, 6.0, 5.0), (2, 3, 6, 5)),  # integer edges: exactly those pixels
        ((2.4, 3.6, 5.2, 4.1), (2, 3, 6, 5)),  # fractional edges: every pixel the box touches
        ((-3.0, -1.0, 4.0, 2.0), (0, 0, 4, 2)),  # partly outside the frame: cut off
        ((5.0, 5.0, 5.0, 5.0), (5, 5, 6, 6)),  # degenerate: still one pixel, never empty
    ],
)
def test_box_to_rle(box, expected):
    from autolabel.geometry import box_to_rle

    mask = rle_to_mask(box_to_rle(box, 8, 10))
    want = np.zeros((8, 10), bool)
    x0, y0, x1, y1 = expected
    want[y0:y1, x0:x1] = True
    np.testing.assert_array_equal(mask, want)
