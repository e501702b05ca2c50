"""Find, open, validate, orient and convert images.

``load_image`` applies the EXIF orientation exactly once, before any other pixel operation, and
reports the *original full-resolution* size in that oriented frame, the one boxes, masks and exports
use. A reduced decode (``max_side``) returns fewer pixels; ``scale`` maps them back
(``x_original = x_returned / scale``).

Images come back 8-bit RGB, transparency composited onto white (``ALPHA_BACKGROUND``): dropping alpha
would expose whatever colour the encoder left under it (often black, hiding dark logos), and white is
what a reviewer sees in a browser. No Pillow globals are changed: our pixel limit is checked on the
header before decoding, Pillow's bomb guard stays active, and truncated files fail instead of decoding
as half-grey images.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

from autolabel.errors import ConfigError, ImageLoadError
from autolabel.orientation import TRANSPOSE, header_orientation, orient_size, orientation_left_after_load, stored_size

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})

ALPHA_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

#: Pillow's default MAX_IMAGE_PIXELS (89_478_485) times two, i.e. the size at which Pillow itself
#: refuses to open a file. Raising ``max_pixels`` above this does not lift Pillow's own guard.
DEFAULT_MAX_PIXELS = 178_956_970

# Only these Pillow plugins may identify a file: an exotic format hiding behind a .jpg name is
# rejected instead of reaching a rarely exercised decoder. Multi-picture JPEGs (MPO, many phone
# photos) are opened by the JPEG plugin and come back with format "MPO"; frame 0 is the photo.
_ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})

# Files up to this size are read once into memory (hash and decode the same bytes); larger ones are
# hashed by streaming and decoded from disk, so memory stays bounded.
_MAX_IN_MEMORY_BYTES = 256 * 1024 * 1024
_CHUNK = 1024 * 1024

# Errors Pillow (and the decoders under it) raise for malformed input, while opening or decoding.
_DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, Image.DecompressionBombError, MemoryError,
)

_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_DIRECT_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"})
_UINT16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_HIGH_DEPTH_MODES = _UINT16_MODES | {"I", "F"}
_SUPPORTED_MODES = _ALPHA_MODES | _DIRECT_MODES | _HIGH_DEPTH_MODES


def discover_image_paths(inputs: Iterable[str | Path] | str | Path) -> list[str]:
    """Expand files and folders into a sorted, de-duplicated list of resolved paths.

    A named file is always kept (a wrong one gets a clear error from ``load_image``, not silence);
    folders are walked recursively for ``IMAGE_EXTENSIONS`` names, skipping dot-names, following links
    but walking each real folder once (link loops end). Unusable entries (dangling links, unreadable
    sub-folders) are listed so that labelling reports them as failed. ConfigError for a missing input.

    Paths are plain ``str`` in string order, the order the run store lists them in: each costs about
    60 bytes plus its length, a quarter of a ``Path``, and the list is sorted and de-duplicated in
    place, never copied (millions of images).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: list[str] = []
    visited: set[tuple[int, int]] = set()
    for raw in inputs:
        path = Path(raw).expanduser()
        if not path.exists():
            raise ConfigError(f"input path does not exist: {path}")
        if path.is_dir():
            found.extend(_walk_folder(str(path.resolve()), visited))
        elif path.is_file():
            found.append(str(path.resolve()))
        else:
            raise ConfigError(f"input is neither a file nor a folder: {path}")
    _sort_unique(found)
    return found


def discover_images(inputs: Iterable[str | Path] | str | Path) -> list[Path]:
    """``discover_image_paths`` as ``Path`` objects, for callers that list a few images."""
    return [Path(p) for p in discover_image_paths(inputs)]


def _walk_folder(root: str, visited: set[tuple[int, int]]) -> Iterator[str]:
    """Yield resolved image paths under ``root`` (already resolved); see ``discover_image_paths``."""
    key = _dev_inode(root)
    if key is not None:
        visited.add(key)
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            if folder == root:
                raise ConfigError(f"cannot read folder {root}: {exc.strerror or exc}") from exc
            yield folder  # listed, so that labelling reports it as failed instead of dropping it
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            is_image_name = os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
            try:
                is_dir = entry.is_dir()  # follows symlinks
                is_file = not is_dir and entry.is_file()
            except OSError:  # e.g. a link loop (ELOOP): reported by load_image when it is an image name
                is_dir = is_file = False
            if not is_dir and not is_file:
                if is_image_name:  # a dangling link or an unreadable entry: reported as failed, not dropped
                    # Resolved like every listed path, so a containment check (``labeling``'s ``within``)
                    # sees where a dangling link points, not where it lies.
                    yield os.path.realpath(entry.path)
                continue
            if is_dir:
                sub = _resolve_entry(entry)
                key = _dev_inode(sub)
                if key is not None and key not in visited:
                    visited.add(key)
                    stack.append(sub)
            elif is_image_name:
                yield _resolve_entry(entry)


def _resolve_entry(entry: os.DirEntry) -> str:
    # Parents are already resolved, so only links need the (slower) resolve call.
    return os.path.realpath(entry.path) if entry.is_symlink() else entry.path


def _dev_inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _sort_unique(paths: list[str]) -> None:
    """Sort ``paths`` and drop repeats (a file named twice, or also reached through a link), in place:
    no set or second list beside it."""
    paths.sort()
    kept = 0
    for path in paths:
        if not kept or path != paths[kept - 1]:
            paths[kept] = path
            kept += 1
    del paths[kept:]


@dataclass(frozen=True)
class LoadedImage:
    """RGB pixels in the oriented frame (metadata dropped) and the original oriented ``width`` x ``height``;
    ``scale`` is returned / original size on the long side (exact there), 1.0 unless ``max_side`` shrank it."""

    path: Path
    image: Image.Image
    width: int
    height: int
    sha256: str
    scale: float = 1.0


def load_image(
    path: str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    draft: Callable[[tuple[int, int]], int | None] | None = None,
) -> LoadedImage:
    """Open, validate, orient and convert one image file to RGB; ImageLoadError (one line) if it cannot.

    ``max_pixels`` is checked on the header before decoding. ``max_side`` shrinks the long side to it
    (JPEGs first decode at a reduced DCT scale, never below the target, then every format gets a
    Lanczos downscale). ``draft`` (JPEGs only) picks ``max_side`` from the oriented header size, so a
    caller chooses the reduction without opening the file twice.
    """
    _check_positive("max_pixels", max_pixels)
    if max_side is not None:
        _check_positive("max_side", max_side)
    path = Path(path)
    data, sha256 = _read_and_hash(path)
    source: IO[bytes] = io.BytesIO(data) if data is not None else _open_file(path)
    with source:
        try:
            image, width, height, scale = _decode(source, path, max_pixels, max_side, draft)
        except _DECODE_ERRORS as exc:
            raise _decode_error(path, exc) from exc
    return LoadedImage(path=path, image=image, width=width, height=height, sha256=sha256, scale=scale)


def oriented_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` after EXIF orientation, from the header only (as ``load_image`` reports it)."""
    path = Path(path)
    _check_regular_nonempty(path)
    with _open_file(path) as fp:
        try:
            with Image.open(fp, formats=_ALLOWED_FORMATS) as im:
                return orient_size(stored_size(im), header_orientation(im, fp))
        except _DECODE_ERRORS as exc:
            raise _decode_error(path, exc) from exc


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks (constant memory); ImageLoadError if it cannot be read."""
    path = Path(path)
    digest = hashlib.sha256()
    with _open_file(path) as fp:
        try:
            while chunk := fp.read(_CHUNK):
                digest.update(chunk)
        except OSError as exc:
            raise ImageLoadError(_one_line(f"{path}: cannot read file ({exc})")) from exc
    return digest.hexdigest()


def _decode(
    fp: IO[bytes], path: Path, max_pixels: int, max_side: int | None,
    draft: Callable[[tuple[int, int]], int | None] | None = None,
) -> tuple[Image.Image, int, int, float]:
    """Decode ``fp`` -> (RGB image in the oriented frame, original oriented width, height, scale)."""
    with Image.open(fp, formats=_ALLOWED_FORMATS) as im:
        stored_w, stored_h = stored_size(im)
        if stored_w < 1 or stored_h < 1:
            raise ImageLoadError(f"{path}: image has no pixels ({stored_w}x{stored_h})")
        if stored_w * stored_h > max_pixels:
            # Checked on the header: nothing has been decoded yet.
            raise ImageLoadError(
                f"{path}: image is {stored_w}x{stored_h} = {stored_w * stored_h} pixels, "
                f"over the limit of {max_pixels}"
            )
        if im.mode not in _SUPPORTED_MODES:
            raise ImageLoadError(f"{path}: unsupported image mode {im.mode!r}")
        orientation = header_orientation(im, fp)
        width, height = orient_size((stored_w, stored_h), orientation)
        if draft is not None and im.format in _JPEG_FORMATS:
            max_side = draft((width, height))
        target = _target_size(width, height, max_side)
        if target is not None and im.format in _JPEG_FORMATS:
            # DCT-domain downscale by 1/2, 1/4 or 1/8; draft never goes below the requested size.
            # The request is in the stored frame, hence the swap back for orientations 5-8.
            im.draft(im.mode, orient_size(target, orientation))
        im.load()  # raises OSError on truncated data (LOAD_TRUNCATED_IMAGES stays False)
        transpose = TRANSPOSE.get(orientation_left_after_load(im, orientation))
        oriented = im.transpose(transpose) if transpose is not None else im
        rgb = _to_rgb(oriented)
    rgb.info = {}  # drop EXIF/XMP so that saving the pixels can never re-apply the orientation
    _check_decoded_frame(rgb.size, (width, height), target, path)
    if target is None:
        return rgb, width, height, 1.0
    resized = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return resized, width, height, max(target) / max(width, height)


def _check_decoded_frame(
    decoded: tuple[int, int], oriented: tuple[int, int], target: tuple[int, int] | None, path: Path
) -> None:
    """Guard the frame contract against decoder quirks (e.g. a plugin that orients on its own): the
    decoded size is the oriented header size, or after a JPEG draft lies between it and the target."""
    (dw, dh), (w, h) = decoded, oriented
    if target is None:
        ok = (dw, dh) == (w, h)
    else:
        within = target[0] <= dw <= w and target[1] <= dh <= h
        ok = within and abs(dw * h - dh * w) <= w + h  # draft rounds each side up by < 1 pixel
    if not ok:
        raise ImageLoadError(f"{path}: decoded size {dw}x{dh} does not match the header size {w}x{h}")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any supported mode -> a new 8-bit RGB image object of the same size (alpha onto ALPHA_BACKGROUND)."""
    if im.mode in _HIGH_DEPTH_MODES:
        gray = _high_depth_to_l(im)
        if isinstance(im.info.get("transparency"), int):
            alpha = np.asarray(im) != im.info["transparency"]
            return _composite(gray.convert("RGB"), Image.fromarray(alpha.astype(np.uint8) * 255))
        return gray.convert("RGB")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        # "transparency" covers palette tRNS and PNG colour keys on L/RGB images.
        rgba = im.convert("RGBA")
        return _composite(rgba.convert("RGB"), rgba.getchannel("A"))
    if im.mode == "RGB":
        # Already RGB: a new image object on the same pixels, not a copy (a 108 MP decode is
        # 0.4 GB), which stays valid when the decoded file's image is closed and carries none of
        # its EXIF. ``_new`` is Pillow's own way to wrap a core image (tested in test_images).
        shared = im._new(im.im)
        shared.readonly = im.readonly
        return shared
    return im.convert("RGB")


def _composite(rgb: Image.Image, alpha: Image.Image) -> Image.Image:
    """Blend ``rgb`` over ALPHA_BACKGROUND using ``alpha`` (mode L, 255 = opaque)."""
    if alpha.getextrema() == (255, 255):
        return rgb
    out = Image.new("RGB", rgb.size, ALPHA_BACKGROUND)
    out.paste(rgb, mask=alpha)
    return out


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit int and float images -> 8-bit L (Pillow's ``convert("L")`` clips at 255, turning
    most 16-bit images white). Modes ``I`` and ``F`` declare no range, so it is inferred from the values."""
    arr = np.asarray(im).astype(np.float32)
    if im.mode in _UINT16_MODES:
        out = np.round(arr / 257.0)
    else:
        finite = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        out = _infer_range_to_u8(finite, floating=im.mode == "F")
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _infer_range_to_u8(arr: np.ndarray, *, floating: bool) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    if floating and lo >= 0.0 and hi <= 1.0:
        return np.round(arr * 255.0)
    if lo >= 0.0 and hi <= 255.0:
        return np.round(arr)
    if not floating and lo >= 0.0 and hi <= 65535.0:
        return np.round(arr / 257.0)
    if hi == lo:
        return np.zeros_like(arr)
    return np.round((arr - lo) * (255.0 / (hi - lo)))


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int] | None:
    """Oriented size with the long side at ``max_side``, or None if no shrinking is needed."""
    long_side = max(width, height)
    if max_side is None or long_side <= max_side:
        return None
    short = max(1, round(min(width, height) * max_side / long_side))
    return (max_side, short) if width >= height else (short, max_side)


def _read_and_hash(path: Path) -> tuple[bytes | None, str]:
    """Return (file bytes, sha256); bytes are None for files too large to hold in memory."""
    size = _check_regular_nonempty(path)
    if size > _MAX_IN_MEMORY_BYTES:
        return None, file_sha256(path)
    with _open_file(path) as fp:
        try:
            data = fp.read()
        except OSError as exc:
            raise ImageLoadError(_one_line(f"{path}: cannot read file ({exc})")) from exc
    if not data:  # the file shrank between stat and read
        raise ImageLoadError(f"{path}: empty file (0 bytes)")
    return data, hashlib.sha256(data).hexdigest()


def _check_regular_nonempty(path: Path) -> int:
    """Return the file size; raise ImageLoadError if missing, not a regular file, or empty."""
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise ImageLoadError(f"{path}: file not found") from exc
    except OSError as exc:
        raise ImageLoadError(_one_line(f"{path}: cannot access file ({exc.strerror or exc})")) from exc
    if stat.S_ISDIR(st.st_mode):  # discovery lists sub-folders it cannot read, so they are reported
        raise ImageLoadError(f"{path}: not a regular file (a folder; check its permissions)")
    if not stat.S_ISREG(st.st_mode):
        raise ImageLoadError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise ImageLoadError(f"{path}: empty file (0 bytes)")
    return st.st_size


def _open_file(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except FileNotFoundError as exc:
        raise ImageLoadError(f"{path}: file not found") from exc
    except OSError as exc:
        raise ImageLoadError(_one_line(f"{path}: cannot open file ({exc.strerror or exc})")) from exc


def ignore_bomb_warnings() -> None:
    """For entry points (CLI, UI): hide Pillow's DecompressionBombWarning process-wide, once.

    ``load_image``'s ``max_pixels`` is the policy (Pillow's hard error still applies); warning filters
    are process-global, so this runs at start-up, never around a decode in a worker thread.
    """
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _decode_error(path: Path, exc: BaseException) -> ImageLoadError:
    """Translate a Pillow/decoder exception into a one-line ImageLoadError."""
    if isinstance(exc, UnidentifiedImageError):
        allowed = ", ".join(_ALLOWED_FORMATS)
        reason = f"not an image in a supported format ({allowed})"
    elif isinstance(exc, Image.DecompressionBombError):
        reason = f"too many pixels for Pillow's decompression-bomb guard ({exc})"
    elif isinstance(exc, MemoryError):
        reason = "out of memory while decoding"
    else:
        reason = f"corrupt or truncated image data ({type(exc).__name__}: {exc})"
    return ImageLoadError(_one_line(f"{path}: {reason}"))


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
