"""Pure box and mask geometry: IoU, NMS, COCO RLE and polygons.

Boxes are float ``xyxy`` pixels, shape ``(N, 4)``; pixel ``i`` spans ``[i, i + 1)``, so a box covering
pixels ``0..9`` is ``[0, 0, 10, 10]``. Masks are ``(H, W)`` arrays, non-zero is foreground. An RLE is
COCO compressed RLE as a JSON-ready dict ``{"size": [h, w], "counts": str}`` (``counts`` may also be
bytes, or an uncompressed list of run lengths, on input). Polygons are COCO polygons (flat
``[x0, y0, x1, y1, ...]`` lists, their union) in the same pixel-edge coordinates as boxes.

pycocotools is the reference COCO implementation that every trainer and evaluator decodes our
annotations with, so encoding with it guarantees they read exactly what we write.

Polygons: pycocotools samples each pixel at its centre, so the polygon that reproduces a mask is its
pixel-edge ("crack") boundary. ``cv2.findContours`` runs through boundary pixel *centres* (a 20x20
square comes back 19x19), so :func:`mask_to_polygons` traces the mask upsampled 2x and maps each
contour point ``s`` to ``ceil(s / 2)``, which lands on the pixel edges: the polygons rasterize back to
the mask exactly (tested on noise with diagonal pinches, holes and border contact).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import cv2
import numpy as np
from pycocotools import mask as mask_util


class Size(NamedTuple):
    """An image's size in pixels, always in this order: ``(width, height)``."""

    width: int
    height: int


def _check_mask(mask: Any, name: str = "mask") -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (H, W), got {arr.shape}")
    return arr


def _check_size(height: int, width: int) -> tuple[int, int]:
    h, w = int(height), int(width)
    if h <= 0 or w <= 0:
        raise ValueError(f"height and width must be positive, got ({height}, {width})")
    return h, w


def _json_rle(rle: dict) -> dict:
    """pycocotools RLE (``counts`` bytes) -> JSON-ready dict with ``counts`` str."""
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def _coco_rle(rle: Any) -> dict:
    """Any accepted RLE form -> the dict pycocotools' C functions take (``counts`` bytes)."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("RLE must be a dict with 'size' [h, w] and 'counts'")
    size = rle["size"]
    if len(size) != 2:
        raise ValueError(f"RLE 'size' must be [h, w], got {size!r}")
    h, w = int(size[0]), int(size[1])
    counts = rle["counts"]
    if isinstance(counts, str):
        return {"size": [h, w], "counts": counts.encode("ascii")}
    if isinstance(counts, bytes):
        return {"size": [h, w], "counts": counts}
    if isinstance(counts, (list, tuple, np.ndarray)):  # uncompressed run lengths
        return mask_util.frPyObjects({"size": [h, w], "counts": list(map(int, counts))}, h, w)
    raise ValueError(f"RLE 'counts' must be str, bytes or a list of ints, got {type(counts).__name__}")


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode an ``(H, W)`` mask as a JSON-ready COCO compressed RLE."""
    fortran = np.asfortranarray(_check_mask(mask) != 0, dtype=np.uint8)
    return _json_rle(mask_util.encode(fortran))


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode a COCO RLE (compressed str/bytes or uncompressed list counts) to a ``(h, w)`` bool mask."""
    return mask_util.decode(_coco_rle(rle)).astype(bool)


def region_to_rle(region: np.ndarray, x0: int, y0: int, height: int, width: int) -> dict:
    """The full-frame RLE of ``region`` placed at column ``x0``, row ``y0`` of an empty frame.

    Identical to ``mask_to_rle(full_mask)`` (parts outside the frame are cut off, ``x0``/``y0`` may be
    negative) without allocating the full frame: SAM2 masks upsampled only inside their box become
    full-image annotations in O(region size + number of runs) memory.
    """
    reg = _check_mask(region, "region")
    height, width = _check_size(height, width)
    x0, y0 = int(x0), int(y0)
    total = height * width
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + reg.shape[1], width), min(y0 + reg.shape[0], height)

    counts: list[int] = [total]
    if cx1 > cx0 and cy1 > cy0:
        sub = reg[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] != 0
        cw, ch = sub.shape[1], sub.shape[0]
        # One row per frame column, padded with False above and below: every change is a run's start
        # or end, and they alternate (each column starts and ends outside a run).
        padded = np.zeros((cw, ch + 2), dtype=bool)
        padded[:, 1:-1] = sub.T
        changes = np.flatnonzero(padded[:, 1:] != padded[:, :-1])  # in the (cw, ch + 1) layout
        flat_starts, flat_ends = changes[0::2], changes[1::2]
        if flat_starts.size:

            def to_frame(flat: np.ndarray) -> np.ndarray:
                col, row = np.divmod(flat.astype(np.int64), ch + 1)
                return (cx0 + col) * height + cy0 + row

            starts, ends = to_frame(flat_starts), to_frame(flat_ends)
            # A run reaching the bottom of one column continues at the top of the next one.
            joined = ends[:-1] == starts[1:]
            if joined.any():
                starts = starts[np.concatenate(([True], ~joined))]
                ends = ends[np.concatenate((~joined, [True]))]
            edges = np.empty(2 * starts.size + 2, dtype=np.int64)
            edges[0], edges[-1] = 0, total
            edges[1:-1:2], edges[2:-1:2] = starts, ends
            runs = np.diff(edges)
            if runs[-1] == 0:  # mask ends on the last pixel: pycocotools writes no empty final run
                runs = runs[:-1]
            counts = runs.tolist()
    rle = mask_util.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return _json_rle(rle)


def box_to_rle(xyxy: Any, height: int, width: int) -> dict:
    """The pixels a float ``xyxy`` box covers as a COCO RLE: the stand-in mask for a box without one
    in a segmentation dataset, so every annotation there has a non-empty segmentation."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(xyxy, dtype=np.float64).reshape(4))
    left, top = int(np.floor(x0)), int(np.floor(y0))
    right, bottom = max(int(np.ceil(x1)), left + 1), max(int(np.ceil(y1)), top + 1)
    return region_to_rle(np.ones((bottom - top, right - left), dtype=bool), left, top, height, width)


def rle_area(rle: dict) -> int:
    """Number of foreground pixels of a COCO RLE."""
    return int(mask_util.area(_coco_rle(rle)))


def rle_to_xyxy(rle: dict) -> np.ndarray:
    """Tight ``xyxy`` box (shape ``(4,)``, float64, pixel edges) of a COCO RLE; zeros if empty."""
    x, y, w, h = mask_util.toBbox(_coco_rle(rle)).astype(np.float64)
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(H, W)`` masks of the same shape; 0.0 when both are empty."""
    ma, mb = _check_mask(a, "a") != 0, _check_mask(b, "b") != 0
    if ma.shape != mb.shape:
        raise ValueError(f"mask shapes differ: {ma.shape} vs {mb.shape}")
    union = int(np.count_nonzero(ma | mb))
    return int(np.count_nonzero(ma & mb)) / union if union else 0.0


def _as_boxes(boxes: Any, name: str = "boxes") -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {np.shape(boxes)}")
    return arr


def clip_boxes(boxes: Any, width: float, height: float) -> np.ndarray:
    """Clip ``(N, 4)`` ``xyxy`` boxes to ``[0, width] x [0, height]``; returns a new float64 array."""
    b = _as_boxes(boxes).copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0.0, float(width))
    b[:, 1::2] = np.clip(b[:, 1::2], 0.0, float(height))
    return b


def box_area(boxes: Any) -> np.ndarray:
    """Areas ``(N,)`` of ``(N, 4)`` ``xyxy`` boxes; inverted boxes have area 0."""
    b = _as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)


def box_iou(a: Any, b: Any) -> np.ndarray:
    """Pairwise IoU ``(N, M)`` of ``(N, 4)`` and ``(M, 4)`` ``xyxy`` boxes; 0 where the union is 0."""
    ba, bb = _as_boxes(a, "a"), _as_boxes(b, "b")
    lt = np.maximum(ba[:, None, :2], bb[None, :, :2])
    rb = np.minimum(ba[:, None, 2:], bb[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(ba)[:, None] + box_area(bb)[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


_NMS_ROWS = 256  # boxes whose IoUs NMS computes at once: at most 256 x N values


def _score_order(scores: np.ndarray) -> np.ndarray:
    """Indices by score descending; ties keep input order (deterministic)."""
    return np.argsort(-scores, kind="stable")


def nms(boxes: Any, scores: Any, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: int64 indices of the kept boxes by score descending (ties: input order).

    A box is suppressed when its IoU with a kept, higher-scoring box is strictly greater than
    ``iou_threshold``, so ``iou_threshold >= 1`` keeps every box.
    """
    b = _as_boxes(boxes)
    return _greedy_nms(b, _checked_scores(scores, b), None, iou_threshold)


def batched_nms(boxes: Any, scores: Any, class_ids: Any, iou_threshold: float) -> np.ndarray:
    """:func:`nms` within each class (boxes of different classes never suppress each other); kept
    indices by score descending over all classes (ties: input order)."""
    b = _as_boxes(boxes)
    s = _checked_scores(scores, b)
    c = np.asarray(class_ids)
    if c.shape != (b.shape[0],):
        raise ValueError(f"class_ids must have shape ({b.shape[0]},), got {c.shape}")
    return _greedy_nms(b, s, c, iou_threshold)


def _checked_scores(scores: Any, boxes: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (boxes.shape[0],):
        raise ValueError(f"scores must have shape ({boxes.shape[0]},), got {s.shape}")
    return s


def _greedy_nms(b: np.ndarray, s: np.ndarray, classes: np.ndarray | None, iou_threshold: float) -> np.ndarray:
    """One greedy pass over all boxes in score order; with ``classes``, a kept box suppresses only
    boxes of its own class: the same as NMS class by class, in one pass (with the same IoU numbers,
    unlike the trick of shifting each class's boxes apart). The IoUs of up to ``_NMS_ROWS`` boxes
    with every later one are computed at once (one call instead of one per kept box, bounded memory)."""
    order = _score_order(s)
    n = order.size
    if iou_threshold >= 1.0 or n <= 1:
        return order.astype(np.int64)
    boxes = b[order]
    ranked = classes[order] if classes is not None else None
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for start in range(0, n, _NMS_ROWS):
        rows = start + np.flatnonzero(~suppressed[start:start + _NMS_ROWS])
        # ``not <=`` rather than ``>``: a NaN IoU suppresses, as it always has.
        over = ~(box_iou(boxes[rows], boxes[start:]) <= iou_threshold)
        if ranked is not None:
            over &= ranked[rows, None] == ranked[None, start:]
        for row, i in enumerate(rows):
            if not suppressed[i]:
                keep.append(int(i))
                suppressed[start:] |= over[row]  # boxes ranked before ``i`` are already decided
    return order[keep].astype(np.int64)


def _signed_area(points: np.ndarray) -> float:
    """Shoelace signed area of a closed polygon given as ``(K, 2)`` points."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _simplify(points: np.ndarray) -> np.ndarray:
    """Drop repeated points and points collinear with their neighbours (closed ``(K, 2)`` int path);
    they enclose no area (zero-width spikes included), so the rasterization is unchanged."""
    while points.shape[0] >= 3:
        points = points[np.any(points != np.roll(points, 1, axis=0), axis=1)]
        if points.shape[0] < 3:
            break
        d_in = points - np.roll(points, 1, axis=0)
        d_out = np.roll(points, -1, axis=0) - points
        cross = d_in[:, 0] * d_out[:, 1] - d_in[:, 1] * d_out[:, 0]
        straight = cross == 0
        if not straight.any():
            break
        if straight.all():
            return points[:0]
        # Remove every other straight point per pass so that neighbours are judged on the new path.
        drop = straight & ~np.roll(straight, 1)
        points = points[~drop]
    return points


def _bridge_holes(outer: np.ndarray, holes: list[np.ndarray]) -> np.ndarray:
    """Join each hole to the polygon by a zero-width cut, returning one closed ``(K, 2)`` path.

    The cut is traversed once in each direction, so it adds nothing under even-odd or non-zero
    filling, and the hole (traced opposite to the outer contour) is excluded.
    """
    path = outer
    for hole in holes:
        start = hole[0]
        dist = np.sum((path - start).astype(np.float64) ** 2, axis=1)
        i = int(np.argmin(dist))
        path = np.concatenate((path[: i + 1], hole, hole[:1], path[i:]), axis=0)
    return path


def mask_to_polygons(mask: np.ndarray, min_area: float = 4.0) -> list[list[float]]:
    """COCO polygons of a mask, one per 8-connected part, that rasterize back to it exactly.

    COCO polygons cannot express holes, so each hole is joined to its part's outer contour by a
    zero-width cut. Parts whose net pixel area is below ``min_area`` and degenerate contours are
    dropped. Parts come ordered by their top-most, then left-most vertex; ``[]`` for an empty mask.
    """
    m = _check_mask(mask) != 0
    if not m.any():
        return []
    x, y, w, h = cv2.boundingRect(m.view(np.uint8))
    crop = m[y : y + h, x : x + w].view(np.uint8)
    # Upsample 2x so that the contour of the upsampled mask runs through sub-pixels lying on both
    # sides of every pixel edge; ceil(s / 2) then maps each sub-pixel centre onto that edge.
    up = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy.reshape(-1, 4)  # [next, previous, first_child, parent]
    offset = np.array([x, y], dtype=np.int64)

    def to_edges(index: int) -> np.ndarray:
        sub = contours[index].reshape(-1, 2).astype(np.int64)
        return _simplify((sub + 1) // 2 + offset)

    parts: list[tuple[tuple[int, int], np.ndarray]] = []
    for index in np.flatnonzero(hierarchy[:, 3] < 0):
        outer = to_edges(int(index))
        if outer.shape[0] < 3:
            continue
        outer_area = _signed_area(outer)
        if outer_area < 0:
            outer, outer_area = outer[::-1], -outer_area
        holes: list[np.ndarray] = []
        child = int(hierarchy[index, 2])
        while child >= 0:
            hole = to_edges(child)
            if hole.shape[0] >= 3:
                if _signed_area(hole) > 0:  # opposite orientation to the outer contour
                    hole = hole[::-1]
                # Start each hole at its top-most, then left-most vertex (deterministic cuts).
                first = int(np.lexsort((hole[:, 0], hole[:, 1]))[0])
                holes.append(np.roll(hole, -first, axis=0))
            child = int(hierarchy[child, 0])
        if outer_area + sum(_signed_area(hole) for hole in holes) < min_area:
            continue
        holes.sort(key=lambda hole: (int(hole[0, 1]), int(hole[0, 0])))
        path = _bridge_holes(outer, holes)
        top_left = int(np.lexsort((outer[:, 0], outer[:, 1]))[0])
        parts.append(((int(outer[top_left, 1]), int(outer[top_left, 0])), path))
    parts.sort(key=lambda part: part[0])
    return [part[1].astype(np.float64).ravel().tolist() for part in parts if part[1].size >= 6]


def polygons_to_rle(polygons: list[list[float]], height: int, width: int) -> dict:
    """Rasterize COCO polygons (their union; none gives an empty mask) into a COCO RLE."""
    height, width = _check_size(height, width)
    polys = [[float(v) for v in poly] for poly in polygons]
    for poly in polys:
        if len(poly) < 6 or len(poly) % 2:
            raise ValueError(f"each polygon needs an even number (>= 6) of coordinates, got {len(poly)}")
    if not polys:
        return _json_rle(mask_util.frPyObjects({"size": [height, width], "counts": [height * width]}, height, width))
    return _json_rle(mask_util.merge(mask_util.frPyObjects(polys, height, width)))
