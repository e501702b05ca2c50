"""Shared pieces of every export: output names, image transforms, resized copies, atomic files, ZIPs.

Labels live in the store in original oriented pixels; an :class:`ImageTransform` maps them into the
exported image's pixels. Resizing and letterboxing happen only here, so every format sees the same
numbers.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from autolabel.errors import ConfigError

JPEG_SUFFIXES = {".jpg", ".jpeg"}
#: Letterbox padding colour: Ultralytics' gray (114, 114, 114).
LETTERBOX_COLOR = (114, 114, 114)


# -- target size ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSize:
    """``--image-size``: ``640`` (longest side) or ``640x480`` (exact, stretched).

    With ``letterbox=True`` the image is scaled to fit inside ``width x height`` (``640`` means
    ``640x640``) keeping its aspect ratio, centred, and padded with :data:`LETTERBOX_COLOR`, as
    Ultralytics' ``LetterBox`` does.
    """

    long_side: int | None = None
    width: int | None = None
    height: int | None = None
    letterbox: bool = False

    @classmethod
    def parse(cls, text: str | int | None, letterbox: bool = False) -> "ImageSize | None":
        if text is None or text == "":
            if letterbox:
                raise ConfigError("--letterbox needs --image-size (e.g. --image-size 640)")
            return None
        text = str(text).strip().lower()
        match = re.fullmatch(r"(\d+)(?:x(\d+))?", text)
        if not match:
            raise ConfigError(f"--image-size must be N (longest side) or WxH, got {text!r}")
        a, b = int(match.group(1)), match.group(2)
        if a <= 0 or (b is not None and int(b) <= 0):
            raise ConfigError(f"--image-size must be positive, got {text!r}")
        if letterbox:
            return cls(width=a, height=a if b is None else int(b), letterbox=True)
        return cls(long_side=a) if b is None else cls(width=a, height=int(b))

    def target(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the exported copy of a ``width`` x ``height`` image (the canvas)."""
        if self.long_side is None:
            return int(self.width), int(self.height)
        scale = self.long_side / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))

    def transform(self, width: int, height: int) -> "ImageTransform":
        """The coordinate map from a ``width`` x ``height`` original to its exported copy."""
        out_w, out_h = self.target(width, height)
        if not self.letterbox:
            return ImageTransform(width, height, out_w, out_h, out_w, out_h, 0, 0)
        scale = min(out_w / width, out_h / height)
        content_w, content_h = max(1, round(width * scale)), max(1, round(height * scale))
        return ImageTransform(width, height, out_w, out_h, content_w, content_h,
                              (out_w - content_w) // 2, (out_h - content_h) // 2)


@dataclass(frozen=True)
class ImageTransform:
    """Original oriented pixels -> exported image pixels.

    The original ``source_width x source_height`` frame is resized to ``content_width x
    content_height`` and placed with its top-left corner at ``(offset_x, offset_y)`` on a
    ``width x height`` canvas (offsets are 0 and content = canvas unless letterboxed). A point maps
    as ``x' = x * sx + offset_x``, ``y' = y * sy + offset_y`` with ``sx = content_width /
    source_width``, ``sy = content_height / source_height``.
    """

    source_width: int
    source_height: int
    width: int
    height: int
    content_width: int
    content_height: int
    offset_x: int = 0
    offset_y: int = 0

    @classmethod
    def identity(cls, width: int, height: int) -> "ImageTransform":
        return cls(width, height, width, height, width, height, 0, 0)

    @property
    def sx(self) -> float:
        return self.content_width / self.source_width

    @property
    def sy(self) -> float:
        return self.content_height / self.source_height

    @property
    def is_identity(self) -> bool:
        return self == ImageTransform.identity(self.source_width, self.source_height)

    def boxes(self, xyxy) -> np.ndarray:
        """``(N, 4)`` original ``xyxy`` -> exported pixels, clipped to the image content (float64)."""
        b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4) * [self.sx, self.sy, self.sx, self.sy]
        b += [self.offset_x, self.offset_y, self.offset_x, self.offset_y]
        b[:, 0::2] = np.clip(b[:, 0::2], self.offset_x, self.offset_x + self.content_width)
        b[:, 1::2] = np.clip(b[:, 1::2], self.offset_y, self.offset_y + self.content_height)
        return b

    def rle(self, rle: dict) -> dict:
        """A COCO RLE of the original frame -> the same mask on the exported canvas.

        Nearest-neighbour resize to the content size (``cv2.INTER_NEAREST``), then placed at the
        offset; padding is background.
        """
        if self.is_identity:
            return rle
        import cv2

        from autolabel.geometry import region_to_rle, rle_to_mask

        mask = rle_to_mask(rle).view(np.uint8)
        if (self.content_width, self.content_height) != (mask.shape[1], mask.shape[0]):
            mask = cv2.resize(mask, (self.content_width, self.content_height), interpolation=cv2.INTER_NEAREST)
        return region_to_rle(mask, self.offset_x, self.offset_y, self.height, self.width)

    def to_dict(self) -> dict:
        """JSON-ready description (the manifest records it so labels can be mapped back)."""
        return {"source_size": [self.source_width, self.source_height], "size": [self.width, self.height],
                "scale": [self.sx, self.sy], "offset": [self.offset_x, self.offset_y]}


# -- names ------------------------------------------------------------------------------------------


def output_suffix(path: str) -> str:
    """Exported images are JPEG when the source is JPEG, PNG otherwise (lossless, universally loaded)."""
    return ".jpg" if Path(path).suffix.lower() in JPEG_SUFFIXES else ".png"


def _name_key(name: str) -> str:
    """Two names clash when their stems agree ignoring case: label files are named by the stem
    (YOLO ``a.txt``, VOC ``a.xml``), and macOS/Windows file systems ignore case."""
    return PurePosixPath(name).stem.casefold()


def export_names(paths: list[str], suffix: str | None = None) -> dict[str, str]:
    """Flat, unique, deterministic file names for source paths.

    ``siteA/cam1/0001.jpg`` -> ``siteA__cam1__0001.jpg`` (relative to the inputs' common folder),
    so two folders' ``photo.jpg`` never collide. Names whose stems still clash, ignoring case
    (``a.jpg`` and ``a.png``, ``A.jpg`` and ``a.jpg``, ``x/y.jpg`` and ``x__y.jpg``), get a short hash
    of their path relative to that folder (never of where it sits on disk: names and the splits keyed
    on them stay the same when the dataset moves), because label files are named after the stem.
    ``suffix`` (e.g. ``.jpg``)
    overrides the per-file suffix of :func:`output_suffix`.
    """
    parents = [os.path.dirname(p) for p in paths]
    root = os.path.commonpath(parents) if len(set(parents)) > 1 else (parents[0] if parents else "")
    names: dict[str, str] = {}
    relative: dict[str, str] = {}
    for path in sorted(paths):
        rel = PurePosixPath(Path(os.path.relpath(path, root) if root else path).as_posix())
        relative[path] = rel.as_posix()
        stem = "__".join([*rel.parent.parts, rel.stem]).lstrip(".") or "image"
        stem = re.sub(r"[^\w.\-]+", "_", stem)
        names[path] = stem + (suffix or output_suffix(path))
    taken = Counter(_name_key(n) for n in names.values())
    for path, name in names.items():
        if taken[_name_key(name)] > 1:
            digest = hashlib.sha256(relative[path].encode()).hexdigest()
            for length in (8, 16, 64):  # longer digests only if a hashed name hits another name
                candidate = f"{PurePosixPath(name).stem}_{digest[:length]}{PurePosixPath(name).suffix}"
                if _name_key(candidate) not in taken:
                    break
            taken[_name_key(candidate)] += 1
            names[path] = candidate
    return names


# -- image copies -----------------------------------------------------------------------------------


def _can_copy_bytes(path: str, transform: ImageTransform, image_format: str | None) -> bool:
    """A source file can be copied as-is if a trainer would decode exactly our oriented frame."""
    if not transform.is_identity:
        return False
    allowed = JPEG_SUFFIXES if image_format == "jpeg" else JPEG_SUFFIXES | {".png"}
    if Path(path).suffix.lower() not in allowed:
        return False
    try:
        with Image.open(path) as im:
            orientation = im.getexif().get(0x0112, 1)
            return im.mode in ("RGB", "L") and orientation in (0, 1)
    except OSError:
        return False


def encode_image(path: str, transform: ImageTransform | None, source_size: tuple[int, int], max_pixels: int,
                 image_format: str | None = None) -> bytes:
    """Bytes of the exported image: the oriented RGB frame mapped by ``transform`` (None: same size).

    The EXIF orientation is baked into the pixels, so every loader (PIL, OpenCV, browsers) sees the
    frame our coordinates refer to. The file is JPEG (quality 95) for JPEG sources or
    ``image_format="jpeg"``, PNG otherwise.
    """
    transform = transform or ImageTransform.identity(*source_size)
    if _can_copy_bytes(path, transform, image_format):
        return Path(path).read_bytes()
    from autolabel.images import load_image

    content = (transform.content_width, transform.content_height)
    # Shrinking: decode at reduced size first (JPEG DCT scaling, never below the needed size).
    needed = max(content[0] / source_size[0], content[1] / source_size[1])
    max_side = math.ceil(max(source_size) * needed) if needed < 1 else None
    image = load_image(path, max_pixels=max_pixels, max_side=max_side).image
    if image.size != content:
        image = image.resize(content, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if content != (transform.width, transform.height):  # letterboxed
        canvas = Image.new("RGB", (transform.width, transform.height), LETTERBOX_COLOR)
        canvas.paste(image, (transform.offset_x, transform.offset_y))
        image = canvas
    buffer = io.BytesIO()
    if image_format == "jpeg" or output_suffix(path) == ".jpg":
        image.save(buffer, "JPEG", quality=95)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def json_bytes(document, *, indent: int | None = None) -> bytes:
    """Deterministic JSON bytes (compact unless ``indent``; UTF-8, non-ASCII kept readable)."""
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(document, separators=separators, indent=indent, ensure_ascii=False).encode("utf-8")


# -- output sinks -----------------------------------------------------------------------------------


class DirectorySink:
    """Writes files under a folder, each atomically (temp file in the same folder + rename)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def write(self, relpath: str, data: bytes) -> None:
        target = self.root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def close(self) -> Path:
        return self.root

    def abort(self) -> None:
        """Files already written stay (each is whole); the index file, written last, is not there."""


class ZipSink:
    """Writes every file into one ZIP, which appears under its final name only when complete."""

    def __init__(self, zip_path: Path):
        self.path = Path(zip_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".zip", dir=self.path.parent)
        os.close(fd)
        self._zip = zipfile.ZipFile(self._tmp, "w")

    def write(self, relpath: str, data: bytes) -> None:
        # Images are already compressed; deflate only text (JSON, YAML, XML, labels).
        compress = zipfile.ZIP_STORED if Path(relpath).suffix.lower() in {".jpg", ".png"} else zipfile.ZIP_DEFLATED
        info = zipfile.ZipInfo(relpath, date_time=(1980, 1, 1, 0, 0, 0))  # fixed: deterministic archives
        info.compress_type = compress
        info.external_attr = 0o644 << 16
        self._zip.writestr(info, data)

    def close(self) -> Path:
        self._zip.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._zip.close()
        Path(self._tmp).unlink(missing_ok=True)


def open_sink(out_dir: str | Path, zip_name: str | None):
    """A sink writing loose files under ``out_dir``, or one ``out_dir/zip_name`` archive."""
    return ZipSink(Path(out_dir) / zip_name) if zip_name else DirectorySink(Path(out_dir))
