"""The record type every stage passes on: detections of one image.

Boxes are absolute ``xyxy`` pixels in the EXIF-oriented frame of the original image. Conversions
(xywh, normalised, resized) happen only at the export edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _as(array, dtype, shape_tail: tuple[int, ...], name: str, n: int | None) -> np.ndarray:
    arr = np.asarray(array, dtype=dtype)
    if arr.size == 0 and n in (None, 0):
        arr = arr.reshape((0, *shape_tail))
    if arr.ndim != 1 + len(shape_tail) or arr.shape[1:] != shape_tail:
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, shape_tail))})".replace(", )", ")")
                         + f", got {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows to match xyxy, got {arr.shape[0]}")
    return arr


@dataclass
class Detections:
    """Detections of one image, as aligned arrays.

    Attributes:
        xyxy: (N, 4) float32, absolute pixels ``x0, y0, x1, y1`` in the oriented image.
        scores: (N,) float32 in [0, 1].
        class_ids: (N,) int64, index into ``Ontology.classes``.
        prompt_ids: (N,) int64, index into ``Ontology.queries`` (the prompt that matched).
        masks: optional list of N COCO RLE dicts ``{"size": [h, w], "counts": str}`` at the
            original (oriented) resolution.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    prompt_ids: np.ndarray
    masks: list[dict] | None = field(default=None)

    def __post_init__(self) -> None:
        self.xyxy = _as(self.xyxy, np.float32, (4,), "xyxy", None)
        n = len(self.xyxy)
        self.scores = _as(self.scores, np.float32, (), "scores", n)
        self.class_ids = _as(self.class_ids, np.int64, (), "class_ids", n)
        self.prompt_ids = _as(self.prompt_ids, np.int64, (), "prompt_ids", n)
        if self.masks is not None:
            self.masks = list(self.masks)
            if len(self.masks) != n:
                raise ValueError(f"masks must hold {n} RLE dicts to match xyxy, got {len(self.masks)}")

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index) -> "Detections":
        """Select detections with an index array, boolean mask or slice."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        idx = np.arange(len(self))[index]
        masks = [self.masks[i] for i in idx] if self.masks is not None else None
        return Detections(self.xyxy[idx], self.scores[idx], self.class_ids[idx], self.prompt_ids[idx], masks)

    @property
    def area(self) -> np.ndarray:
        """(N,) box areas in square pixels."""
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]
