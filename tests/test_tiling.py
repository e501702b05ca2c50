"""Tile grids, mapping tile detections back and merging, on hand-made detections."""

import numpy as np
import pytest

from autolabel.detections import Detections
from autolabel.errors import ConfigError
from autolabel.geometry import Size
from autolabel.pipeline import DetectConfig
from autolabel.tiling import (AutoTiling, Tiling, crop_boxes, crop_pixels, from_tile, merge_detections, parse_tiles,
                              resolve, tiling_from_dict, weighted_box_fusion)


def _dets(boxes, scores=None, classes=None):
    n = len(boxes)
    return Detections(np.array(boxes, dtype=np.float32).reshape(-1, 4),
                      np.array(scores if scores is not None else [0.9] * n, dtype=np.float32),
                      np.array(classes if classes is not None else [0] * n), np.zeros(n))


@pytest.mark.parametrize("text, expected", [
    ("off", None),
    ("auto", AutoTiling()),
    ("auto:0.3", AutoTiling(overlap=0.3)),
    ("2x3", Tiling(2, 3)),
    ("4X4:0.25", Tiling(4, 4, 0.25)),
])
def test_parse_tiles(text, expected):
    assert parse_tiles(text) == expected


@pytest.mark.parametrize("text", ["2", "2x", "axb", "1x1", "2x2:0.5", "2x2:x", "0x3"])
def test_bad_tiles_are_one_config_error(text):
    with pytest.raises(ConfigError):
        parse_tiles(text)


@pytest.mark.parametrize("tiling", [
    Tiling(2, 3),
    Tiling(4, 1, 0.3, merge="wbf", merge_iou=0.6),
    AutoTiling(),
    AutoTiling(overlap=0.1, max_per_side=2, merge="wbf", merge_iou=0.4),
])
def test_a_recorded_tiling_reads_back_as_itself(tiling):
    assert tiling_from_dict(tiling.to_dict()) == tiling


def test_a_recorded_tiling_that_is_off_or_unknown():
    assert tiling_from_dict(None) is None and tiling_from_dict({}) is None
    with pytest.raises(ConfigError, match="not a tiling"):
        tiling_from_dict({"rows": 2, "cols": 2, "stride": 3})
    with pytest.raises(ConfigError):
        tiling_from_dict({"rows": 1, "cols": 1})  # the fields' own checks still apply


def test_grid_is_flush_with_the_borders_and_overlaps():
    boxes = crop_boxes(Size(1000, 600), Tiling(2, 3, overlap=0.2))
    # width: tile = ceil(1000 / 2.6) = 385, starts 0, 307.5 -> 308, 615; height: ceil(600 / 1.8) = 334
    assert boxes == [(0, 0, 385, 334), (308, 0, 693, 334), (615, 0, 1000, 334),
                     (0, 266, 385, 600), (308, 266, 693, 600), (615, 266, 1000, 600)]
    widths = {b[2] - b[0] for b in boxes}
    assert widths == {385}
    assert boxes[0][2] - boxes[1][0] >= 0.2 * 385  # the overlap asked for, at least


def test_a_side_shorter_than_its_tile_count_gives_no_duplicate_tiles():
    boxes = crop_boxes(Size(3, 100), Tiling(1, 4, overlap=0.2))
    assert len(boxes) == len(set(boxes)) and boxes[0][0] == 0 and boxes[-1][2] == 3


@pytest.mark.parametrize("size, expected", [
    (Size(900, 700), None),  # fits the model: no tiles
    (Size(2000, 1500), Tiling(2, 2)),  # (2000/960 - 0.2) / 0.8 = 2.35 -> 2; 1.70 -> 2
    (Size(3000, 900), Tiling(1, 4)),  # 3.66 -> 4 across, 1 down
    (Size(20000, 20000), Tiling(4, 4)),  # capped
])
def test_auto_picks_tiles_of_about_the_model_side(size, expected):
    assert resolve(AutoTiling(), size, 960) == expected


def test_crop_of_a_reduced_copy_scales_the_box():
    pixels = np.arange(50 * 100).reshape(50, 100)
    assert crop_pixels(pixels, Size(100, 50), (10, 20, 30, 40)).shape == (20, 20)
    half = pixels[::2, ::2]
    assert crop_pixels(half, Size(100, 50), (10, 20, 30, 40)).shape == (10, 10)


def test_tile_boxes_shift_by_the_crop_origin_exactly():
    tile = (300, 200, 700, 500)
    dets = from_tile(_dets([[10.5, 20.25, 50, 60]]), tile, Size(1000, 1000))
    np.testing.assert_array_equal(dets.xyxy, [[310.5, 220.25, 350, 260]])
    assert dets.xyxy.dtype == np.float32


def test_boxes_cut_by_an_inner_edge_are_dropped_but_image_borders_are_not():
    size = Size(1000, 500)
    left, right = (0, 0, 600, 500), (400, 0, 1000, 500)
    # in the left tile (400 x 500 px crop coordinates): one against the inner right edge (cut by
    # the seam; the right tile holds it whole), one against the image's left border, one inside
    dets = _dets([[570, 100, 600, 130], [0, 100, 20, 130], [450, 100, 480, 130]])
    kept = from_tile(dets, left, size)
    np.testing.assert_array_equal(kept.xyxy, [[0, 100, 20, 130], [450, 100, 480, 130]])
    # the same object seen whole from the right tile, against nothing
    whole = from_tile(_dets([[170, 100, 210, 130]]), right, size)
    np.testing.assert_array_equal(whole.xyxy, [[570, 100, 610, 130]])


def test_merge_removes_seam_duplicates_and_applies_the_image_level_filters():
    size = Size(1000, 1000)
    full = _dets([[100, 100, 400, 400]], [0.8])
    tile_a = _dets([[500, 500, 520, 520], [102, 101, 399, 400]], [0.6, 0.9])
    tile_b = _dets([[501, 500, 521, 521]], [0.7])  # the same small object from an overlapping tile
    config = DetectConfig(threshold=0.1, nms_iou=0.5, max_area_frac=0.05)  # drops the large box
    merged = merge_detections([full, tile_a, tile_b], size, Tiling(2, 2), config)
    np.testing.assert_array_equal(merged.xyxy, [[501, 500, 521, 521]])
    np.testing.assert_allclose(merged.scores, [0.7])


def test_merge_keeps_classes_apart():
    size = Size(100, 100)
    merged = merge_detections([_dets([[10, 10, 30, 30]], [0.9], [0]), _dets([[10, 10, 30, 30]], [0.8], [1])],
                              size, Tiling(2, 2), DetectConfig(nms_iou=None))
    assert merged.class_ids.tolist() == [0, 1]


def test_weighted_box_fusion_averages_by_score_and_keeps_the_best_score():
    dets = _dets([[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]], [0.75, 0.25, 0.5])
    fused = weighted_box_fusion(dets, iou=0.5)
    np.testing.assert_allclose(fused.xyxy, [[0.5, 0, 10.5, 10], [50, 50, 60, 60]])
    np.testing.assert_allclose(fused.scores, [0.75, 0.5])


def test_merge_of_nothing_is_empty():
    empty = _dets([])
    assert len(merge_detections([empty, empty], Size(10, 10), Tiling(2, 2), DetectConfig())) == 0
