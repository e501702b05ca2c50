"""The Review tab's engine: which images to step through, and each edit written to the store.

Every action is one store call, one transaction, durable at once (the store commits review edits with
``synchronous=FULL``): accept / reject / delete a label, change its class, move its box, draw a new
box, accept a whole image. Exports then use the reviewed labels (rejected ones are excluded).

Boxes are drawn with two clicks on the displayed image (opposite corners); ``corner_click`` turns
clicks in display pixels into a box in original pixels. No Gradio import here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autolabel.detections import Detections
from autolabel.errors import StoreError
from autolabel.images import DEFAULT_MAX_PIXELS
from autolabel.store import ImageRecord, Store

FILTERS = ("all", "unreviewed", "low score")
TABLE_HEADERS = ["id", "class", "score", "review", "source", "x0", "y0", "x1", "y1"]


# -- which images ----------------------------------------------------------------------------------


def image_ids(store: Store, filter: str = "all", low_score: float = 0.3) -> list[int]:
    """Ids of the run's labelled images in path order, filtered.

    ``unreviewed``: images not yet accepted as a whole (``Accept image``). ``low score``: images
    with a model label that is not rejected and scores below ``low_score``.
    """
    if filter not in FILTERS:
        raise StoreError(f"filter must be one of {', '.join(FILTERS)}, got {filter!r}")
    ids = []
    for record in store.images("done"):
        if filter == "unreviewed" and record.reviewed:
            continue
        if filter == "low score":
            found = store.labels(record.id)
            if not np.any(found.has_score & (found.scores < low_score)):
                continue
        ids.append(record.id)
    return ids


def labels(store: Store, image_id: int) -> Detections:
    """All labels of an image, rejected ones included (shown greyed out so they can be restored)."""
    return store.labels(image_id, include_rejected=True)


def table_rows(labels: Detections, class_names: list[str]) -> list[list]:
    """One row per label, in ``TABLE_HEADERS`` order."""
    return [[int(labels.ids[i]), class_names[labels.class_ids[i]],
             round(float(labels.scores[i]), 3) if labels.has_score[i] else "", str(labels.reviews[i]),
             str(labels.sources[i]), *(round(float(v), 1) for v in labels.xyxy[i])] for i in range(len(labels))]


def label_choices(labels: Detections, class_names: list[str]) -> list[tuple[str, int]]:
    """``(name, id)`` of each label for the selection dropdown; names read ``#12 car 0.87 (pending)``."""
    choices = []
    for i in range(len(labels)):
        score = f"{labels.scores[i]:.2f}" if labels.has_score[i] else "human"
        label_id = int(labels.ids[i])
        choices.append((f"#{label_id} {class_names[labels.class_ids[i]]} {score} ({labels.reviews[i]})", label_id))
    return choices


# -- edits -----------------------------------------------------------------------------------------


def _owned(store: Store, image_id: int, detection_id) -> int:
    """The detection id as int, checked to belong to ``image_id`` (ids come from the client)."""
    if detection_id is None or detection_id == "":
        raise StoreError("select a label first")
    try:
        detection_id = int(detection_id)
    except (TypeError, ValueError):
        raise StoreError(f"not a label id: {detection_id!r}") from None
    if detection_id not in labels(store, image_id).ids:
        raise StoreError(f"label #{detection_id} is not on this image")
    return detection_id


def accept(store: Store, image_id: int, detection_id) -> None:
    store.set_review(_owned(store, image_id, detection_id), "accepted")


def reject(store: Store, image_id: int, detection_id) -> None:
    store.set_review(_owned(store, image_id, detection_id), "rejected")


def delete(store: Store, image_id: int, detection_id) -> None:
    store.delete_detection(_owned(store, image_id, detection_id))


def set_class(store: Store, image_id: int, detection_id, class_name: str) -> None:
    store.update_detection(_owned(store, image_id, detection_id), class_name=class_name)


def move_box(store: Store, image_id: int, detection_id, xyxy) -> None:
    store.update_detection(_owned(store, image_id, detection_id), xyxy=xyxy)


def add_box(store: Store, image_id: int, class_name: str, xyxy) -> int:
    if not class_name:
        raise StoreError("choose the class of the new box")
    return store.add_detection(image_id, class_name, xyxy)


def accept_image(store: Store, image_id: int) -> int:
    """Accept every pending label of the image and mark it reviewed (one transaction); returns how
    many were accepted."""
    return store.accept_image(image_id)


# -- drawing boxes with clicks ---------------------------------------------------------------------


def corner_click(pending: tuple[float, float] | None, point, scale: float, width: int, height: int):
    """One click on the displayed image: the first click of a box, or the second one.

    ``point``: ``(x, y)`` in display pixels; ``scale``: display / original. Returns
    ``(pending, box)``: after a first click ``((x, y), None)`` with the corner in display pixels;
    after a second ``(None, (x0, y0, x1, y1))`` in original pixels, ordered and clipped to the
    image. Raises ``StoreError`` if both clicks give an empty box.
    """
    x, y = float(point[0]), float(point[1])
    if pending is None:
        return (x, y), None
    (px, py) = pending
    x0, x1 = sorted((px / scale, x / scale))
    y0, y1 = sorted((py / scale, y / scale))
    box = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
    if not (box[2] - box[0] >= 1 and box[3] - box[1] >= 1):
        raise StoreError("the two corners give an empty box: click two opposite corners")
    return None, box


# -- display images --------------------------------------------------------------------------------


@dataclass
class DisplayImages:
    """A small LRU of display-size decodes of run images: ``(image, scale)`` keyed by path + mtime."""

    side: int = 1024
    capacity: int = 8
    max_pixels: int = DEFAULT_MAX_PIXELS
    _items: OrderedDict = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, record: ImageRecord):
        """``(PIL image, scale)`` with scale = display / original size. Raises ``ImageLoadError``."""
        from autolabel.errors import ImageLoadError
        from autolabel.images import load_image

        try:
            key = (record.path, Path(record.path).stat().st_mtime_ns)
        except OSError as exc:
            raise ImageLoadError(f"{record.path}: the image file is gone ({exc.strerror})") from None
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        from autolabel.ui.session import display_copy

        loaded = load_image(record.path, max_pixels=self.max_pixels, max_side=self.side)
        image, enlarge = display_copy(loaded.image, self.side)
        scale = loaded.scale * enlarge
        with self._lock:
            self._items[key] = (image, scale)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return image, scale
