"""COCO ``segmentation`` values (polygons, compressed or uncompressed RLE) -> a checked COCO RLE.

pycocotools trusts its input: an RLE whose runs do not add up to ``height x width`` makes its C code
read or write past the mask (``COCOeval`` can spin for hours on one). So every value is checked here,
in Python, before pycocotools sees it: an RLE must have the image's size and cover exactly its
pixels; a polygon needs at least 3 finite points inside the image (give or take ``POLYGON_SLACK``).
"""

from __future__ import annotations

import math

#: How far (pixels) a polygon vertex may lie outside the image: rounding in other tools, not another frame.
POLYGON_SLACK = 2.0


class SegmentationError(ValueError):
    """A segmentation value that is not a valid COCO polygon list or RLE for the image."""


def compressed_runs(counts: str) -> list[int]:
    """Run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString``, checked).

    Each run is a little-endian series of 5-bit groups, characters ``'0'`` + 0..63, bit 0x20 meaning
    "more groups follow", the last group's bit 0x10 its sign; runs after the second are stored as the
    difference to the run two before.
    """
    runs: list[int] = []
    value = shift = 0
    for char in counts:
        group = ord(char) - 48
        if not 0 <= group < 64:
            raise SegmentationError(f"RLE counts hold a character outside the COCO alphabet: {char!r}")
        value |= (group & 0x1F) << shift
        shift += 5
        if group & 0x20:
            continue
        if group & 0x10:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value = shift = 0
    if shift:
        raise SegmentationError("RLE counts end in the middle of a run")
    return runs


def check_rle(rle: dict, height: int, width: int) -> None:
    """Raise :class:`SegmentationError` unless ``rle`` is a COCO RLE of exactly ``height x width`` pixels."""
    size = rle.get("size")
    if not isinstance(size, list) or len(size) != 2 or [_int(v) for v in size] != [height, width]:
        raise SegmentationError(f"RLE size {size} is not the image's [height, width] [{height}, {width}]")
    counts = rle.get("counts")
    if isinstance(counts, str):
        runs = compressed_runs(counts)
    elif isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        runs = counts
    else:
        raise SegmentationError("RLE counts must be a string or a list of integers")
    if any(run < 0 for run in runs):
        raise SegmentationError("RLE counts hold a negative run")
    if sum(runs) != height * width:
        raise SegmentationError(f"RLE counts cover {sum(runs)} pixels, the image has {height} x {width} = "
                                f"{height * width} (truncated or for another image)")


def check_polygons(polygons: list, height: int, width: int) -> None:
    """Raise :class:`SegmentationError` unless every polygon is usable on a ``width x height`` image."""
    for polygon in polygons:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            length = len(polygon) if isinstance(polygon, list) else type(polygon).__name__
            raise SegmentationError(f"a polygon needs an even number (at least 6) of coordinates, got {length}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in polygon):
            raise SegmentationError("polygon coordinates must be finite numbers")
        xs, ys = polygon[0::2], polygon[1::2]
        if (min(xs) < -POLYGON_SLACK or min(ys) < -POLYGON_SLACK
                or max(xs) > width + POLYGON_SLACK or max(ys) > height + POLYGON_SLACK):
            raise SegmentationError(f"polygon reaches outside the {width}x{height} image")


def segmentation_rle(segmentation, height: int, width: int) -> dict | None:
    """A COCO ``segmentation`` on a ``width x height`` image -> a checked compressed RLE, or None if empty.

    Raises:
        SegmentationError: the value is not a valid polygon list or RLE for the image.
    """
    from autolabel.geometry import mask_to_rle, polygons_to_rle, rle_to_mask

    if segmentation is None or segmentation == [] or segmentation == {}:
        return None
    if isinstance(segmentation, list):
        check_polygons(segmentation, height, width)
        return polygons_to_rle(segmentation, height, width)
    if isinstance(segmentation, dict):
        check_rle(segmentation, height, width)
        if isinstance(segmentation["counts"], str):
            return {"size": [height, width], "counts": segmentation["counts"]}
        return mask_to_rle(rle_to_mask(segmentation))  # uncompressed counts -> compressed
    raise SegmentationError("segmentation must be a list of polygons or an RLE dict")


def _int(value) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer() else None
