"""Generated video scenes for tests: clips of moving rectangles whose every box is known, a detector
that finds them by colour (a ``models.base.Detector`` whose right answer is known) and a propagator
that follows them by colour (a perfect ``models.sam2_video.Propagator``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autolabel.detections import Detections
from autolabel.geometry import Size, mask_to_rle


@dataclass(frozen=True)
class Shape:
    """A filled rectangle of ``color`` moving ``(dx, dy)`` px per frame, visible in frames ``first..last``."""

    color: tuple[int, int, int]
    x: int
    y: int
    w: int
    h: int
    dx: int = 0
    dy: int = 0
    first: int = 0
    last: int = 10**9

    def box(self, frame: int) -> tuple[int, int, int, int] | None:
        if not self.first <= frame <= self.last:
            return None
        x0, y0 = self.x + self.dx * frame, self.y + self.dy * frame
        return (x0, y0, x0 + self.w, y0 + self.h)


@dataclass(frozen=True)
class Scene:
    size: Size
    shapes: tuple[Shape, ...]
    frames: int
    background: tuple[int, int, int] = (40, 40, 40)

    def pixels(self, frame: int) -> np.ndarray:
        image = np.empty((self.size.height, self.size.width, 3), np.uint8)
        image[:] = self.background
        for shape in self.shapes:
            box = shape.box(frame)
            if box is not None:
                x0, y0, x1, y1 = (max(0, v) for v in box)
                image[y0:y1, x0:x1] = shape.color
        return image


RED, GREEN, BLUE = (230, 30, 30), (30, 220, 30), (40, 40, 230)


def two_movers(frames: int = 12, late_first: int = 5) -> Scene:
    """A red and a green box moving right/down, and a blue box appearing at ``late_first``."""
    return Scene(Size(96, 64), (
        Shape(RED, 4, 8, 16, 12, dx=2),
        Shape(GREEN, 60, 4, 12, 12, dy=3, last=frames - 1),
        Shape(BLUE, 40, 40, 14, 10, dx=-1, first=late_first),
    ), frames)


def write_clip(path: Path, scene: Scene, *, codec: str = "libx264", rate: int = 10, rotation: int = 0,
               hflip: bool = False, vflip: bool = False, pts_steps: list[int] | None = None,
               gop: int | None = None) -> Path:
    """Encode ``scene`` with PyAV. ``rotation``: display-matrix rotation (counter-clockwise degrees,
    as phones write it), then ``hflip`` / ``vflip`` mirrors. ``pts_steps``: per-frame pts increments
    in 1/rate units (variable frame rate). ``gop``: a key frame every ``gop`` frames."""
    import av
    from fractions import Fraction

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = scene.size
        stream.pix_fmt = "yuv444p" if codec == "libx264" else "yuv420p"
        time_base = Fraction(1, rate * 100)
        stream.codec_context.time_base = time_base
        if codec == "libx264":  # lossless, no B-frames: decoded boxes are where the scene put them
            stream.options = {"crf": "0", "bf": "0"}
        if gop:
            stream.codec_context.gop_size = gop
        if rotation or hflip or vflip:
            stream.set_display_rotation(rotation, hflip=hflip, vflip=vflip)
        pts = 0
        for i in range(scene.frames):
            frame = av.VideoFrame.from_ndarray(scene.pixels(i), format="rgb24")
            frame.pts = pts
            frame.time_base = time_base
            pts += 100 * (pts_steps[i] if pts_steps else 1)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(folder: Path, scene: Scene) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(scene.frames):
        Image.fromarray(scene.pixels(i)).save(folder / f"frame_{i:04d}.png")
    return folder


def color_mask(pixels: np.ndarray, color, tolerance: int = 40) -> np.ndarray:
    return (np.abs(pixels.astype(np.int16) - np.asarray(color, np.int16)).max(axis=-1) <= tolerance)


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


class _PixelPreprocessor:
    on_device = False

    def decode_side(self, size):
        return None

    def __call__(self, pixels, size, device="cpu"):
        return torch.as_tensor(np.asarray(pixels)).permute(2, 0, 1).float()


@dataclass
class ColorDetector:
    """Finds each colour of ``classes`` (colour -> class id) as one box (and its mask when
    ``yields_masks``, like SAM 3); score 0.9."""

    classes: dict[tuple[int, int, int], int]
    name: str = "color-detector"
    device: str = "cpu"
    yields_masks: bool = False
    compiled: bool = False
    preprocessor: _PixelPreprocessor = field(default_factory=_PixelPreprocessor)
    calls: int = 0

    def compile_vision(self, **options):
        pass

    def encode_text(self, queries):
        return list(queries)

    def encode_images(self, pixel_values):
        return pixel_values

    def score(self, features, text, masks: bool = True):  # masks: what detectors that make masks take
        return features

    def postprocess(self, scores, sizes, ontology, config):
        out = []
        for image in scores:
            self.calls += 1
            pixels = image.permute(1, 2, 0).numpy().astype(np.uint8)
            boxes, classes, masks = [], [], []
            for color, class_id in self.classes.items():
                mask = color_mask(pixels, color)
                box = mask_box(mask)
                if box is not None:
                    boxes.append(box)
                    classes.append(class_id)
                    masks.append(mask_to_rle(mask))
            out.append(Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), 0.9, np.float32),
                                  np.asarray(classes), np.zeros(len(boxes)), masks if self.yields_masks else None))
        return out

    def detect(self, features, text, sizes, ontology, config):
        return self.postprocess(self.score(features, text), sizes, ontology, config)


class ColorPropagator:
    """A perfect propagator: an object added from a box is the colour under that box's centre, and
    its mask on later frames is where that colour is (empty once it has left the picture)."""

    def __init__(self):
        self.colors: dict[int, np.ndarray] = {}
        self.pixels = None
        self.forgotten: list[int] = []

    def propagate(self, frame):
        self.pixels = frame.pixels
        return {oid: color_mask(frame.pixels, color) for oid, color in self.colors.items()}

    def add(self, frame, boxes):
        out = {}
        for oid, box in boxes.items():
            x0, y0, x1, y1 = (int(v) for v in box)
            self.colors[oid] = frame.pixels[(y0 + y1) // 2, (x0 + x1) // 2].astype(np.int16)
            out[oid] = color_mask(frame.pixels, self.colors[oid])
        return out

    def forget(self, object_ids):
        for oid in object_ids:
            self.colors.pop(oid, None)
            self.forgotten.append(oid)


ONTOLOGY_RGB = ("red", "green", "blue")
CLASSES_RGB = {RED: 0, GREEN: 1, BLUE: 2}


def label_clip(clip, run_dir, *, keyframe_every: int = 4, chunk_frames: int = 4, **kwargs):
    """A video run of ``clip`` (colour detector, colour propagator) into ``run_dir``."""
    from autolabel.ontology import Ontology
    from autolabel.pipeline import Labeler
    from autolabel.video.decode import VideoSource
    from autolabel.video.run import track_video
    from autolabel.video.store import open_video_store
    from autolabel.video.track import TrackConfig

    labeler = Labeler(Ontology.from_prompts(list(ONTOLOGY_RGB)), detector=ColorDetector(CLASSES_RGB))
    with open_video_store(run_dir) as store:
        return track_video(VideoSource(clip), labeler, ColorPropagator(), store,
                           config=TrackConfig(keyframe_every=keyframe_every), chunk_frames=chunk_frames, **kwargs)
