"""Example boxes drawn on the Test tab's image (no Gradio import): each becomes an
``ontology.Exemplar`` of a class, positive or negative, and joins the classes of the prompt box for
the Test tab's queries and for a batch started from them.

The image a box is drawn on is an upload: it is checked as the request guard checks uploads (an
image by name and content, within a size cap) and copied into the work folder under its SHA-256
(``work_dir/exemplars``, never served), so the exemplar stays valid when Gradio's upload cache is
pruned, and a run recorded with it can be resumed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from autolabel.errors import ConfigError
from autolabel.ontology import Exemplar, Ontology, with_exemplars

EXEMPLARS = "exemplars"  # under the work folder
MAX_IMAGE_BYTES = 50 * 1000**2
MAX_BOXES = 32  # per browser session
POSITIVE, NEGATIVE = "is the class", "is NOT the class"


@dataclass(frozen=True)
class ExampleBox:
    """One drawn box: its class, the ``Exemplar`` (the kept image copy, the box in its original
    oriented pixels) and the name of the file it was drawn on (for the list; no server path)."""

    class_name: str
    exemplar: Exemplar
    file_name: str

    @property
    def sha256(self) -> str:
        return self.exemplar.sha256


def keep_image(path: str | Path, work_dir: Path, max_pixels: int) -> Path:
    """The kept copy of the uploaded image ``path`` (``work_dir/exemplars/<sha256><suffix>``), made
    once. Refuses anything but an image within ``MAX_IMAGE_BYTES`` and ``max_pixels``."""
    from autolabel.images import file_sha256, oriented_size
    from autolabel.ui.guard import is_image_file

    path = Path(path)
    if not is_image_file(path):
        raise ConfigError(f"{path.name} is not an image: example boxes are drawn on images")
    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise ConfigError(f"{path.name} is larger than {MAX_IMAGE_BYTES // 1000**2} MB: draw on a smaller copy")
    width, height = oriented_size(path)
    if width * height > max_pixels:
        raise ConfigError(f"{path.name} has {width}x{height} pixels, more than {max_pixels}: draw on a smaller copy")
    folder = Path(work_dir) / EXEMPLARS
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / f"{file_sha256(path)}{path.suffix.lower()}"
    if not kept.exists():  # a temp copy renamed into place: a kept file is always whole
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        os.close(fd)
        shutil.copyfile(path, tmp)
        os.replace(tmp, kept)
    return kept


def add_box(boxes: tuple[ExampleBox, ...], path: str | Path, box, class_name: str | None, negative: bool,
            work_dir: Path, max_pixels: int) -> tuple[ExampleBox, ...]:
    """``boxes`` plus ``box`` (original pixels) drawn on the uploaded image ``path`` for ``class_name``."""
    name = " ".join(str(class_name or "").split())
    if not name:
        raise ConfigError("choose or type the class of the example box first")
    if len(boxes) >= MAX_BOXES:
        raise ConfigError(f"at most {MAX_BOXES} example boxes: remove one first")
    kept = keep_image(path, work_dir, max_pixels)
    exemplar = Exemplar(str(kept), tuple(round(float(v), 2) for v in box), negative=bool(negative))
    return (*boxes, ExampleBox(name, exemplar, Path(path).name))


def move_box(boxes: tuple[ExampleBox, ...], index: int, box) -> tuple[ExampleBox, ...]:
    """``boxes`` with box ``index`` moved to ``box`` (original pixels)."""
    old = boxes[_checked(boxes, index)]
    moved = replace(old.exemplar, box=tuple(round(float(v), 2) for v in box))
    return tuple(replace(b, exemplar=moved) if i == index else b for i, b in enumerate(boxes))


def remove_box(boxes: tuple[ExampleBox, ...], index: int) -> tuple[ExampleBox, ...]:
    _checked(boxes, index)
    return tuple(b for i, b in enumerate(boxes) if i != index)


def _checked(boxes, index) -> int:
    if index is None or not 0 <= int(index) < len(boxes):
        raise ConfigError("that example box is gone: pick one from the list")
    return int(index)


def with_examples(ontology: Ontology | None, boxes: tuple[ExampleBox, ...]) -> Ontology:
    """``ontology`` with each box's exemplar in its class (``ontology.with_exemplars``)."""
    added: dict[str, list[Exemplar]] = {}
    for b in boxes:
        added.setdefault(b.class_name, []).append(b.exemplar)
    return with_exemplars(ontology, added)


def query_ontology(prompts: str | None, boxes: tuple[ExampleBox, ...] = ()) -> Ontology:
    """The classes of the prompt box (``session.parse_prompts``) with the example boxes: the prompt
    box may stay empty when the boxes define every class."""
    from autolabel.ui.session import parse_prompts

    has_classes = any(line.strip() and not line.strip().startswith("#") for line in (prompts or "").splitlines())
    return with_examples(parse_prompts(prompts) if has_classes or not boxes else None, tuple(boxes or ()))


def class_choices(prompts: str | None, boxes: tuple[ExampleBox, ...]) -> list[str]:
    """Class names a new box can take: the prompt box's classes, then those of the boxes."""
    names = []
    for line in (prompts or "").splitlines():
        spec = line.strip()
        if spec and not spec.startswith("#"):
            names.append(" ".join(spec.split(";")[0].partition("=")[0].split()))
    names += [b.class_name for b in boxes]
    return [n for n in dict.fromkeys(names) if n]


def rows(boxes: tuple[ExampleBox, ...]) -> list[list]:
    """The list of boxes: number, class, kind, image, box."""
    return [[i + 1, b.class_name, "negative" if b.exemplar.negative else "positive", b.file_name,
             ", ".join(f"{v:.0f}" for v in b.exemplar.box)] for i, b in enumerate(boxes)]


ROW_HEADERS = ["#", "class", "kind", "image", "box (x0, y0, x1, y1)"]


def box_choices(boxes: tuple[ExampleBox, ...]) -> list[tuple[str, int]]:
    return [(f"{i + 1}: {'not ' if b.exemplar.negative else ''}{b.class_name} on {b.file_name}", i)
            for i, b in enumerate(boxes)]


def canvas_value(display, size, sha256: str, boxes: tuple[ExampleBox, ...]) -> dict:
    """What the drawing canvas (``ui.canvas``) shows: the image ``display`` (a display copy of an
    image of original ``size`` whose file has ``sha256``) and the example boxes drawn on it, in
    original pixels (ids: their place in ``boxes``; negatives dashed); the legend counts every box."""
    from autolabel.ui.draw import class_color
    from autolabel.ui.review import data_url, hex_color

    names = list(dict.fromkeys(b.class_name for b in boxes))
    counts = Counter(b.class_name for b in boxes)
    shown = []
    for i, b in enumerate(boxes):
        if b.sha256 != sha256:
            continue
        color = class_color(names.index(b.class_name))
        shown.append({"id": i, "xyxy": list(b.exemplar.box), "color": hex_color(color),
                      "text": f"{i + 1}: {'not ' if b.exemplar.negative else ''}{b.class_name}",
                      "dark_text": sum(color) > 380, "rejected": b.exemplar.negative})
    return {"key": sha256, "image": data_url(display.convert("RGB")), "masks": None, "width": int(size[0]),
            "height": int(size[1]), "selected": None, "boxes": shown,
            "legend": [{"name": n, "color": hex_color(class_color(k)), "count": counts[n]}
                       for k, n in enumerate(names)],
            "strip": [], "can_undo": bool(boxes), "can_redo": False}
