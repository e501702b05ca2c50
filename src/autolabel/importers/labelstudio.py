"""Read a Label Studio JSON export (a list of tasks) into a :class:`Dataset`.

Each task's ground truth is its most recent annotation that was not cancelled (``updated_at``, then
``id``); tasks with only predictions (or only cancelled annotations) are not ground truth and are
skipped. Results read: ``rectanglelabels`` (a rotated one becomes its axis-aligned hull),
``polygonlabels`` (a mask and the polygon's extent), ``brushlabels`` (Label Studio's brush RLE, decoded
by ``ls_brush``: a mask and its tight box; an empty one is left out), and ``rectangle`` / ``polygon`` /
``brush`` whose class is a ``labels`` result with the same id. Other result types are skipped and
counted. A region with several labels gives one label per name. Classes are in the order their names
first appear.

Our own export writes a mask of ``n`` parts as polygons ``<region>-1`` .. ``<region>-n``; they come
back as one label (the union of the parts) when all ``n`` are there with the same labels.

Coordinates are percent of ``original_width`` x ``original_height`` (a brush mask has that many
pixels), which follows the COCO reader's size policy (``dataset.declared_frame``); results whose image
was turned in the editor (``image_rotation``) or a brush mask that cannot be decoded fail their image.

``data.image`` is resolved under ``images_dir`` (default: the JSON's folder): the path after ``?d=``
(local files storage) or a plain relative path, then that path without its leading folders, then the
file name searched in the whole folder (for uploads, also without the ``xxxxxxxx-`` prefix Label
Studio adds). URLs (``s3://``, ``http://``...) are matched by file name. Images not found are
reported and skipped.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from autolabel.detections import Detections
from autolabel.geometry import mask_to_rle, rle_to_xyxy
from autolabel.images import IMAGE_EXTENSIONS
from autolabel.importers.dataset import (Dataset, DatasetImage, ImportFormatError, declared_frame, human_labels,
                                         orient_labels, polygon_mask, probe_images, read_json, relative_inside)
from autolabel.importers.ls_brush import decode_brush

BOX_TYPES = ("rectanglelabels", "rectangle")
POLYGON_TYPES = ("polygonlabels", "polygon")
BRUSH_TYPES = ("brushlabels", "brush")
_UPLOAD_PREFIX = re.compile(r"[0-9a-f]{8}-(.+)")
# A part of a multi-part mask in our export: "<image>-<label>-<part>". Requiring the "<image>-<label>"
# base keeps one-part masks "<image>-<label>" of one image from being taken for parts of one region.
_PART_ID = re.compile(r"(\d+-\d+)-([1-9]\d*)")


class BrushMaskError(ImportFormatError):
    """A brush mask that cannot be decoded: it fails its image, not the whole import."""


@dataclass
class Region:
    kind: str  # "box", "polygon" or "brush"
    names: list[str]
    values: list[dict]  # the result's value; a multi-part polygon has one per part
    where: str
    id: str | None = None


@dataclass
class Task:
    where: str  # "<file>: task <id>"
    reference: str  # data.image
    regions: list[Region]
    size: tuple[int, int] | None  # original_width x original_height; None: not given
    error: str | None = None  # fails the task's image


@dataclass
class Skipped:
    """What the reader leaves out, for the report."""

    tasks: int = 0  # no submitted annotation
    other: Counter = field(default_factory=Counter)  # result type -> count
    rotated: int = 0  # rotated rectangles turned into their hull

    def notes(self) -> list[str]:
        notes = []
        if self.tasks:
            notes.append(f"skipped {self.tasks} tasks without a submitted annotation "
                         "(predictions alone are not ground truth)")
        if self.rotated:
            notes.append(f"{self.rotated} rotated rectangles became their axis-aligned hull")
        if self.other:
            kinds = ", ".join(sorted(self.other))
            notes.append(f"skipped {sum(self.other.values())} results of other types ({kinds})")
        return notes


def load_tasks(path: Path) -> list[dict]:
    data = read_json(path)
    if not isinstance(data, list):
        raise ImportFormatError(f"{path} is not a Label Studio JSON export: it must be a list of tasks")
    for index, task in enumerate(data):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise ImportFormatError(f"{path}: task {index} is not a Label Studio task (it needs a 'data' object)")
    return data


def latest_annotation(task: dict, where: str) -> dict | None:
    """The most recent annotation not cancelled, or None."""
    annotations = task.get("annotations")
    annotations = [] if annotations is None else annotations
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise ImportFormatError(f"{where}: 'annotations' must be a list of objects")
    kept = [a for a in annotations if not a.get("was_cancelled")]

    def recency(annotation: dict) -> tuple[str, int]:
        number = annotation.get("id")
        return (str(annotation.get("updated_at") or annotation.get("created_at") or ""),
                number if isinstance(number, int) else -1)

    return max(kept, key=recency, default=None)


def _label_names(value, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise ImportFormatError(f"{where}: labels must be a list of names, got {value!r}")
    return [n.strip() for n in value if n.strip()]


def _declared_size(result: dict, where: str) -> tuple[int, int] | None:
    width, height = result.get("original_width"), result.get("original_height")
    if width is None and height is None:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() and v > 0
               for v in (width, height)):
        raise ImportFormatError(f"{where}: original_width/original_height {width!r}x{height!r} are not pixel sizes")
    return int(width), int(height)


def read_task(task: dict, annotation: dict, where: str, skipped: Skipped) -> Task:
    """The regions of one annotation (percent coordinates, not yet converted)."""
    results = annotation.get("result") or []
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise ImportFormatError(f"{where}: an annotation's 'result' must be a list of objects")
    data = task["data"]
    reference = data.get("image")
    if reference is None:
        strings = [v for v in data.values() if isinstance(v, str)]
        reference = strings[0] if len(strings) == 1 else None
    if not isinstance(reference, str) or not reference.strip():
        raise ImportFormatError(f"{where}: 'data' has no 'image' reference")
    labels_by_id = {r.get("id"): r["value"].get("labels") for r in results
                    if r.get("type") == "labels" and isinstance(r.get("value"), dict)}
    regions, sizes, rotations = [], set(), set()
    for index, result in enumerate(results):
        kind = result.get("type")
        at = f"{where}: result {result.get('id', index)}"
        if kind not in BOX_TYPES + POLYGON_TYPES + BRUSH_TYPES:
            if kind != "labels":
                skipped.other[str(kind)] += 1
            continue
        value = result.get("value")
        if not isinstance(value, dict):
            raise ImportFormatError(f"{at}: 'value' must be an object")
        names = value.get(kind) if kind.endswith("labels") else labels_by_id.get(result.get("id"))
        shape = "box" if kind in BOX_TYPES else "polygon" if kind in POLYGON_TYPES else "brush"
        result_id = result.get("id")
        regions.append(Region(shape, _label_names(names or [], at), [value], at,
                              result_id if isinstance(result_id, str) else None))
        size = _declared_size(result, at)
        if size is not None:
            sizes.add(size)
        rotations.add(_numbers({"image_rotation": result.get("image_rotation") or 0}, ("image_rotation",), at)[0] % 360)
    error = None
    if len(sizes) > 1:
        error = f"{where}: results disagree on the image size ({', '.join(f'{w}x{h}' for w, h in sorted(sizes))})"
    elif rotations - {0}:
        error = (f"{where}: image_rotation {max(rotations):g} (the image was turned in the editor) "
                 "is not supported")
    return Task(where, reference.strip(), join_parts(regions, where), next(iter(sizes), None), error)


def join_parts(regions: list[Region], where: str) -> list[Region]:
    """Polygons ``<base>-1`` .. ``<base>-n`` (n >= 2, each once, the same labels) -> one region where
    the first of them was; anything else is left as it is."""
    parts: dict[str, dict[int, list[int]]] = {}  # base -> part number -> indices in regions
    for index, region in enumerate(regions):
        match = _PART_ID.fullmatch(region.id or "") if region.kind == "polygon" else None
        if match:
            parts.setdefault(match.group(1), {}).setdefault(int(match.group(2)), []).append(index)
    joined: dict[int, Region] = {}  # where the first part was -> the joined region
    dropped: set[int] = set()
    for base, numbers in parts.items():
        complete = sorted(numbers) == list(range(1, len(numbers) + 1)) and len(numbers) >= 2
        if not complete or any(len(found) > 1 for found in numbers.values()):
            continue
        indices = [numbers[k][0] for k in range(1, len(numbers) + 1)]
        names = regions[indices[0]].names
        if any(regions[i].names != names for i in indices):
            continue
        joined[min(indices)] = Region("polygon", names, [regions[i].values[0] for i in indices],
                                      f"{where}: result {base}-1..{len(indices)}", base)
        dropped.update(indices)
    return [joined.get(i, region) for i, region in enumerate(regions) if i in joined or i not in dropped]


def _numbers(value: dict, keys: tuple[str, ...], where: str) -> list[float]:
    out = []
    for key in keys:
        number = value.get(key, 0.0 if key == "rotation" else None)
        if not isinstance(number, (int, float)) or isinstance(number, bool) or not math.isfinite(number):
            raise ImportFormatError(f"{where}: value.{key} must be a finite number, got {number!r}")
        out.append(float(number))
    return out


def region_box(value: dict, width: int, height: int, where: str) -> tuple[np.ndarray, bool]:
    """A rectangle's pixel ``xyxy`` (its axis-aligned hull when rotated) and whether it was rotated.

    Label Studio turns a rectangle clockwise by ``rotation`` degrees about its top-left corner
    ``(x, y)``, in pixels (percent axes differ in scale).
    """
    x, y, w, h, rotation = _numbers(value, ("x", "y", "width", "height", "rotation"), where)
    x, w = x / 100.0 * width, w / 100.0 * width
    y, h = y / 100.0 * height, h / 100.0 * height
    if rotation % 360.0 == 0.0:
        return np.array([x, y, x + w, y + h]), False
    cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    corners = np.array([(x + a * cos - b * sin, y + a * sin + b * cos) for a in (0.0, w) for b in (0.0, h)])
    return np.array([*corners.min(axis=0), *corners.max(axis=0)]), True


def region_polygon(value: dict, width: int, height: int, where: str) -> list[float]:
    points = value.get("points")
    if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
        raise ImportFormatError(f"{where}: value.points must be a list of [x, y] pairs")
    flat = []
    for px, py in points:
        coords = _numbers({"x": px, "y": py}, ("x", "y"), where)
        flat += [coords[0] / 100.0 * width, coords[1] / 100.0 * height]
    return flat


def region_brush(value: dict, width: int, height: int, where: str) -> tuple[dict, np.ndarray]:
    """A brush result's mask on a ``width x height`` image -> its COCO RLE and tight ``xyxy`` (zeros
    when empty). A malformed one raises ``BrushMaskError`` naming ``where``."""
    if value.get("format", "rle") != "rle":
        raise BrushMaskError(f"{where}: brush format {value.get('format')!r} is not supported (only 'rle')")
    try:
        mask = decode_brush(value.get("rle"), width, height)
    except ValueError as exc:
        raise BrushMaskError(f"{where}: invalid brush mask ({exc})") from None
    rle = mask_to_rle(mask)
    return rle, rle_to_xyxy(rle)


def from_labelstudio(regions: list[Region], width: int, height: int, class_index: dict[str, int],
                     skipped: Skipped) -> tuple[Detections, int]:
    """Regions of one ``width x height`` image -> (human labels in its pixels, regions left out).
    Boxes are clipped to the image; a region without a label or with nothing inside is left out."""
    boxes, class_ids, masks = [], [], []
    left_out = 0
    for region in regions:
        rle = None
        if region.kind == "box":
            xyxy, rotated = region_box(region.values[0], width, height, region.where)
            skipped.rotated += rotated
        elif region.kind == "brush":
            rle, xyxy = region_brush(region.values[0], width, height, region.where)
        else:
            polygons = [region_polygon(value, width, height, region.where) for value in region.values]
            rle, xyxy = polygon_mask(polygons, width, height, region.where)
        xyxy = np.clip(xyxy, 0, [width, height, width, height])
        if not region.names or not (xyxy[2] > xyxy[0] and xyxy[3] > xyxy[1]):
            left_out += 1
            continue
        for name in region.names:
            boxes.append(xyxy)
            class_ids.append(class_index[name])
            masks.append(rle)
    return human_labels(np.array(boxes).reshape(-1, 4), class_ids, masks), left_out


def reference_paths(reference: str) -> tuple[list[str], list[str]]:
    """``data.image`` -> (relative paths to try, longest first; file names to search for)."""
    text = reference.replace("\\", "/")
    parts = urlsplit(text)
    query = parse_qs(parts.query)
    if "d" in query:  # local files storage: /data/local-files/?d=<path under its document root>
        relative = query["d"][0]
    elif not parts.scheme and not parts.netloc and not text.startswith("/"):
        relative = unquote(parts.path)
    else:
        relative = ""
    segments = [s for s in (relative or unquote(parts.path)).split("/") if s]
    if not segments:
        return [], []
    name = segments[-1]
    names = [name]
    match = _UPLOAD_PREFIX.fullmatch(name)
    if match and "/data/upload/" in parts.path:
        names.append(match.group(1))
    relatives = ["/".join(segments[k:]) for k in range(len(segments))] if relative else []
    return relatives, names


class ImageFinder:
    """Resolves ``data.image`` references under one folder (its file names indexed on first need)."""

    def __init__(self, root: Path):
        self.root = root
        self._by_name: dict[str, list[Path]] | None = None

    def _index(self) -> dict[str, list[Path]]:
        if self._by_name is None:
            self._by_name = {}
            for folder, dirs, files in os.walk(self.root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for file in files:
                    if Path(file).suffix.lower() in IMAGE_EXTENSIONS:
                        self._by_name.setdefault(file, []).append(Path(folder) / file)
        return self._by_name

    def find(self, reference: str) -> Path | str:
        """The image's path, or why it was not found."""
        relatives, names = reference_paths(reference)
        for relative in relatives:
            candidate = relative_inside(self.root, relative)
            if candidate is not None and candidate.is_file():
                return candidate
        for name in names:
            matches = self._index().get(name, [])
            if len(matches) == 1:
                return matches[0]
            if matches:
                return f"{len(matches)} files under {self.root} are named {name!r} ({matches[0]}, {matches[1]}...)"
        return f"not found under {self.root} (give --images)"


def load_labelstudio(json_path: str | Path, images_dir: str | Path | None = None, *,
                     hash_files: bool = True) -> Dataset:
    """Parse a Label Studio JSON export and probe its images (oriented size; SHA-256 with ``hash_files``)."""
    json_path = Path(json_path).resolve()
    skipped = Skipped()
    tasks: list[Task] = []
    for index, raw in enumerate(load_tasks(json_path)):
        where = f"{json_path}: task {raw.get('id', index)}"
        annotation = latest_annotation(raw, where)
        if annotation is None:
            skipped.tasks += 1
            continue
        tasks.append(read_task(raw, annotation, where, skipped))
    classes = list(dict.fromkeys(name for task in tasks for region in task.regions for name in region.names))
    if not classes:
        raise ImportFormatError(f"{json_path}: no submitted annotation has a labelled region"
                                + "".join(f"; {note}" for note in skipped.notes()))
    class_index = {name: i for i, name in enumerate(classes)}

    finder = ImageFinder(Path(images_dir).resolve() if images_dir is not None else json_path.parent)
    found: dict[Path, Task] = {}
    missing: list[DatasetImage] = []
    for task in tasks:
        path = finder.find(task.reference)
        if isinstance(path, str):
            name = PurePosixPath(task.reference.replace("\\", "/")).name or "?"
            missing.append(DatasetImage(str(finder.root / name), error=f"{task.where}: image {task.reference!r} {path}"))
        elif path in found:
            raise ImportFormatError(f"{task.where} and {found[path].where} both show {path}")
        else:
            found[path] = task

    paths = sorted(found, key=str)
    images = sorted(probe_images(paths, hash_files) + missing, key=lambda i: i.path)
    dataset = Dataset("labelstudio", str(json_path), classes, images)
    for image in dataset.images:
        if image.error:
            continue
        task = found[Path(image.path)]
        declared = task.size or (image.width, image.height)
        try:
            if task.error:
                raise ImportFormatError(task.error)
            orientation = declared_frame(image, declared, "Label Studio (original_width x original_height)")
        except ImportFormatError as exc:
            image.error = str(exc)
            continue
        try:
            labels, left_out = from_labelstudio(task.regions, *declared, class_index, skipped)
        except BrushMaskError as exc:
            image.error = str(exc)
            continue
        image.labels = orient_labels(labels, orientation, declared)
        dataset.skipped_invalid += left_out
    dataset.notes += skipped.notes()
    return dataset
