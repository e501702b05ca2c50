"""The web server's request guard: an ASGI middleware in front of Gradio's routes.

- State-changing requests (uploads, events, login) from another site are refused: a foreign page
  could otherwise fill the disk or drive the UI with the visitor's login.
- Uploads must be images or video clips (checked by name and content; anything else is deleted and
  refused) and fit the work folder's size cap (old files are pruned first).
- Files are served with ``nosniff``; anything but an image only as a download, so an uploaded
  HTML or SVG file never becomes a page on the UI's origin.
- Failed logins are counted per client; too many lock that client out for a while.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse

from autolabel.images import IMAGE_EXTENSIONS


# Served inline: images a browser never runs as a document (Gradio's own list, without SVG).
INLINE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "MPO")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}


def parse_size(text: str | int) -> int:
    """``"20gb"``, ``"500mb"``, ``1024`` -> bytes (decimal units, like Gradio's ``max_file_size``)."""
    from autolabel.errors import ConfigError

    if isinstance(text, int):
        return text
    raw = str(text).strip().lower().replace(" ", "")
    number = raw.rstrip("kmgtb")
    unit = raw[len(number):] or "b"
    try:
        return int(float(number) * UNITS[unit])
    except (ValueError, KeyError):
        raise ConfigError(f"{text!r} is not a size: use e.g. 500mb or 20gb") from None


def folder_size(root: Path) -> int:
    """Bytes in the files under ``root`` (links not followed)."""
    total = 0
    stack = [Path(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


def prune_folder(root: Path, max_bytes: int, min_age_s: float, now: float | None = None) -> int:
    """Remove the oldest entries directly under ``root`` (each an upload or cache folder) that are
    older than ``min_age_s`` until ``root`` holds at most ``max_bytes``; returns the size left.
    Younger entries stay: a page may be about to use them."""
    root = Path(root)
    size = folder_size(root)
    if size <= max_bytes or not root.is_dir():
        return size
    now = time.time() if now is None else now
    entries = sorted((p for p in root.iterdir() if not p.is_symlink()), key=lambda p: p.stat().st_mtime)
    for entry in entries:
        if size <= max_bytes:
            break
        if now - entry.stat().st_mtime <= min_age_s:
            continue
        freed = folder_size(entry) if entry.is_dir() else entry.stat().st_size
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        size -= freed
    return size


def is_image_file(path: Path) -> bool:
    """An image by its name and by its content (Pillow reads only the header)."""
    from PIL import Image

    if Path(path).suffix.lower() not in IMAGE_EXTENSIONS:
        return False
    try:
        with Image.open(path, formats=UPLOAD_FORMATS):
            return True
    except Exception:  # anything Pillow cannot identify is not an image we take
        return False


def is_allowed_upload(path: Path) -> bool:
    """What the UI takes: an image (the Test, Batch tabs) or a video clip PyAV opens (the Video tab)."""
    from autolabel.video.decode import is_readable_video

    return is_image_file(path) or is_readable_video(path)


@dataclass
class LoginThrottle:
    """Failed logins per client: after ``max_failures`` within ``window_s`` the client is locked
    out for ``lockout_s`` seconds (doubling with each further lockout, at most an hour)."""

    max_failures: int = 5
    window_s: float = 300.0
    lockout_s: float = 60.0
    _failures: dict[str, list[float]] = field(default_factory=dict, repr=False)
    _locked: dict[str, tuple[float, int]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def retry_after(self, client: str, now: float | None = None) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            until, _ = self._locked.get(client, (0.0, 0))
        return max(0.0, until - now)

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if now - t < self.window_s] + [now]
            self._failures[client] = recent
            if len(recent) >= self.max_failures:
                _, times = self._locked.get(client, (0.0, 0))
                self._locked[client] = (now + min(self.lockout_s * 2**times, 3600.0), times + 1)
                self._failures[client] = []

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
            self._locked.pop(client, None)


def _refuse(status: int, text: str, headers: dict | None = None) -> PlainTextResponse:
    return PlainTextResponse(text, status_code=status, headers=headers)


def is_same_origin(headers: Headers) -> bool:
    """True when the request has no ``Origin`` (not a browser's cross-site request) or one whose
    host is the host the request was sent to (directly or through a reverse proxy)."""
    origin = headers.get("origin")
    if origin is None:
        return True
    netloc = urlsplit(origin).netloc.lower()
    hosts = {h.strip().lower() for h in (headers.get("host", ""), headers.get("x-forwarded-host", "")) if h}
    return bool(netloc) and any(netloc == h for h in hosts)


class RequestGuard:
    """ASGI middleware (``starlette.middleware.Middleware(RequestGuard, ...)``) for the UI's server."""

    def __init__(self, app, *, work_dir: Path, upload_dir: Path, max_work_bytes: int, throttle: LoginThrottle,
                 prune_age_s: float = 900.0):
        self.app = app
        self.work_dir = Path(work_dir)
        self.upload_dir = Path(upload_dir)
        self.max_work_bytes = max_work_bytes
        self.throttle = throttle
        self.prune_age_s = prune_age_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        path = scope["path"]
        if scope["method"] not in SAFE_METHODS and not is_same_origin(headers):
            return await _refuse(403, "cross-site request refused")(scope, receive, send)
        if scope["method"] == "POST" and path.rstrip("/").endswith("/login"):
            return await self._login(scope, receive, send)
        if scope["method"] == "POST" and path.rstrip("/").endswith("/gradio_api/upload"):
            return await self._upload(scope, receive, send, headers)
        if "/gradio_api/file=" in path:
            return await self.app(scope, receive, _download_headers(send))
        return await self.app(scope, receive, send)

    async def _login(self, scope, receive, send):
        client = (scope.get("client") or ("?", 0))[0]
        wait = self.throttle.retry_after(client)
        if wait > 0:
            return await _refuse(429, "too many failed logins: try again later",
                                 {"Retry-After": str(int(wait) + 1)})(scope, receive, send)
        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status.get("code") == 200:
            self.throttle.succeeded(client)
        else:
            self.throttle.failed(client)

    async def _upload(self, scope, receive, send, headers: Headers):
        incoming = int(headers.get("content-length") or 0)
        if folder_size(self.work_dir) + incoming > self.max_work_bytes:
            prune_folder(self.upload_dir, max(self.max_work_bytes - incoming, 0), self.prune_age_s)
            if folder_size(self.work_dir) + incoming > self.max_work_bytes:
                return await _refuse(507, "the server's upload space is full: try again later or with fewer files")(
                    scope, receive, send)
        # The upload's answer (a JSON list of the stored paths) is held back until each file is checked.
        messages = []

        async def hold(message):
            messages.append(message)

        await self.app(scope, receive, hold)
        start = next((m for m in messages if m["type"] == "http.response.start"), None)
        if start is not None and start["status"] == 200:
            body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
            try:
                stored = [Path(p) for p in json.loads(body)]
            except (ValueError, TypeError):
                stored = []
            if not all(is_allowed_upload(p) for p in stored):
                for p in stored:
                    if p.resolve().is_relative_to(self.upload_dir.resolve()):
                        p.unlink(missing_ok=True)
                return await _refuse(415, "only image or video files can be uploaded")(scope, receive, send)
        for message in messages:
            await send(message)


def _download_headers(send):
    """``send`` with file responses made safe: ``nosniff``, and anything but an inline-safe image
    served as an ``application/octet-stream`` attachment."""

    async def wrapped(message):
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            headers["X-Content-Type-Options"] = "nosniff"
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if message["status"] < 300 and media not in INLINE_TYPES:
                headers["Content-Type"] = "application/octet-stream"
                disposition = headers.get("content-disposition", "")
                filename = disposition.partition(";")[2]
                headers["Content-Disposition"] = "attachment" + (f";{filename}" if filename else "")
        await send(message)

    return wrapped
