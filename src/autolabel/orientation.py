"""EXIF orientation: the one table, and sizes, boxes and masks from the stored to the oriented frame.

The EXIF orientation tag (values 1-8; 5-8 swap width and height, 1 or an invalid value is no change)
says how to turn the file's *stored* pixel grid into the *oriented* frame autolabel works in.
``images.load_image`` turns pixels with :data:`TRANSPOSE`; :func:`orient_boxes` and :func:`orient_rle`
turn labels drawn on the stored pixels the same way (e.g. a COCO file made from the raw grid).
"""

from __future__ import annotations

import io
import logging
import struct
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

ORIENTATION_TAG = 0x0112

#: EXIF orientation -> the PIL transpose from the stored to the oriented frame.
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def swaps_sides(orientation: int) -> bool:
    return orientation in (5, 6, 7, 8)


def orient_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """Stored ``(w, h)`` -> oriented ``(w, h)``. Its own inverse: also maps oriented back to stored."""
    return (size[1], size[0]) if swaps_sides(orientation) else (size[0], size[1])


def orient_boxes(xyxy, orientation: int, stored: tuple[int, int]) -> np.ndarray:
    """``(N, 4)`` ``xyxy`` in the stored frame of size ``stored`` ``(W, H)`` -> the oriented frame (float64)."""
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    if orientation not in TRANSPOSE:
        return boxes.copy()
    width, height = float(stored[0]), float(stored[1])
    x, y = boxes[:, 0::2], boxes[:, 1::2]  # (N, 2): both corners
    # Where a stored point (x, y) is shown, per the EXIF specification (the same turns as TRANSPOSE).
    shown_x, shown_y = {
        2: (width - x, y), 3: (width - x, height - y), 4: (x, height - y), 5: (y, x),
        6: (height - y, x), 7: (height - y, width - x), 8: (y, width - x),
    }[orientation]
    return np.stack([shown_x.min(axis=1), shown_y.min(axis=1), shown_x.max(axis=1), shown_y.max(axis=1)], axis=1)


def orient_rle(rle: dict, orientation: int) -> dict:
    """A COCO RLE mask in the stored frame -> the oriented frame (the transpose the pixels get)."""
    transpose = TRANSPOSE.get(orientation)
    if transpose is None:
        return rle
    from autolabel.geometry import mask_to_rle, rle_to_mask

    return mask_to_rle(np.asarray(Image.fromarray(rle_to_mask(rle)).transpose(transpose)))


def stored_size(im: Image.Image) -> tuple[int, int]:
    """``(w, h)`` of the pixel data as stored in the file, before orientation.

    Pillow's TIFF plugin reports ``size`` already swapped for orientations 5-8 while still decoding
    the stored grid, so for TIFF the size comes from the ImageWidth/ImageLength tags.
    """
    if im.format == "TIFF":
        tags = im.tag_v2  # type: ignore[attr-defined]
        return int(tags[256]), int(tags[257])
    return im.size


def header_orientation(im: Image.Image, fp: IO[bytes]) -> int:
    """The EXIF orientation (1-8) of an opened image, read from the header without decoding pixels.

    Invalid or unreadable values count as 1 (no change), like browsers do. PNG needs care: Pillow's
    ``PngImageFile.getexif`` decodes the whole image to look for an ``eXIf`` chunk after the image
    data, so we read the info gathered at open and, failing that, walk the chunk headers ourselves.
    """
    position = fp.tell()  # TIFF reads its IFD from fp; Pillow expects fp where it left it
    try:
        if im.format == "PNG":
            exif = Image.Image.getexif(im)  # the base method: header info only
            if ORIENTATION_TAG not in exif:
                trailing = _png_trailing_exif(fp)
                if trailing is not None:
                    exif = Image.Exif()
                    exif.load(b"Exif\x00\x00" + trailing)
        else:
            exif = im.getexif()
        value = exif.get(ORIENTATION_TAG, 1)
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, OSError, struct.error) as exc:
        logger.debug("unreadable EXIF (%s); treating orientation as 1", exc)
        return 1
    finally:
        fp.seek(position)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def file_orientation(path: str | Path) -> int:
    """The EXIF orientation (1-8) of an image file, from its header; OSError if Pillow cannot open it."""
    with open(path, "rb") as fp, Image.open(fp) as im:
        return header_orientation(im, fp)


def orientation_left_after_load(im: Image.Image, orientation: int) -> int:
    """The part of ``orientation`` that the decoder has not applied itself.

    Pillow's TIFF plugin (recent versions) transposes while loading and then deletes the tag, so
    applying it again would rotate twice; other plugins leave the stored grid untouched.
    """
    if im.format == "TIFF" and im.tag_v2.get(ORIENTATION_TAG) != orientation:  # type: ignore[attr-defined]
        return 1
    return orientation


def _png_trailing_exif(fp: IO[bytes]) -> bytes | None:
    """Payload of the first ``eXIf`` chunk, found by walking chunk headers (data is skipped)."""
    fp.seek(8)  # PNG signature
    while len(head := fp.read(8)) == 8:
        length, kind = struct.unpack(">I4s", head)
        if kind == b"eXIf":
            payload = fp.read(length)
            return payload if len(payload) == length else None
        if kind == b"IEND":
            return None
        fp.seek(length + 4, io.SEEK_CUR)  # data + CRC
    return None
