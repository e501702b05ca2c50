"""The one label record: boxes with classes of one image, as aligned arrays.

Every stage passes it on: the engine's output, the store's labels (``Store.labels``), exports,
imports, evaluation, fine-tuning and the UI. Boxes are absolute ``xyxy`` pixels in the EXIF-oriented
frame of the original image; conversions (xywh, normalised, resized) happen only at the export edge.

Labels without a score (drawn or imported by a person) have score NaN; labels without a prompt have
prompt id -1. ``masks`` is None when no label has a mask; inside a list, a None entry is a label
without a mask (e.g. a box drawn by hand in a segmentation run).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import numpy as np

SOURCES = ("model", "human")
REVIEWS = ("pending", "accepted", "rejected")
NO_PROMPT = -1


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


def _float_dtype(array) -> np.dtype:
    """float32 input (model outputs) stays float32; anything else becomes float64, so values read
    from the store or from dataset files keep every digit."""
    return np.float32 if np.asarray(array).dtype == np.float32 else np.float64


def _states(values, allowed: tuple[str, ...], name: str, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, allowed[0], dtype=f"<U{max(map(len, allowed))}")
    arr = _as(values, f"<U{max(map(len, allowed))}", (), name, n)
    bad = sorted(set(arr.tolist()) - set(allowed))
    if bad:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {', '.join(map(repr, bad))}")
    return arr


@dataclass(eq=False)
class Detections:
    """Labels of one image, as aligned arrays (row ``i`` of every field is label ``i``).

    Attributes:
        xyxy: (N, 4) absolute pixels ``x0, y0, x1, y1`` in the oriented image; float32 when given
            float32 (model boxes), else float64.
        scores: (N,) in [0, 1], NaN for a label without a score; same dtype rule as ``xyxy``.
        class_ids: (N,) int64, index into the run's (or dataset's) ``Ontology.classes``.
        prompt_ids: (N,) int64, index into ``Ontology.queries`` (the prompt that matched), -1 for none.
        masks: None (no label has a mask) or a list of N entries, each a COCO RLE dict
            ``{"size": [h, w], "counts": str}`` at the original (oriented) resolution or None.
        ids: (N,) int64 store ids of the labels, or None for labels not read from a store.
        sources: (N,) ``"model"`` / ``"human"``; None when constructing means all ``"model"``.
        reviews: (N,) ``"pending"`` / ``"accepted"`` / ``"rejected"``; None means all ``"pending"``.

    ``ids``, ``sources`` and ``reviews`` are keyword-only. After construction ``sources`` and
    ``reviews`` are always arrays; ``ids`` and ``masks`` may stay None.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    prompt_ids: np.ndarray
    masks: list[dict | None] | None = None
    _: KW_ONLY
    ids: np.ndarray | None = None
    sources: np.ndarray | None = None
    reviews: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.xyxy = _as(self.xyxy, _float_dtype(self.xyxy), (4,), "xyxy", None)
        n = len(self.xyxy)
        self.scores = _as(self.scores, _float_dtype(self.scores), (), "scores", n)
        self.class_ids = _as(self.class_ids, np.int64, (), "class_ids", n)
        self.prompt_ids = _as(self.prompt_ids, np.int64, (), "prompt_ids", n)
        if self.masks is not None:
            self.masks = list(self.masks)
            if len(self.masks) != n:
                raise ValueError(f"masks must hold {n} entries to match xyxy, got {len(self.masks)}")
        if self.ids is not None:
            self.ids = _as(self.ids, np.int64, (), "ids", n)
        self.sources = _states(self.sources, SOURCES, "sources", n)
        self.reviews = _states(self.reviews, REVIEWS, "reviews", n)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index) -> "Detections":
        """Select labels with an index array, boolean mask, slice or int (a one-row Detections)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        idx = np.arange(len(self))[index]
        return Detections(
            self.xyxy[idx], self.scores[idx], self.class_ids[idx], self.prompt_ids[idx],
            [self.masks[i] for i in idx] if self.masks is not None else None,
            ids=self.ids[idx] if self.ids is not None else None,
            sources=self.sources[idx], reviews=self.reviews[idx],
        )

    @property
    def has_score(self) -> np.ndarray:
        """(N,) bool: whether each label has a score (human labels have none)."""
        return ~np.isnan(self.scores)

    @property
    def area(self) -> np.ndarray:
        """(N,) box areas in square pixels."""
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]
