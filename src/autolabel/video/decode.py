"""Stream the frames of a video file (PyAV) or of a folder of numbered images.

Frames come one at a time, never all in memory, as RGB ``(h, w, 3)`` uint8 in the *display*
orientation: the stream's rotation (the display matrix phone videos carry) is applied the way EXIF
orientation is applied to photos, so boxes live in the frame a person sees. Timestamps come from each
frame's pts, so variable frame rates keep their real times. ``FrameSelection`` picks the frames to
label: every frame, every N-th decoded frame, or at most F frames per second of video time.

Files that cannot be read at all (truncated header, not a video, no video stream, no frames) raise
``VideoLoadError`` in one line. A clip whose data breaks in the middle ends at the last good frame;
``VideoSource.stopped_early`` says why.
"""

from __future__ import annotations

import logging
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autolabel.errors import ConfigError, ImageLoadError
from autolabel.geometry import Size
from autolabel.images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"})

#: Timestamps of a folder of numbered frames, which carries no time of its own.
DEFAULT_FOLDER_FPS = 30.0


class VideoLoadError(ImageLoadError):
    """A video (or frame folder) could not be read; the run reports it and goes on."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``index`` counts every decoded frame of the source from 0 (selected or
    not), ``timestamp`` is in seconds from the stream start, ``pixels`` are display-oriented RGB."""

    index: int
    timestamp: float
    pixels: np.ndarray

    @property
    def size(self) -> Size:
        return Size(int(self.pixels.shape[1]), int(self.pixels.shape[0]))


@dataclass(frozen=True)
class FrameSelection:
    """Which decoded frames to label: all (default), every ``every``-th, or at most ``fps`` per
    second of video time (by timestamp, so variable frame rates are sampled evenly in time)."""

    fps: float | None = None
    every: int | None = None

    def __post_init__(self) -> None:
        if self.fps is not None and self.every is not None:
            raise ConfigError("give --fps or --every, not both")
        if self.fps is not None and not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps)
                                         and self.fps > 0):
            raise ConfigError(f"--fps must be a positive number, got {self.fps!r}")
        if self.every is not None and (isinstance(self.every, bool) or not isinstance(self.every, int)
                                       or self.every < 1):
            raise ConfigError(f"--every must be a positive integer, got {self.every!r}")

    def select(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        last_slot = None
        start = None
        for frame in frames:
            if self.every is not None:
                if frame.index % self.every:
                    continue
            elif self.fps is not None:
                start = frame.timestamp if start is None else start
                # One frame per 1/fps slot of time: the first frame whose time falls in a new slot.
                slot = math.floor((frame.timestamp - start) * self.fps + 1e-9)
                if last_slot is not None and slot <= last_slot:
                    continue
                last_slot = slot
            yield frame

    def to_dict(self) -> dict:
        return {"fps": self.fps, "every": self.every}

    def estimate(self, info: "VideoInfo") -> int | None:
        """About how many frames this selects from a clip (None when the container does not say)."""
        total = info.frame_count
        if total and self.every:
            return -(-total // self.every)
        if total and self.fps and info.fps:
            return round(total * min(1.0, self.fps / info.fps))
        return total


@dataclass(frozen=True)
class VideoInfo:
    """What is known before decoding: display ``size``, the nominal ``fps`` (None when the
    container does not say), ``frame_count`` (an estimate; None when unknown) and the display
    matrix's counter-clockwise ``rotation`` (then a left-right mirror when ``mirrored``)."""

    path: str
    size: Size
    fps: float | None
    frame_count: int | None
    rotation: int = 0
    mirrored: bool = False


class VideoSource:
    """A video file or a folder of numbered frames, opened lazily: ``info`` probes it, ``frames()``
    streams it (each call decodes from the start)."""

    def __init__(self, path: str | Path, *, folder_fps: float = DEFAULT_FOLDER_FPS):
        self.path = Path(path)
        self.folder_fps = folder_fps
        self.stopped_early: str | None = None
        if self.path.is_dir():
            self._frame_files = numbered_frames(self.path)
        elif self.path.is_file():
            self._frame_files = None
        else:
            raise VideoLoadError(f"{self.path}: no such file or folder")
        self.info = self._probe()

    @property
    def is_folder(self) -> bool:
        return self._frame_files is not None

    def frames(self, selection: FrameSelection | None = None) -> Iterator[Frame]:
        """Decoded frames, selected by ``selection`` (all when None)."""
        self.stopped_early = None
        stream = self._folder_frames() if self.is_folder else self._video_frames()
        return (selection or FrameSelection()).select(stream)

    def frame_at(self, index: int, timestamp: float) -> Frame:
        """Frame ``index`` as ``frames()`` gives it (``timestamp``: its time there), found by seeking
        to the key frame before it rather than by decoding the clip from the start (a scrubber's
        jump to the end of a long clip); a container that cannot seek is decoded from the start."""
        if self.is_folder:
            if not 0 <= index < len(self._frame_files):
                raise VideoLoadError(f"{self.path.name}: no frame {index}")
            return Frame(index, index / self.folder_fps, _load_frame_file(self._frame_files[index]))
        pixels = self._seek(timestamp)
        if pixels is not None:
            return Frame(index, timestamp, pixels)
        for frame in self.frames():
            if frame.index == index:
                return frame
        raise VideoLoadError(f"{self.path.name}: no frame {index}")

    def _seek(self, timestamp: float) -> np.ndarray | None:
        """The display pixels of the frame at ``timestamp`` (seconds from the first frame), or None
        when the frames carry no times or none has that time."""
        with _open_container(self.path) as container:
            stream = _video_stream(container, self.path)
            frames = _decode(container, stream, self.path)
            first = next(frames, None)
            if first is None or first.pts is None or not stream.time_base:
                return None
            target = first.pts + round(timestamp / stream.time_base)
            try:
                container.seek(int(target), stream=stream, backward=True, any_frame=False)
            except (OSError, ValueError):
                return None
            for frame in _decode(container, stream, self.path):
                if frame.pts is None or frame.pts > target:
                    return None
                if frame.pts == target:
                    return _display_pixels(frame)
        return None

    # -- probing --------------------------------------------------------------------------------------

    def _probe(self) -> VideoInfo:
        if self.is_folder:
            first = _load_frame_file(self._frame_files[0])
            return VideoInfo(str(self.path), Size(first.shape[1], first.shape[0]), self.folder_fps,
                             len(self._frame_files))
        with _open_container(self.path) as container:
            stream = _video_stream(container, self.path)
            try:
                first = next(_decode(container, stream, self.path))
            except StopIteration:
                raise VideoLoadError(f"{self.path}: the video has no frames") from None
            turns, mirrored = _orientation(first)
            rotation = turns * 90
            pixels = _display_pixels(first)
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else None
            count = stream.frames or (round(float(stream.duration * stream.time_base) * fps)
                                      if stream.duration and fps else None)
        return VideoInfo(str(self.path), Size(pixels.shape[1], pixels.shape[0]), fps, count or None, rotation,
                         mirrored)

    # -- decoding -------------------------------------------------------------------------------------

    def _video_frames(self) -> Iterator[Frame]:
        with _open_container(self.path) as container:
            stream = _video_stream(container, self.path)
            stream.thread_type = "AUTO"
            decoded = _decode(container, stream, self.path)
            step = 1.0 / (self.info.fps or DEFAULT_FOLDER_FPS)
            index, start_pts, timestamp = 0, None, -step
            while True:
                try:
                    frame = next(decoded)
                except StopIteration:
                    return
                except VideoLoadError as exc:
                    if index == 0:
                        raise
                    self._stop(str(exc))
                    return
                if frame.pts is not None and stream.time_base:
                    start_pts = frame.pts if start_pts is None else start_pts
                    timestamp = float((frame.pts - start_pts) * stream.time_base)
                else:  # no time stamp on this frame: one nominal frame after the previous one
                    timestamp += step
                yield Frame(index, timestamp, _display_pixels(frame))
                index += 1

    def _folder_frames(self) -> Iterator[Frame]:
        expected = self.info.size
        for index, path in enumerate(self._frame_files):
            try:
                pixels = _load_frame_file(path)
            except VideoLoadError as exc:
                self._stop(str(exc))
                return
            if (pixels.shape[1], pixels.shape[0]) != expected:
                self._stop(f"{path}: frame size {pixels.shape[1]}x{pixels.shape[0]} differs from the "
                           f"first frame's {expected.width}x{expected.height}")
                return
            yield Frame(index, index / self.folder_fps, pixels)

    def _stop(self, reason: str) -> None:
        log.warning("%s: decoding stopped early: %s", self.path, reason)
        self.stopped_early = reason


def numbered_frames(folder: Path) -> list[Path]:
    """The images of ``folder`` in frame order (by the last number in each name); a
    ``VideoLoadError`` when there are none or two share a number."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    numbered = []
    for path in files:
        digits = re.findall(r"\d+", path.stem)
        if not digits:
            raise VideoLoadError(f"{path}: a frame folder needs numbered file names (e.g. 000001.jpg)")
        numbered.append((int(digits[-1]), path))
    if not numbered:
        raise VideoLoadError(f"{folder}: the folder holds no image frames")
    numbered.sort()
    numbers = [n for n, _ in numbered]
    if len(set(numbers)) != len(numbers):
        raise VideoLoadError(f"{folder}: two frames share a number")
    return [p for _, p in numbered]


def is_video_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_readable_video(path: str | Path) -> bool:
    """A video by its name and by its content: PyAV opens it and finds a video stream (how an
    upload is checked before anything uses it)."""
    path = Path(path)
    if not is_video_file(path) or not path.is_file():
        return False
    try:
        with _open_container(path) as container:
            _video_stream(container, path)
    except VideoLoadError:
        return False
    return True


def _load_frame_file(path: Path) -> np.ndarray:
    from autolabel.images import load_image

    try:
        loaded = load_image(path)
    except ImageLoadError as exc:
        raise VideoLoadError(str(exc)) from exc
    return np.array(loaded.image, dtype=np.uint8)  # a writable copy (torch refuses read-only arrays)


def _open_container(path: Path):
    import av

    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoLoadError(_one_line(f"{path}: not a readable video ({_reason(exc)})")) from exc


def _video_stream(container, path: Path):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise VideoLoadError(f"{path}: the file has no video stream ({', '.join(kinds)})")
    return container.streams.video[0]


def _decode(container, stream, path: Path):
    """Decoded frames; a decoder error becomes a one-line ``VideoLoadError``."""
    import av

    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
            frames = packet.decode()
        except StopIteration:
            return
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoLoadError(_one_line(f"{path}: corrupt video data ({_reason(exc)})")) from exc
        yield from frames


def _quarter_turns(rotation) -> int:
    """Counter-clockwise quarter turns of a rotation in degrees (0..3)."""
    return int(round((rotation or 0) / 90.0)) % 4


# A mirrored display matrix, by the signs of its 2x2 part (a, b, c, d): the counter-clockwise
# quarter turns that, followed by a left-right mirror, show the frame as a player does.
# (PyAV's ``frame.rotation`` reads these matrices as rotations only.)
_MIRRORED_TURNS = {(1, 0, 0, -1): 2, (-1, 0, 0, 1): 0, (0, 1, 1, 0): 3, (0, -1, -1, 0): 1}


def _orientation(frame) -> tuple[int, bool]:
    """(counter-clockwise quarter turns, then mirror left-right) of a frame's display matrix."""
    matrix = next((bytes(data) for data in frame.side_data if "DISPLAYMATRIX" in str(data.type)), None)
    if matrix is not None and len(matrix) == 36:
        a, b, _, c, d = struct.unpack("<5i", matrix[:20])
        signs = tuple(int(np.sign(v)) for v in (a, b, c, d))
        if a * d - b * c < 0 and signs in _MIRRORED_TURNS:
            return _MIRRORED_TURNS[signs], True
    return _quarter_turns(frame.rotation), False


def _display_pixels(frame) -> np.ndarray:
    """RGB pixels turned (and mirrored) the way the display matrix says, as a player shows them."""
    pixels = frame.to_ndarray(format="rgb24")
    turns, mirrored = _orientation(frame)
    if not turns and not mirrored:
        return pixels
    pixels = np.rot90(pixels, k=turns)
    return np.ascontiguousarray(pixels[:, ::-1] if mirrored else pixels)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _one_line(message: str) -> str:
    return " ".join(message.split())
