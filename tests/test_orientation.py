"""EXIF orientation: labels drawn on the stored pixels land where ``load_image`` shows those pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from autolabel.geometry import mask_to_rle, rle_to_mask, rle_to_xyxy
from autolabel.images import load_image
from autolabel.orientation import ORIENTATION_TAG, orient_boxes, orient_rle, orient_size

STORED = (50, 30)  # (W, H) of the stored pixel grid
BOX = (7, 4, 20, 11)  # a red rectangle on the stored pixels, pixel-edge xyxy


def _save(path, orientation: int) -> None:
    pixels = np.zeros((STORED[1], STORED[0], 3), np.uint8)
    x0, y0, x1, y1 = BOX
    pixels[y0:y1, x0:x1] = (255, 0, 0)
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    Image.fromarray(pixels).save(path, exif=exif)


@pytest.mark.parametrize("suffix", [".png", ".tif"])  # Pillow's TIFF plugin turns while decoding
@pytest.mark.parametrize("orientation", range(1, 9))
def test_boxes_land_on_the_pixels_load_image_shows(tmp_path, orientation, suffix):
    path = tmp_path / f"o{orientation}{suffix}"
    _save(path, orientation)
    loaded = load_image(path)
    assert (loaded.width, loaded.height) == orient_size(STORED, orientation)
    red = np.asarray(loaded.image)[..., 0] > 127
    ys, xs = np.nonzero(red)
    shown = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    np.testing.assert_array_equal(orient_boxes([BOX], orientation, STORED), [shown])
    stored_mask = np.zeros(STORED[::-1], bool)
    stored_mask[BOX[1]:BOX[3], BOX[0]:BOX[2]] = True
    np.testing.assert_array_equal(rle_to_mask(orient_rle(mask_to_rle(stored_mask), orientation)), red)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_box_and_mask_orientation_agree(orientation):
    mask = np.zeros((30, 50), bool)
    mask[4:11, 7:20] = True
    box = orient_boxes([BOX], orientation, STORED)[0]
    np.testing.assert_allclose(rle_to_xyxy(orient_rle(mask_to_rle(mask), orientation)), box)


def test_sizes_swap_for_orientations_5_to_8_only():
    assert [orient_size((4, 3), o) for o in range(1, 9)] == [(4, 3)] * 4 + [(3, 4)] * 4
    assert orient_size(orient_size((4, 3), 6), 6) == (4, 3)  # its own inverse: oriented -> stored


def test_boxes_keep_their_float64_values():
    box = [[0.1, 0.2, 10.123456789, 20.987654321]]
    turned = orient_boxes(box, 1, STORED)
    assert turned.dtype == np.float64 and turned.tolist() == box
    np.testing.assert_allclose(orient_boxes(orient_boxes(box, 3, STORED), 3, STORED), box)  # 180 twice
