"""An existing dataset read into memory: images (absolute paths, oriented sizes) and human labels.

Coordinate frame: like everything inside autolabel, labels are absolute ``xyxy`` pixels (pixel ``i``
spans ``[i, i + 1)``) and COCO RLE masks in the **EXIF-oriented** frame of the original image, the
frame ``images.load_image`` returns and every export bakes in.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from autolabel.errors import AutolabelError, ConfigError


class ImportFormatError(ConfigError):
    """The dataset's files do not follow the format (one readable line naming the file)."""


@dataclass(frozen=True)
class DatasetLabel:
    """One human label: class name, ``xyxy`` (oriented pixels), optional COCO RLE, crowd flag."""

    class_name: str
    xyxy: tuple[float, float, float, float]
    rle: dict | None = None
    iscrowd: bool = False


@dataclass
class DatasetImage:
    """One image of a dataset; ``error`` set when the file cannot be used (it is then skipped)."""

    path: str
    width: int | None = None
    height: int | None = None
    sha256: str | None = None
    labels: list[DatasetLabel] = field(default_factory=list)
    error: str | None = None
    split: str | None = None


@dataclass
class Dataset:
    """Classes in the dataset's order and its images, sorted by path."""

    format: str
    source: str
    classes: list[str]
    images: list[DatasetImage]
    crowd: int = 0  # labels with iscrowd (kept for evaluation; the store cannot hold them)
    skipped_invalid: int = 0  # annotations without a usable box or mask

    @property
    def has_masks(self) -> bool:
        return any(label.rle is not None for image in self.images for label in image.labels)


def safe_join(root: Path, name: str, what: str) -> Path:
    """``root / name``, refusing absolute names and names that climb out of ``root`` (``../``)."""
    if not name or os.path.isabs(name) or Path(name).drive:
        raise ImportFormatError(f"{what}: image name {name!r} must be a path relative to the image folder")
    joined = Path(os.path.normpath(root / name))
    base = Path(os.path.normpath(root))
    if joined != base and base not in joined.parents:
        raise ImportFormatError(f"{what}: image name {name!r} points outside the image folder {root}")
    return joined


# -- files: oriented size and hash --------------------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    width: int | None
    height: int | None
    raw_width: int | None
    raw_height: int | None
    orientation: int
    sha256: str | None
    error: str | None


def probe_file(path: Path) -> FileInfo:
    """Oriented size (header only), stored size, EXIF orientation and SHA-256 of an image file."""
    from autolabel.images import file_sha256, oriented_size

    try:
        width, height = oriented_size(path)
        with Image.open(path) as im:
            raw_w, raw_h = im.size
            orientation = int(im.getexif().get(0x0112, 1) or 1)
        return FileInfo(width, height, raw_w, raw_h, orientation, file_sha256(path), None)
    except AutolabelError as exc:
        return FileInfo(None, None, None, None, 1, None, str(exc))
    except OSError as exc:
        return FileInfo(None, None, None, None, 1, None, f"{path}: cannot read image ({exc})")


def probe_files(paths: list[Path]) -> list[FileInfo]:
    """:func:`probe_file` for many files (I/O bound: a few threads)."""
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="probe") as pool:
        return list(pool.map(probe_file, paths))


# -- EXIF: labels drawn on the stored (un-oriented) pixels ------------------------------------------

# Point maps from the stored frame (W x H) to the displayed frame, per the EXIF specification, and the
# PIL transposes images.load_image applies (the same table).
_POINT_MAPS = {
    2: lambda x, y, W, H: (W - x, y), 3: lambda x, y, W, H: (W - x, H - y), 4: lambda x, y, W, H: (x, H - y),
    5: lambda x, y, W, H: (y, x), 6: lambda x, y, W, H: (H - y, x), 7: lambda x, y, W, H: (H - y, W - x),
    8: lambda x, y, W, H: (y, W - x),
}
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def orient_box(xyxy, orientation: int, raw_w: int, raw_h: int) -> tuple[float, float, float, float]:
    """A box in stored pixels -> the EXIF-oriented frame (pixel-edge coordinates)."""
    f = _POINT_MAPS.get(orientation)
    if f is None:
        return tuple(float(v) for v in xyxy)
    x0, y0, x1, y1 = xyxy
    pts = np.array([f(x0, y0, raw_w, raw_h), f(x1, y1, raw_w, raw_h)], dtype=np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def orient_rle(rle: dict, orientation: int) -> dict:
    """A mask in stored pixels -> the EXIF-oriented frame (the transpose ``load_image`` applies)."""
    transpose = _TRANSPOSE.get(orientation)
    if transpose is None:
        return rle
    from autolabel.geometry import mask_to_rle, rle_to_mask

    mask = Image.fromarray(rle_to_mask(rle).astype(np.uint8) * 255).transpose(transpose)
    return mask_to_rle(np.asarray(mask) > 127)
