"""Mask formats, and the one box/mask rule of segmentation runs that every format applies.

Mask formats (``ExportOptions.masks``): ``polygon`` (every format), ``rle`` (COCO only), ``none``.

Rule for a label of a segmentation run, in original pixels: a non-empty mask is clipped to its box
grown by ``MARGIN_FRACTION`` of the box's side (at least ``MARGIN_MIN_PX``), and the exported box
becomes the clipped mask's tight box. SAM2's mask edge legitimately sits a pixel or two past a
detector box (upsampled 256x256 logits; OWLv2 boxes are off by 1-2% themselves), while a mask that
leaks further has spilled onto a neighbour. So every format carries the same box, matching the mask
(YOLO-seg derives boxes from polygons). A label without a mask, or whose mask is empty after
clipping, keeps its box. Imported datasets keep their boxes and masks: they are ground truth.
"""

from __future__ import annotations

import numpy as np

MASK_FORMATS = {
    "polygon": "masks as polygons (every part, holes cut in)",
    "rle": "masks as COCO compressed RLE (coco only)",
    "none": "boxes only",
}
DEFAULT_MASK_FORMAT = "polygon"
MARGIN_FRACTION = 0.02
MARGIN_MIN_PX = 2.0


def grown_box(xyxy, width: int, height: int) -> tuple[float, float, float, float]:
    """``xyxy`` grown by the margin on every side, inside the ``width x height`` image."""
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    mx = max(MARGIN_MIN_PX, MARGIN_FRACTION * (x1 - x0))
    my = max(MARGIN_MIN_PX, MARGIN_FRACTION * (y1 - y0))
    return max(0.0, x0 - mx), max(0.0, y0 - my), min(float(width), x1 + mx), min(float(height), y1 + my)


def fit_mask_to_box(xyxy, rle: dict) -> tuple[np.ndarray, dict | None]:
    """Apply the rule to one label (original pixels): ``(box, clipped mask)``, or ``(xyxy, None)``
    when nothing of the mask is left inside the grown box."""
    from autolabel.geometry import region_to_rle, rle_area, rle_to_mask, rle_to_xyxy

    height, width = (int(v) for v in rle["size"])
    x0, y0, x1, y1 = grown_box(xyxy, width, height)
    left, top = int(np.floor(x0)), int(np.floor(y0))
    right, bottom = int(np.ceil(x1)), int(np.ceil(y1))
    region = rle_to_mask(rle)[top:bottom, left:right]
    clipped = region_to_rle(region, left, top, height, width)
    if rle_area(clipped) == 0:
        return np.asarray(xyxy, dtype=np.float64), None
    return rle_to_xyxy(clipped), clipped
