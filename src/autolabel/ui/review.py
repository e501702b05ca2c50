"""The Review tab's engine: which images to step through, each edit written to the store (one
store call, one durable transaction each; exports leave rejected labels out) and returned as a
:class:`Change` that ``revert`` undoes, and what the canvas shows (``canvas_value``). No Gradio here.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autolabel.detections import Detections
from autolabel.errors import ImageLoadError, StoreError
from autolabel.images import DEFAULT_MAX_PIXELS
from autolabel.review_queue import build_queue
from autolabel.store import ImageRecord, Store
from autolabel.ui.draw import class_color, detection_shapes, mask_overlay

FILTERS = ("all", "unreviewed", "low score", "most uncertain first")
TABLE_HEADERS = ["id", "class", "score", "review", "source", "x0", "y0", "x1", "y1"]


def image_ids(store: Store, filter: str = "all", low_score: float = 0.3) -> list[int]:
    """Ids of the run's labelled images in path order, filtered.

    ``unreviewed``: images not yet accepted as a whole (``Accept image``). ``low score``: images
    with a model label that is not rejected and scores below ``low_score``. ``most uncertain first``:
    every image, in the review queue's order (``autolabel.review_queue``; reviewed ones last).
    """
    if filter not in FILTERS:
        raise StoreError(f"filter must be one of {', '.join(FILTERS)}, got {filter!r}")
    if filter == "most uncertain first":
        return [entry.image_id for entry in build_queue(store)]
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


def owned_label(store: Store, image_id: int, detection_id) -> int:
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


@dataclass(frozen=True)
class Change:
    """One edit of one label: its store row before and after (``Store.detection_row``; None: absent);
    for a click that refines its mask, ``points``: the label's clicks before and after."""

    before: dict | None
    after: dict | None
    points: tuple[tuple, tuple] | None = None

    @property
    def label_id(self) -> int:
        return int((self.after or self.before)["id"])


def _tracked(store: Store, detection_id: int, edit) -> Change:
    before = store.detection_row(detection_id)
    edit(detection_id)
    return Change(before, store.detection_row(detection_id))


def accept(store: Store, image_id: int, detection_id) -> Change:
    return _tracked(store, owned_label(store, image_id, detection_id), lambda i: store.set_review(i, "accepted"))


def reject(store: Store, image_id: int, detection_id) -> Change:
    return _tracked(store, owned_label(store, image_id, detection_id), lambda i: store.set_review(i, "rejected"))


def delete(store: Store, image_id: int, detection_id) -> Change:
    return _tracked(store, owned_label(store, image_id, detection_id), store.delete_detection)


def set_class(store: Store, image_id: int, detection_id, class_name: str) -> Change:
    return _tracked(store, owned_label(store, image_id, detection_id),
                    lambda i: store.update_detection(i, class_name=class_name))


def move_box(store: Store, image_id: int, detection_id, xyxy, rle: dict | None = None) -> Change:
    """A moved or resized box (original pixels): it becomes a person's label (``update_detection``),
    with ``rle`` as its mask (None: no mask)."""
    return _tracked(store, owned_label(store, image_id, detection_id),
                    lambda i: store.update_detection(i, xyxy=xyxy, rle=rle))


def refine_mask(store: Store, image_id: int, detection_id, rle: dict, points: tuple[tuple, tuple]) -> Change:
    """A label's mask remade from its box and the person's clicks (``points``: the clicks before and
    after this edit, kept for undo): the same box with the new mask, a person's label now."""
    detection_id = owned_label(store, image_id, detection_id)
    row = store.detection_row(detection_id)
    box = tuple(row[k] for k in ("x0", "y0", "x1", "y1"))
    change = _tracked(store, detection_id, lambda i: store.update_detection(i, xyxy=box, rle=rle))
    return Change(change.before, change.after, points)


def add_box(store: Store, image_id: int, class_name: str, xyxy, rle: dict | None = None) -> Change:
    """A box a person drew (original pixels), with ``rle`` as its mask (None: no mask)."""
    if not class_name:
        raise StoreError("choose the class of the new box")
    new_id = store.add_detection(image_id, class_name, xyxy, rle=rle)
    return Change(None, store.detection_row(new_id))


def keeps_masks(run_config: dict | None) -> bool:
    """Whether a run's labels carry masks that a drawn or moved box should get too: a segment run,
    or an imported one whose dataset had masks."""
    config = run_config or {}
    return config.get("mode") == "segment" or bool(config.get("masks"))


def revert(store: Store, change: Change) -> Change:
    """Undo ``change`` (one durable transaction) and return the change that redoes it. Refused when the
    label is no longer as the change left it (edited elsewhere since), so no edit is overwritten."""
    current = store.detection_row(change.label_id)
    if current != change.after:
        raise StoreError(f"label #{change.label_id} was changed since; it cannot be undone")
    if change.before is None:
        store.delete_detection(change.label_id)
    else:
        store.put_detection_row(change.before)
    return Change(change.after, change.before, change.points[::-1] if change.points else None)


def md_text(text: str) -> str:
    """``text`` safe inside Markdown: HTML escaped, Markdown's punctuation backslashed."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~<>])", r"\\\1", html.escape(str(text), quote=False))


def data_url(image, fmt: str = "JPEG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 88} if fmt == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def hex_color(color) -> str:
    return "#%02x%02x%02x" % tuple(color)


def canvas_value(record: ImageRecord, labels: Detections, class_names: list[str], display,
                 selected: int | None, strip: list[dict], can_undo: bool, can_redo: bool,
                 points: tuple = ()) -> dict:
    """What the canvas shows (``ui.canvas``): the display image and the masks as data URLs, boxes in
    original pixels with their colours and captions, the selected label's clicks (``(x, y, label)``
    in original pixels), the class legend with counts of the labels not rejected, the image strip
    and whether undo / redo can be used."""
    shapes = detection_shapes(labels, class_names, selected)
    overlay = mask_overlay(display.size, shapes)
    live = labels.reviews != "rejected"
    counts = np.bincount(labels.class_ids[live], minlength=len(class_names)) if len(labels) else [0] * len(class_names)
    return {
        "key": f"{record.id}:{record.path}", "image": data_url(display.convert("RGB")),
        "masks": data_url(overlay, "PNG") if overlay is not None else None,
        "width": record.width, "height": record.height, "selected": selected,
        "boxes": [{"id": int(labels.ids[i]), "xyxy": [float(v) for v in labels.xyxy[i]], "text": shape.label,
                   "color": hex_color(shape.color), "dark_text": sum(shape.color) > 380, "rejected": shape.dashed}
                  for i, shape in enumerate(shapes)],
        "legend": [{"name": name, "color": hex_color(class_color(k)), "count": int(counts[k])}
                   for k, name in enumerate(class_names)],
        "points": [{"x": float(x), "y": float(y), "positive": bool(label)} for x, y, label in points],
        "strip": strip, "can_undo": can_undo, "can_redo": can_redo,
    }


class Thumbnails:
    """Small JPEG data URLs of run images for the image strip (an LRU keyed by path and mtime)."""

    def __init__(self, side: int = 96, max_pixels: int = DEFAULT_MAX_PIXELS, capacity: int = 256):
        from autolabel.ui.session import display_image

        def thumbnail(path: str, mtime: int) -> str | None:
            try:
                image, _ = display_image(path, side, max_pixels, min_side=side)
            except ImageLoadError:
                return None
            image.thumbnail((side, side))
            return data_url(image.convert("RGB"))

        self._make = functools.lru_cache(maxsize=capacity)(thumbnail)

    def get(self, path: str) -> str | None:
        try:
            return self._make(path, Path(path).stat().st_mtime_ns)
        except OSError:
            return None


class DisplayImages:
    """A small LRU of display-size decodes of run images (``session.display_image``), keyed by path
    and modification time."""

    def __init__(self, side: int = 1024, max_pixels: int = DEFAULT_MAX_PIXELS, capacity: int = 8):
        from autolabel.ui.session import display_image

        self._decode = functools.lru_cache(maxsize=capacity)(
            lambda path, mtime: display_image(path, side, max_pixels))

    def get(self, record: ImageRecord):
        """``(PIL image, scale)`` with scale = display / original size. Raises ``ImageLoadError``."""
        try:
            mtime = Path(record.path).stat().st_mtime_ns
        except OSError as exc:
            raise ImageLoadError(f"{record.path}: the image file is gone ({exc.strerror})") from None
        return self._decode(record.path, mtime)
