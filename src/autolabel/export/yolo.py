"""YOLO (Ultralytics) export.

Layout: ``images/<split>/<name>``, ``labels/<split>/<stem>.txt`` and ``data.yaml`` (split folders,
``nc``, ``names`` as ``{0: first class, ...}``; no ``path`` key, so the folder holding it is the
dataset root wherever it is moved). Without ``--split`` every image goes to ``train`` and ``val``
points at the same folder. Negatives get an empty label file.

Rows are normalised to 0-1 by the exported image's size, 6 decimals: ``class cx cy w h``, or for a
run with masks ``class x1 y1 x2 y2 ...``, one polygon per object. A mask with several parts is joined
into one polygon by zero-width bridges (like Ultralytics' ``merge_multi_segment``, but every part is
kept); a label without a mask is written as its box's rectangle, since Ultralytics reads every row
of a segmentation file as a polygon.
"""

from __future__ import annotations

import numpy as np

from autolabel.export.items import ExportItem, ExportLabel, ExportOptions, ExportPlan
from autolabel.store import Store

DATA_YAML = "data.yaml"
UNSPLIT = "train"


def merge_polygon_parts(parts: list[list[float]]) -> list[float]:
    """Flat ``[x0, y0, ...]`` parts -> one flat closed polygon (``[]`` for none). Each further part
    hangs off the path at the nearest pair of vertices: out along the bridge, around the part, back."""
    arrays = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in parts if len(p) >= 6]
    if not arrays:
        return []
    path = arrays[0]
    for part in arrays[1:]:
        d = ((path[:, None, :] - part[None, :, :]) ** 2).sum(axis=2)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        loop = np.roll(part, -j, axis=0)
        path = np.concatenate((path[: i + 1], loop, loop[:1], path[i:]), axis=0)
    return path.ravel().tolist()


def _fmt(values) -> str:
    return " ".join(f"{v:.6f}" for v in values)


def box_row(label: ExportLabel, width: int, height: int) -> str:
    x0, y0, x1, y1 = label.xyxy
    cx, cy, w, h = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height
    return f"{label.class_index} {_fmt((cx, cy, w, h))}"


def polygon_row(label: ExportLabel, width: int, height: int) -> str:
    polygon = merge_polygon_parts(label.polygons)
    if not polygon:  # no mask (or it vanished when resized): the box as a rectangle
        x0, y0, x1, y1 = label.xyxy
        polygon = [x0, y0, x1, y0, x1, y1, x0, y1]
    points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2) / [width, height]
    return f"{label.class_index} {_fmt(np.clip(points, 0.0, 1.0).ravel())}"


class YoloWriter:
    """Polygon rows when the run has masks (unless ``masks="none"``), else box rows."""

    index_name = DATA_YAML

    def __init__(self, store: Store, options: ExportOptions):
        config = store.config or {}
        self.segments = options.include_masks and (config.get("mode") == "segment" or bool(config.get("masks")))

    @staticmethod
    def _split(item: ExportItem) -> str:
        return item.split or UNSPLIT

    def image_path(self, item: ExportItem) -> str:
        return f"images/{self._split(item)}/{item.name}"

    def add(self, item: ExportItem, sink) -> list[str]:
        row = polygon_row if self.segments else box_row
        path = f"labels/{self._split(item)}/{item.stem}.txt"
        sink.write(path, "".join(row(label, item.width, item.height) + "\n" for label in item.labels).encode())
        return [path]

    def finish(self, plan: ExportPlan, sink) -> list[str]:
        import yaml

        splits = [s or UNSPLIT for s in plan.split_names]
        data: dict = {split: f"images/{split}" for split in splits}
        comment = "# autolabel export (Ultralytics YOLO). No 'path' key: the dataset root is this file's folder.\n"
        if "train" not in data:
            data["train"] = f"images/{splits[0]}"
        if "val" not in data:
            data["val"] = data["train"]
            comment += f"# No validation split was exported: 'val' points at {data['val']}.\n"
        data["nc"] = len(plan.ontology.names)
        data["names"] = {i: name for i, name in enumerate(plan.ontology.names)}
        text = comment + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        sink.write(DATA_YAML, text.encode("utf-8"))
        return [DATA_YAML]
