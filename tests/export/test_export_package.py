"""Shared export pieces: resize/letterbox transforms (coordinates follow the pixels) and unique names."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from autolabel.errors import ConfigError
from autolabel.export.package import LETTERBOX_COLOR, ImageSize, ImageTransform, encode_image, export_names
from autolabel.geometry import mask_to_rle, rle_to_mask, rle_to_xyxy


@pytest.mark.parametrize(
    "text, letterbox, size, canvas, content, offset",
    [
        ("640", False, (1280, 960), (640, 480), (640, 480), (0, 0)),  # longest side: no padding
        ("300x200", False, (1000, 1000), (300, 200), (300, 200), (0, 0)),  # stretch: no padding
        ("640", True, (1280, 960), (640, 640), (640, 480), (0, 80)),  # letterbox landscape: bars top/bottom
        ("640", True, (960, 1280), (640, 640), (480, 640), (80, 0)),  # letterbox portrait: bars left/right
        ("640x320", True, (1000, 1000), (640, 320), (320, 320), (160, 0)),  # letterbox into a wide canvas
        ("100", True, (50, 25), (100, 100), (100, 50), (0, 25)),  # letterbox upscales small images
    ],
)
def test_transform_geometry(text, letterbox, size, canvas, content, offset):
    t = ImageSize.parse(text, letterbox=letterbox).transform(*size)
    assert (t.width, t.height) == canvas
    assert (t.content_width, t.content_height) == content
    assert (t.offset_x, t.offset_y) == offset


def test_letterbox_without_size_is_an_error():
    with pytest.raises(ConfigError, match="--letterbox needs --image-size"):
        ImageSize.parse(None, letterbox=True)


def test_boxes_follow_scale_and_offset():
    t = ImageSize.parse("100", letterbox=True).transform(200, 100)  # scale 0.5, offset (0, 25)
    boxes = np.array([[10, 20, 110, 60], [0, 0, 200, 100]])
    out = t.boxes(boxes)
    np.testing.assert_allclose(out, [[5, 35, 55, 55], [0, 25, 100, 75]])


def test_masks_follow_the_letterbox_like_boxes():
    mask = np.zeros((100, 200), bool)
    mask[20:60, 10:110] = True
    t = ImageSize.parse("100", letterbox=True).transform(200, 100)
    moved = t.rle(mask_to_rle(mask))
    assert moved["size"] == [100, 100]
    np.testing.assert_allclose(rle_to_xyxy(moved), t.boxes([[10, 20, 110, 60]])[0])
    assert not rle_to_mask(moved)[:25].any() and not rle_to_mask(moved)[75:].any(), "padding is background"


def test_identity_transform_keeps_the_rle_object():
    rle = mask_to_rle(np.eye(8, dtype=bool))
    assert ImageTransform.identity(8, 8).rle(rle) is rle


def test_letterboxed_image_is_padded_gray_and_content_lands_at_the_offset(tmp_path):
    src = tmp_path / "red.png"
    Image.new("RGB", (200, 100), (255, 0, 0)).save(src)
    t = ImageSize.parse("100", letterbox=True).transform(200, 100)
    data = encode_image(str(src), t, (200, 100), 10**8)
    with Image.open(io.BytesIO(data)) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape == (100, 100, 3)
    assert tuple(pixels[10, 50]) == LETTERBOX_COLOR  # top bar
    assert tuple(pixels[90, 50]) == LETTERBOX_COLOR  # bottom bar
    assert tuple(pixels[50, 50]) == (255, 0, 0)  # content
    assert tuple(pixels[25, 50]) == (255, 0, 0) and tuple(pixels[24, 50]) == LETTERBOX_COLOR  # exact offset


def test_forced_jpeg_reencodes_png_sources(tmp_path):
    src = tmp_path / "a.png"
    Image.new("RGB", (20, 10), (0, 200, 0)).save(src)
    data = encode_image(str(src), None, (20, 10), 10**8, "jpeg")
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.size == (20, 10)


@pytest.mark.parametrize(
    "paths",
    [
        ["/d/a.jpg", "/d/a.png"],  # same stem, different suffix: label files a.txt would clash
        ["/d/A.jpg", "/d/a.jpg"],  # case only: one file on macOS/Windows
        ["/d/x/y.jpg", "/d/x__y.jpg"],  # a nested folder flattens onto an existing name
        ["/d/a/p.jpg", "/d/b/p.jpg", "/d/c/p.png"],  # nested folders holding the same name
    ],
)
def test_export_names_have_unique_stems(paths):
    names = export_names(paths)
    stems = [n.rsplit(".", 1)[0].casefold() for n in names.values()]
    assert len(set(stems)) == len(paths)
    assert names == export_names(list(reversed(paths)))  # independent of input order


def test_forced_suffix_keeps_names_unique():
    names = export_names(["/d/a.jpg", "/d/a.png", "/d/b.tif"], ".jpg")
    assert all(n.endswith(".jpg") for n in names.values())
    assert len(set(names.values())) == 3
    assert names["/d/b.tif"] == "b.jpg"
