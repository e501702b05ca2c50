"""Shared pieces of every export: output names, resized image copies, atomic files and ZIPs."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from autolabel.errors import ConfigError

JPEG_SUFFIXES = {".jpg", ".jpeg"}


# -- target size ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSize:
    """``--image-size``: ``640`` (longest side) or ``640x480`` (exact, stretched)."""

    long_side: int | None = None
    width: int | None = None
    height: int | None = None

    @classmethod
    def parse(cls, text: str | int | None) -> "ImageSize | None":
        if text is None or text == "":
            return None
        text = str(text).strip().lower()
        match = re.fullmatch(r"(\d+)(?:x(\d+))?", text)
        if not match:
            raise ConfigError(f"--image-size must be N (longest side) or WxH, got {text!r}")
        a, b = int(match.group(1)), match.group(2)
        if a <= 0 or (b is not None and int(b) <= 0):
            raise ConfigError(f"--image-size must be positive, got {text!r}")
        return cls(long_side=a) if b is None else cls(width=a, height=int(b))

    def target(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the exported copy of a ``width`` x ``height`` image."""
        if self.long_side is None:
            return int(self.width), int(self.height)
        scale = self.long_side / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))


# -- names ------------------------------------------------------------------------------------------


def _common_root(paths: list[str]) -> str:
    if not paths:
        return ""
    parents = [os.path.dirname(p) for p in paths]
    return os.path.commonpath(parents) if len(set(parents)) > 1 else parents[0]


def output_suffix(path: str) -> str:
    """Exported images are JPEG when the source is JPEG, PNG otherwise (lossless, universally loaded)."""
    return ".jpg" if Path(path).suffix.lower() in JPEG_SUFFIXES else ".png"


def export_names(paths: list[str]) -> dict[str, str]:
    """Flat, unique, deterministic file names for source paths.

    ``siteA/cam1/0001.jpg`` -> ``siteA__cam1__0001.jpg`` (relative to the inputs' common folder),
    so two folders' ``photo.jpg`` never collide. Names that still clash (``a.jpg`` and ``a.jpeg``)
    get a short hash of their source path.
    """
    root = _common_root(paths)
    names: dict[str, str] = {}
    taken: dict[str, int] = {}
    for path in sorted(paths):
        rel = PurePosixPath(Path(os.path.relpath(path, root) if root else path).as_posix())
        stem = "__".join([*rel.parent.parts, rel.stem]).lstrip(".") or "image"
        stem = re.sub(r"[^\w.\-]+", "_", stem)
        names[path] = stem + output_suffix(path)
        taken[names[path]] = taken.get(names[path], 0) + 1
    for path, name in names.items():
        if taken[name] > 1:
            digest = hashlib.sha256(path.encode()).hexdigest()[:8]
            names[path] = f"{Path(name).stem}_{digest}{Path(name).suffix}"
    return names


# -- image copies -----------------------------------------------------------------------------------


def _can_copy_bytes(path: str, size: tuple[int, int] | None, source_size: tuple[int, int]) -> bool:
    """A source file can be copied as-is if a trainer would decode exactly our oriented frame."""
    if size is not None and tuple(size) != tuple(source_size):
        return False
    if Path(path).suffix.lower() not in JPEG_SUFFIXES | {".png"}:
        return False
    try:
        with Image.open(path) as im:
            orientation = im.getexif().get(0x0112, 1)
            return im.mode in ("RGB", "L") and orientation in (0, 1)
    except OSError:
        return False


def encode_image(path: str, size: tuple[int, int] | None, source_size: tuple[int, int], max_pixels: int) -> bytes:
    """Bytes of the exported image: the oriented RGB frame, resized to ``size`` if given.

    The EXIF orientation is baked into the pixels, so every loader (PIL, OpenCV, browsers) sees the
    frame our coordinates refer to.
    """
    if _can_copy_bytes(path, size, source_size):
        return Path(path).read_bytes()
    from autolabel.images import load_image

    image = load_image(path, max_pixels=max_pixels).image
    if size is not None and image.size != tuple(size):
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    if output_suffix(path) == ".jpg":
        image.save(buffer, "JPEG", quality=95)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


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
