"""Low-resolution mask values -> full-resolution COCO RLEs, exactly as the processors' bilinear
upsampling thresholds them, without a full-frame float mask; and the box check of the segmenters.

Memory: ``post_process_masks`` upsamples every mask to the full frame as float32 (100 masks on a
12 MP image are ~5 GB). A bilinear value is a convex combination of the (up to) four cells it reads,
so it can pass a threshold only where it reads a cell that does (less a rounding margin): outside
the rectangle of such pixels the mask is exactly empty and never computed. Inside, values are
computed in ATen's operation order (columns, then rows, each ``fma(v0, w0, v1 * w1)``).

Speed: after the pass along columns, every output row blends the same two rows of ``along_x`` as
its neighbours (a source row pair covers about ``H / h`` output rows). Where both values of a pair
are above the threshold by more than any rounding, every row between them is too, and likewise
below; so each pair is classified once per column, the rows copy their pair's verdict, and only the
undecided pixels (a thin band along the mask's edge) are blended. The region is built column-major,
the order COCO RLE runs in. This is about 3x faster than blending every pixel and gives the same bits.
"""

from __future__ import annotations

import numpy as np
import torch

from autolabel.geometry import Size, region_to_rle
from autolabel.models.interpolation import BilinearAxis, fma

_MARGIN = 1e-6  # float rounding may lift a value a hair above every cell it reads
_CHUNK_PIXELS = 1 << 20  # undecided pixels blended at a time: bounds the temporaries (~40 MB)
# A blend of two values both above (below) the threshold by more than this, relative to the largest
# value, is above (below) it after float32 rounding too (the rounding is a few 1e-7 of the operands).
_SURE = 1e-5


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
    along_x = fma(values.index_select(1, cols.index0), cols.weight0, values.index_select(1, cols.index1) * cols.weight1)
    region_t = _rows_above(along_x, rows, threshold)  # (x1 - x0, y1 - y0): column-major
    return region_to_rle(region_t.T, x0, y0, height, width)


def _rows_above(along_x: torch.Tensor, rows: BilinearAxis, threshold: float) -> np.ndarray:
    """``(W, H)`` bool: per column, per output row, ``fma(a0, w0, a1 * w1) > threshold`` where
    ``a0``/``a1`` are the row's two ``along_x`` rows; blended only where the pair does not decide."""
    i0, i1 = rows.index0, rows.index1
    starts = torch.cat([torch.ones(1, dtype=torch.bool), (i0[1:] != i0[:-1]) | (i1[1:] != i1[:-1])])
    block_of_row = torch.cumsum(starts, 0) - 1  # (H,) the source pair each output row blends
    first = torch.nonzero(starts).flatten()  # (pairs,) each pair's first output row
    slack = _SURE * (1 + abs(threshold) + float(along_x.abs().max()))
    clearly_above, clearly_below = along_x > threshold + slack, along_x < threshold - slack  # (h, W)
    sure_in = clearly_above[i0[first]] & clearly_above[i1[first]]  # (pairs, W)
    sure_out = clearly_below[i0[first]] & clearly_below[i1[first]]
    region_t = sure_in.T.numpy()[:, block_of_row.numpy()]  # (W, H)
    # The undecided (pair, column) cells, each expanded to the output rows of its pair, a bounded
    # number of pixels at a time (a noisy mask can leave most of a large frame undecided).
    pair, column = torch.nonzero(~(sure_in | sure_out), as_tuple=True)
    rows_per_pair = torch.diff(first, append=torch.tensor([len(i0)]))
    step = max(1, _CHUNK_PIXELS // int(rows_per_pair.max()))
    for start in range(0, len(pair), step):
        cells, cols = pair[start : start + step], column[start : start + step]
        n = rows_per_pair[cells]
        within = torch.arange(int(n.sum())) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
        out_rows = torch.repeat_interleave(first[cells], n) + within
        out_cols = torch.repeat_interleave(cols, n)
        blended = fma(along_x[i0[out_rows], out_cols], rows.weight0[out_rows],
                      along_x[i1[out_rows], out_cols] * rows.weight1[out_rows])
        region_t[out_cols.numpy(), out_rows.numpy()] = (blended > threshold).numpy()
    return region_t


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
