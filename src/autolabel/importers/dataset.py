"""An existing dataset read into memory: images (absolute paths, EXIF-oriented sizes) and their
human labels (:class:`~autolabel.detections.Detections` whose ``class_ids`` index ``Dataset.classes``),
in the oriented frame of the original image, like everything inside autolabel."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autolabel.detections import NO_PROMPT, Detections
from autolabel.errors import AutolabelError, ConfigError


class ImportFormatError(ConfigError):
    """The dataset's files do not follow the format (one readable line naming the file)."""


def human_labels(xyxy, class_ids, masks: list[dict | None] | None = None) -> Detections:
    """Labels a person made: no score (NaN), no prompt, accepted. ``xyxy`` keeps its float64 values."""
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    if masks is not None and all(m is None for m in masks):
        masks = None  # the record's "no masks at all"
    return Detections(boxes, np.full(n, np.nan), np.asarray(class_ids, dtype=np.int64).reshape(n),
                      np.full(n, NO_PROMPT), masks, sources=np.full(n, "human"), reviews=np.full(n, "accepted"))


def _no_labels() -> Detections:
    return human_labels(np.zeros((0, 4)), np.zeros(0))


@dataclass
class DatasetImage:
    """One image of a dataset; ``error`` set when the file cannot be used (it is then skipped).

    ``labels``: its labels; ``crowd``: COCO crowd regions (``iscrowd: 1``), kept apart because the
    store cannot hold them while evaluation ignores predictions that fall on them.
    """

    path: str
    width: int | None = None
    height: int | None = None
    sha256: str | None = None
    labels: Detections = field(default_factory=_no_labels)
    crowd: Detections = field(default_factory=_no_labels)
    error: str | None = None


@dataclass
class Dataset:
    """Classes in the dataset's order and its images, sorted by path."""

    format: str
    source: str
    classes: list[str]
    images: list[DatasetImage]
    skipped_invalid: int = 0  # annotations without a usable box or mask
    notes: list[str] = field(default_factory=list)  # what the reader kept or left out, for the report

    @property
    def crowd(self) -> int:
        return sum(len(image.crowd) for image in self.images)

    @property
    def has_masks(self) -> bool:
        return any(image.labels.masks is not None for image in self.images)


def read_json(path: Path):
    """A dataset's JSON file, or an ``ImportFormatError`` saying why it cannot be read."""
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ImportFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ImportFormatError(f"{path} is not valid JSON: {exc}") from None
    return data


def safe_join(root: Path, name: str, what: str) -> Path:
    """``root / name``, refusing absolute names and names that climb out of ``root`` (``../``)."""
    if not name or os.path.isabs(name) or Path(name).drive:
        raise ImportFormatError(f"{what}: image name {name!r} must be a path relative to the image folder")
    joined = Path(os.path.normpath(root / name))
    base = Path(os.path.normpath(root))
    if joined != base and base not in joined.parents:
        raise ImportFormatError(f"{what}: image name {name!r} points outside the image folder {root}")
    return joined


def probe_images(paths: list[Path], hash_files: bool = True) -> list[DatasetImage]:
    """Images without labels yet: oriented size (header only) and, with ``hash_files``, SHA-256, or
    the error that makes the file unusable (I/O bound: a few threads)."""
    from autolabel.images import file_sha256, oriented_size

    def probe(path: Path) -> DatasetImage:
        try:
            width, height = oriented_size(path)
            return DatasetImage(str(path), width, height, file_sha256(path) if hash_files else None)
        except AutolabelError as exc:
            return DatasetImage(str(path), error=str(exc))

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="probe") as pool:
        return list(pool.map(probe, paths))


def declared_frame(image: DatasetImage, declared: tuple[int, int], fmt: str) -> int:
    """The EXIF orientation that labels made for a ``declared`` ``(w, h)`` image must be turned by
    (1: none). The oriented size is taken as is; the stored size of a file whose orientation swaps
    the sides means the labels were drawn on the stored pixels; any other size fails the image."""
    from autolabel.orientation import file_orientation, orient_size, swaps_sides

    if declared == (image.width, image.height):
        return 1
    try:
        orientation = file_orientation(image.path)
    except OSError:
        orientation = 1
    if swaps_sides(orientation) and declared == orient_size((image.width, image.height), orientation):
        return orientation
    raise ImportFormatError(f"{image.path}: {fmt} says {declared[0]}x{declared[1]} but the image is "
                            f"{image.width}x{image.height} (after EXIF orientation); labels were made for another copy")


def orient_labels(labels: Detections, orientation: int, stored: tuple[int, int]) -> Detections:
    """Labels in the stored frame of size ``stored`` ``(w, h)`` -> the EXIF-oriented frame."""
    from autolabel.orientation import orient_boxes, orient_rle

    if orientation == 1:
        return labels
    masks = None if labels.masks is None else [m if m is None else orient_rle(m, orientation) for m in labels.masks]
    return human_labels(orient_boxes(labels.xyxy, orientation, stored), labels.class_ids, masks)


def relative_inside(root: Path, name: str) -> Path | None:
    """``root / name`` when ``name`` is a relative path that stays inside ``root`` (``safe_join``), else None."""
    try:
        return safe_join(root, name, str(root))
    except ImportFormatError:
        return None


def polygon_mask(polygons: list[list[float]], width: int, height: int, where: str) -> tuple[dict, np.ndarray]:
    """Polygons (flat ``x1 y1 x2 y2 ...`` pixel lists) on a ``width x height`` image -> a COCO RLE
    and the polygons' extent ``xyxy`` (not clipped). A polygon that is not usable raises
    ``ImportFormatError`` naming ``where``."""
    from autolabel.geometry import polygons_to_rle
    from autolabel.importers.segmentation import SegmentationError, check_polygons

    try:
        check_polygons(polygons, height, width)
    except SegmentationError as exc:
        raise ImportFormatError(f"{where}: invalid polygon ({exc})") from None
    points = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons])
    return polygons_to_rle(polygons, height, width), np.array([*points.min(axis=0), *points.max(axis=0)])
