"""Low-resolution mask values -> full-resolution COCO RLEs, exactly as the processors' bilinear
upsampling thresholds them, without a full-frame float mask; and the box check of the segmenters.

Memory: ``post_process_masks`` upsamples every mask to the full frame as float32 (100 masks on a
12 MP image are ~5 GB). A bilinear value is a convex combination of the (up to) four cells it reads,
so it can pass a threshold only where it reads a cell that does (less a rounding margin): outside
the rectangle of such pixels the mask is exactly empty and never computed. Inside, values are
computed in ATen's operation order (columns, then rows, each ``fma(v0, w0, v1 * w1)``).
"""

from __future__ import annotations

import numpy as np
import torch

from autolabel.geometry import Size, region_to_rle
from autolabel.models.interpolation import BilinearAxis, fma

# Upsampling works on this many region pixels at a time, bounding its float32 temporaries (~20 MB).
_STRIP_PIXELS = 1 << 20
_MARGIN = 1e-6  # float rounding may lift a value a hair above every cell it reads


def encode_upsampled(values: torch.Tensor, size: Size, threshold: float = 0.0) -> list[dict]:
    """``(N, h, w)`` float32 low-res values (CPU) -> N COCO RLEs of ``bilinear_upsample(v) > threshold``
    for an image of ``size``; the interpolation weights are computed once per call."""
    if len(values) == 0:
        return []
    width, height = size
    rows, cols = BilinearAxis.build(values.shape[-2], height), BilinearAxis.build(values.shape[-1], width)
    return [upsampled_rle(v, rows, cols, threshold) for v in values]


def upsampled_rle(values: torch.Tensor, rows: BilinearAxis, cols: BilinearAxis, threshold: float = 0.0) -> dict:
    """Full-frame COCO RLE of ``upsample(values) > threshold`` for one ``(h, w)`` float32 mask;
    ``rows``/``cols``: weights from ``h``/``w`` to the frame's ``H``/``W``."""
    height, width = len(rows.index0), len(cols.index0)
    above = values > threshold - _MARGIN
    row_span = rows.hits(above.any(dim=1))
    col_span = cols.hits(above.any(dim=0))
    if row_span is None or col_span is None:
        return region_to_rle(np.zeros((0, 0), dtype=bool), 0, 0, height, width)
    (y0, y1), (x0, x1) = row_span, col_span
    rows, cols = rows.crop(y0, y1), cols.crop(x0, x1)
    # Interpolate along x for every low-res row once: (h, x1 - x0), small (h is 288 at most).
    along_x = fma(values[:, cols.index0], cols.weight0, values[:, cols.index1] * cols.weight1)
    region = np.empty((y1 - y0, x1 - x0), dtype=bool)
    strip = max(1, _STRIP_PIXELS // (x1 - x0))
    for s in range(0, y1 - y0, strip):
        r = rows.crop(s, s + strip)
        upsampled = fma(along_x[r.index0], r.weight0[:, None], along_x[r.index1] * r.weight1[:, None])
        region[s : s + strip] = (upsampled > threshold).numpy()
    return region_to_rle(region, x0, y0, height, width)


def check_boxes(boxes_xyxy) -> np.ndarray:
    """Box prompts as ``(N, 4)`` float64 ``xyxy``; ``(0, 4)`` for none; ValueError for other shapes
    and non-finite values."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes_xyxy must have shape (N, 4), got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes_xyxy contains NaN or infinite values")
    return boxes
