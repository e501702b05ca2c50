"""Where images come from: local (or shared) folders, and object stores through pyarrow.

Local inputs go through ``images.discover_image_paths`` (same rules as the single-process engine);
a URI (``s3://``, ``gs://``, ``abfs://``, ``file://``, ...) is listed with pyarrow's filesystem
for that scheme, with the credentials the environment provides. The store records each URI as
the image's path.
"""

from __future__ import annotations

import heapq
import os
from pathlib import PurePosixPath

from autolabel.errors import ConfigError, ImageLoadError
from autolabel.images import IMAGE_EXTENSIONS, discover_image_paths


def is_uri(path: str) -> bool:
    return "://" in str(path)


def list_images(inputs) -> list[str]:
    """Every image under ``inputs``, sorted and de-duplicated: local paths resolved, URIs as given."""
    inputs = [str(i) for i in inputs]
    local = [i for i in inputs if not is_uri(i)]
    found = discover_image_paths(local) if local else []
    remote = sorted({image for uri in filter(is_uri, inputs) for image in _list_uri(uri)})
    # Local paths are absolute and URIs carry a scheme, so the two never share an entry.
    return list(heapq.merge(found, remote)) if remote else found


def _filesystem(uri: str):
    from pyarrow import ArrowException
    from pyarrow.fs import FileSystem

    try:
        return FileSystem.from_uri(uri)
    except (ArrowException, ValueError, OSError) as exc:
        raise ConfigError(f"cannot open {uri}: {exc}") from exc


def _list_uri(uri: str) -> list[str]:
    """A file URI as is, or the image files under a folder URI (hidden names skipped, as locally)."""
    from pyarrow.fs import FileSelector, FileType

    fs, root = _filesystem(uri)
    info = fs.get_file_info(root)
    if info.type == FileType.NotFound:
        raise ConfigError(f"input path does not exist: {uri}")
    if info.type == FileType.File:
        return [uri]
    prefix = uri.rstrip("/")
    found = []
    for entry in fs.get_file_info(FileSelector(root, recursive=True)):
        relative = PurePosixPath(entry.path[len(root.rstrip("/")):].lstrip("/"))
        if (entry.type == FileType.File and relative.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in relative.parts)):
            found.append(f"{prefix}/{relative}")
    return found


def read_uri(uri: str) -> bytes:
    """The bytes of one remote file; ``ImageLoadError`` when it cannot be read."""
    from pyarrow import ArrowException

    try:
        fs, path = _filesystem(uri)
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except (ArrowException, OSError, ConfigError) as exc:
        raise ImageLoadError(f"{uri}: cannot read file ({exc})") from exc


def suffix(uri: str) -> str:
    return os.path.splitext(uri)[1]
