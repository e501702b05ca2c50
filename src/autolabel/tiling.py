"""Sliced inference for small objects: overlapping tiles over a large image, plus the full image.

A detector sees an image shrunk to its input side (960 px for OWLv2 B/16), so an object of 20 px
in a 2000 px photo shrinks to 10 px, below what one 16 px patch resolves. Tiles cut at full
resolution give each object more input pixels; the full image still finds the large ones. Pure
functions over sizes and ``Detections``; ``pipeline.Labeler(tiles=...)`` drives the models.

Rules, in the order the engine applies them:

- ``crop_boxes``: a ``rows x cols`` grid of equal tiles in integer original pixels, neighbours
  overlapping by at least ``overlap`` of a tile's side, the outer tiles flush with the image borders.
- ``from_tile``: a tile's detections (post-processed at the crop's size, so already clipped to it)
  shifted by the crop's origin. A box touching an *inner* edge of its tile (one that is not an
  image border) is dropped: the object probably goes on beyond that edge. One no larger than the
  overlap lies whole in the neighbouring tile, which finds it; a larger one is the full image's
  job (with the default overlap and ``auto`` sizes, such objects are large enough there).
- ``merge_detections``: full-image and tile detections together, duplicates removed per class by
  NMS (default) or fused by weighted box fusion, then the run's ``filter_detections`` on the
  original image (area limits, NMS, the cap).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from autolabel.detections import Detections
from autolabel.errors import ConfigError
from autolabel.geometry import Size, box_iou

MERGES = ("nms", "wbf")
DEFAULT_OVERLAP = 0.2
MAX_AUTO_TILES = 4  # per side: a 4x4 grid is 17 forward passes per image
DEFAULT_MODEL_SIDE = 960  # for detectors that state no square input side (``image_size``)
EDGE_MARGIN = 0.01  # of a tile's side (at least 2 px): how close to an inner edge counts as cut there

Box = tuple[int, int, int, int]


def _check_common(overlap: float, merge: str, merge_iou: float) -> None:
    if not 0.0 <= overlap < 0.5:
        raise ConfigError(f"tile overlap must be in [0, 0.5), got {overlap}")
    if merge not in MERGES:
        raise ConfigError(f"tile merge must be one of {', '.join(MERGES)}, got {merge!r}")
    if not 0.0 < merge_iou <= 1.0:
        raise ConfigError(f"tile merge IoU must be in (0, 1], got {merge_iou}")


@dataclass(frozen=True)
class Tiling:
    """A fixed grid of ``rows x cols`` tiles overlapping by ``overlap`` (a fraction of a tile's side),
    merged by ``merge`` (``nms`` or ``wbf``) at IoU ``merge_iou``."""

    rows: int
    cols: int
    overlap: float = DEFAULT_OVERLAP
    merge: str = "nms"
    merge_iou: float = 0.5

    def __post_init__(self) -> None:
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"tile {name} must be a positive integer, got {value!r}")
        if self.rows * self.cols == 1:
            raise ConfigError("a 1x1 tiling is the full image alone: use tiles off")
        _check_common(self.overlap, self.merge, self.merge_iou)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AutoTiling:
    """A grid chosen per image so each tile is about the detector's input side at full resolution,
    at most ``max_per_side`` tiles per side; an image that already fits gets none."""

    overlap: float = DEFAULT_OVERLAP
    max_per_side: int = MAX_AUTO_TILES
    merge: str = "nms"
    merge_iou: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.max_per_side, bool) or not isinstance(self.max_per_side, int) or self.max_per_side < 1:
            raise ConfigError(f"max tiles per side must be a positive integer, got {self.max_per_side!r}")
        _check_common(self.overlap, self.merge, self.merge_iou)

    def to_dict(self) -> dict:
        return {"auto": True, **asdict(self)}


def tiling_from_dict(data: dict | None) -> Tiling | AutoTiling | None:
    """The inverse of ``Tiling.to_dict`` / ``AutoTiling.to_dict`` (as a run records its ``tiles``);
    None or ``{}`` (tiling off) -> None."""
    if not data:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"recorded tiles must be a mapping, got {data!r}")
    fields = dict(data)
    kind = AutoTiling if fields.pop("auto", False) else Tiling
    try:
        return kind(**fields)
    except TypeError:
        raise ConfigError(f"recorded tiles {data!r} are not a tiling this version knows") from None


def parse_tiles(text: str | None) -> Tiling | AutoTiling | None:
    """``off`` (or None) -> None; ``auto[:overlap]`` -> ``AutoTiling``; ``RxC[:overlap]`` -> ``Tiling``
    (e.g. ``3x4``, ``2x2:0.25``)."""
    if text is None or text.strip().lower() in ("", "off", "none"):
        return None
    grid, _, overlap_text = text.strip().lower().partition(":")
    try:
        overlap = float(overlap_text) if overlap_text else DEFAULT_OVERLAP
    except ValueError:
        raise ConfigError(f"tile overlap must be a number, got {overlap_text!r} in {text!r}") from None
    if grid == "auto":
        return AutoTiling(overlap=overlap)
    rows, sep, cols = grid.partition("x")
    if not (sep and rows.isdigit() and cols.isdigit()):
        raise ConfigError(f"tiles must be off, auto[:overlap] or RxC[:overlap] (e.g. 2x3:0.2), got {text!r}")
    return Tiling(int(rows), int(cols), overlap)


def tiles_per_side(length: int, side: int, overlap: float) -> int:
    """How many tiles of about ``side`` px, overlapping by ``overlap``, cover ``length`` px."""
    return max(1, round((length / side - overlap) / (1.0 - overlap)))


def resolve(tiles: Tiling | AutoTiling | None, size: Size, model_side: int) -> Tiling | None:
    """The grid for an image of ``size``: a fixed ``Tiling`` as is, ``AutoTiling`` picked from the
    image and the detector's input side (None when the image needs no tiles)."""
    if tiles is None or isinstance(tiles, Tiling):
        return tiles
    width, height = size
    cols = min(tiles.max_per_side, tiles_per_side(width, model_side, tiles.overlap))
    rows = min(tiles.max_per_side, tiles_per_side(height, model_side, tiles.overlap))
    if rows * cols == 1:
        return None
    return Tiling(rows, cols, tiles.overlap, tiles.merge, tiles.merge_iou)


def _axis_starts(length: int, count: int, overlap: float) -> tuple[int, list[int]]:
    """Tile length and integer starts along one axis: ``count`` tiles, the first at 0, the last
    ending at ``length``, neighbours overlapping by at least ``overlap`` of the tile."""
    if count == 1:
        return length, [0]
    tile = min(length, math.ceil(length / (count - (count - 1) * overlap)))
    stride = (length - tile) / (count - 1)
    return tile, [round(i * stride) for i in range(count)]


def crop_boxes(size: Size, tiling: Tiling) -> list[Box]:
    """Tiles of an image of ``size`` as integer ``(x0, y0, x1, y1)`` original pixels, row by row.
    A side shorter than its tile count yields fewer distinct tiles; duplicates are removed."""
    width, height = size
    tile_w, xs = _axis_starts(width, tiling.cols, tiling.overlap)
    tile_h, ys = _axis_starts(height, tiling.rows, tiling.overlap)
    boxes = [(x, y, x + tile_w, y + tile_h) for y in ys for x in xs]
    return list(dict.fromkeys(boxes))


def crop_pixels(pixels, size: Size, box: Box):
    """The region ``box`` (original pixels) of ``(h, w, 3)`` ``pixels`` of an image of ``size``;
    ``pixels`` may be a reduced copy, then the box is scaled to it (the crop keeps the box's aspect
    ratio to within a pixel)."""
    h, w = int(pixels.shape[0]), int(pixels.shape[1])
    width, height = size
    x0, y0, x1, y1 = box
    if (w, h) == (width, height):
        return pixels[y0:y1, x0:x1]
    sx, sy = w / width, h / height
    return pixels[math.floor(y0 * sy):max(math.floor(y0 * sy) + 1, math.ceil(y1 * sy)),
                  math.floor(x0 * sx):max(math.floor(x0 * sx) + 1, math.ceil(x1 * sx))]


def crop_size(box: Box) -> Size:
    return Size(box[2] - box[0], box[3] - box[1])


def from_tile(dets: Detections, box: Box, size: Size) -> Detections:
    """A tile's detections (pixels of the crop ``box``) -> pixels of the image of ``size``, without
    the boxes that touch an inner edge of the tile (see the module's rules)."""
    x0, y0, x1, y1 = box
    width, height = size
    margin = max(2.0, EDGE_MARGIN * max(x1 - x0, y1 - y0))
    xyxy = dets.xyxy + np.array([x0, y0, x0, y0], dtype=dets.xyxy.dtype)
    cut = np.zeros(len(dets), dtype=bool)
    if x0 > 0:
        cut |= xyxy[:, 0] <= x0 + margin
    if y0 > 0:
        cut |= xyxy[:, 1] <= y0 + margin
    if x1 < width:
        cut |= xyxy[:, 2] >= x1 - margin
    if y1 < height:
        cut |= xyxy[:, 3] >= y1 - margin
    keep = ~cut
    return Detections(xyxy[keep], dets.scores[keep], dets.class_ids[keep], dets.prompt_ids[keep])


def concat(parts: list[Detections]) -> Detections:
    """Model detections (no masks) of several parts as one record."""
    parts = [p for p in parts if len(p)] or parts[:1]
    if not parts:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0), np.zeros(0))
    return Detections(np.concatenate([p.xyxy for p in parts]), np.concatenate([p.scores for p in parts]),
                      np.concatenate([p.class_ids for p in parts]), np.concatenate([p.prompt_ids for p in parts]))


def merge_detections(parts: list[Detections], size: Size, tiling: Tiling, config) -> Detections:
    """The full image's and the tiles' detections (image pixels) of one image -> its final ones:
    duplicates merged per class (``tiling.merge``), then ``filter_detections`` with ``config``."""
    from autolabel.geometry import batched_nms
    from autolabel.pipeline import filter_detections

    dets = concat(parts)
    if len(dets):
        if tiling.merge == "wbf":
            dets = weighted_box_fusion(dets, tiling.merge_iou)
        else:
            dets = dets[batched_nms(dets.xyxy, dets.scores, dets.class_ids, tiling.merge_iou)]
    return filter_detections(dets, size, config)


def weighted_box_fusion(dets: Detections, iou: float) -> Detections:
    """Per class, in score order: a box joins the first cluster whose fused box it overlaps by more
    than ``iou``, else starts one. A cluster's box is the score-weighted mean of its members, its
    score and prompt those of its best member (so thresholds keep their meaning)."""
    order = np.argsort(-dets.scores, kind="stable")
    clusters: list[list[int]] = []
    fused: list[np.ndarray] = []
    for i in order:
        best = -1
        for k, members in enumerate(clusters):
            if dets.class_ids[members[0]] != dets.class_ids[i]:
                continue
            if box_iou(fused[k][None], dets.xyxy[i][None].astype(np.float64))[0, 0] > iou:
                best = k
                break
        if best < 0:
            clusters.append([int(i)])
            fused.append(dets.xyxy[i].astype(np.float64))
        else:
            clusters[best].append(int(i))
            weights = np.maximum(dets.scores[clusters[best]].astype(np.float64), 1e-12)
            fused[best] = (dets.xyxy[clusters[best]].astype(np.float64) * weights[:, None]).sum(0) / weights.sum()
    heads = [members[0] for members in clusters]
    xyxy = np.array(fused, dtype=dets.xyxy.dtype).reshape(-1, 4)
    return Detections(xyxy, dets.scores[heads], dets.class_ids[heads], dets.prompt_ids[heads])
