"""The one inference path: images + ontology + config -> Detections (and masks).

``detect_batch`` and ``segment_batch`` are plain functions of (model handles, images, ontology,
config) so a distributed engine can run them in remote workers; no model lives in a module global.
``Labeler`` is the convenience object the CLI, the UI and the Python API share.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from autolabel.detections import Detections
from autolabel.errors import ConfigError
from autolabel.ontology import Ontology

log = logging.getLogger(__name__)

MODES = ("detect", "segment")


@dataclass(frozen=True)
class DetectConfig:
    """Post-processing of raw OWLv2 outputs.

    threshold: global score threshold; a class's own threshold in the ontology overrides it.
    nms_iou: per-class NMS IoU; ``None`` disables NMS (OWLv2's post-processing does none).
    agnostic_nms_iou: optional second NMS pass across classes (one box per object).
    min_area_frac / max_area_frac: keep boxes whose area is within these fractions of the image area.
    max_detections: keep at most this many boxes per image (the highest scores); None keeps all.
    """

    threshold: float = 0.1
    nms_iou: float | None = 0.5
    agnostic_nms_iou: float | None = None
    min_area_frac: float = 0.0
    max_area_frac: float = 1.0
    max_detections: int | None = None

    def __post_init__(self) -> None:
        for name in ("threshold", "min_area_frac", "max_area_frac"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        for name in ("nms_iou", "agnostic_nms_iou"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {value}")
        if self.min_area_frac > self.max_area_frac:
            raise ConfigError("min_area_frac is larger than max_area_frac")
        if self.max_detections is not None and (isinstance(self.max_detections, bool) or self.max_detections < 1):
            raise ConfigError(f"max_detections must be a positive integer, got {self.max_detections}")

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["max_detections"] is None:  # stores made before this option existed stay resumable
            del data["max_detections"]
        return data


def postprocess(
    logits: np.ndarray,
    pred_boxes: np.ndarray,
    width: int,
    height: int,
    ontology: Ontology,
    config: DetectConfig,
) -> Detections:
    """Raw outputs of one image -> final Detections in original (oriented) pixels.

    logits: (P, Q) float32 per patch and query; pred_boxes: (P, 4) normalised cxcywh in the padded
    square. Score = sigmoid(max over queries), as transformers' post-processing does; the best query
    decides the class. Boxes are clipped to the image; boxes lying wholly in the padding are dropped.
    """
    from autolabel.geometry import batched_nms, clip_boxes, nms
    from autolabel.models.owlv2 import boxes_to_pixels

    best_query = logits.argmax(axis=1)
    best_logit = np.take_along_axis(logits, best_query[:, None], axis=1)[:, 0]
    scores = _sigmoid(best_logit.astype(np.float64))
    class_ids = ontology.query_class_ids[best_query]
    keep = scores > ontology.thresholds(config.threshold)[class_ids]

    boxes = clip_boxes(boxes_to_pixels(pred_boxes[keep], width, height), width, height)
    dets = Detections(boxes, scores[keep], class_ids[keep], best_query[keep])
    # Clipping collapses boxes that lay wholly in the padding (or outside) to zero area.
    area = dets.area
    image_area = float(width * height)
    dets = dets[(area > 0) & (area >= config.min_area_frac * image_area) & (area <= config.max_area_frac * image_area)]

    order = np.argsort(-dets.scores, kind="stable")
    dets = dets[order]
    if config.nms_iou is not None and len(dets):
        dets = dets[batched_nms(dets.xyxy, dets.scores, dets.class_ids, config.nms_iou)]
    if config.agnostic_nms_iou is not None and len(dets):
        dets = dets[nms(dets.xyxy, dets.scores, config.agnostic_nms_iou)]
    if config.max_detections is not None:
        dets = dets[: config.max_detections]  # already in descending score order
    return dets


class StageTimes:
    """Wall-clock seconds per pipeline stage, summed over calls from any thread (workers overlap
    the model, so stages can add up to more than the run's time).

    Stages: ``decode`` (file -> pixels), ``preprocess`` (pixels -> model inputs), ``wait_input``
    (the model loop waiting for decoded images), ``text``, ``vision`` (OWLv2 vision tower + box
    head), ``heads`` (class head + post-processing), ``sam2_encoder``, ``sam2_decoder``, ``masks``
    (upsampling + RLE), ``store`` (SQLite writes).

    ``sync``: called at the end of each stage (e.g. ``torch.cuda.synchronize``) so that device time
    lands in the stage that queued it; this serialises the GPU pipeline, so profile and time
    throughput in separate runs.
    """

    def __init__(self, sync: Callable[[], None] | None = None):
        self.seconds: dict[str, float] = defaultdict(float)
        self.sync = sync
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            elapsed = time.perf_counter() - start
            with self._lock:
                self.seconds[name] += elapsed

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            return dict(self.seconds)


def _stage(times: StageTimes | None, name: str):
    return times.stage(name) if times is not None else nullcontext()


@dataclass
class PreparedImage:
    """One decoded image, ready for the models; made by ``Labeler.prepare`` in a decode worker.

    ``width``/``height``: the original oriented size (the frame of boxes and masks).
    ``owl``/``sam``: ``(3, S, S)`` float32 model inputs when the models run on the CPU (made in the
    worker, overlapping the model). ``pixels``: ``(h, w, 3)`` uint8 decoded pixels, possibly draft-
    reduced, kept when the model's device makes the inputs itself (GPU). ``image``: full-resolution
    PIL image for models that only offer the PIL API (exact path).
    """

    path: str
    sha256: str
    width: int
    height: int
    owl: Any = None
    sam: Any = None
    pixels: Any = None
    image: Any = None


@dataclass
class _Launched:
    batch: list[PreparedImage]
    logits: Any = None
    pred_boxes: Any = None
    embeddings: list | None = None
    detections: list[Detections] | None = None


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow warnings for very negative logits."""
    from scipy.special import expit

    return expit(x)


def detect_batch(detector, images, sizes, ontology: Ontology, config: DetectConfig) -> list[Detections]:
    """Detect in a batch of images with one text encoding.

    images: RGB PIL images, EXIF-oriented (possibly shrunk, keeping aspect ratio);
    sizes: the (width, height) of each image's original oriented frame, which boxes are returned in.
    Original-size images go through the stock processor (exact); shrunk ones through the torch
    preprocessing that models the original's (``Owlv2Detector.preprocess``).
    """
    if not images:
        return []
    text = detector.encode_text(ontology.queries)
    if _is_reduced(images, sizes) and _accepts(detector.preprocess, "original_sizes"):
        pixel_values = detector.preprocess(images, original_sizes=list(sizes))
    else:
        pixel_values = detector.preprocess(images)
    features = detector.encode_images(pixel_values)
    logits = detector.class_logits(features, text).cpu().numpy()
    pred_boxes = features.pred_boxes.cpu().numpy()
    return [
        postprocess(logits[i], pred_boxes[i], w, h, ontology, config) for i, (w, h) in enumerate(sizes)
    ]


def segment_batch(segmenter, images, detections: list[Detections], sizes=None) -> list[Detections]:
    """Add one COCO RLE mask per box (SAM2: one embedding per image, all its boxes in one call).

    sizes: the (width, height) of each image's original frame, which masks come back in; None when
    the images are at full original resolution.
    """
    images = list(images)
    boxes = [d.xyxy for d in detections]
    if sizes is not None and _is_reduced(images, sizes):
        embeddings = segmenter.embed(images, original_sizes=list(sizes))
        masks = [segmenter.predict(e, b) for e, b in zip(embeddings, boxes)]
    else:
        masks = segmenter.segment(images, boxes)
    out = []
    for dets, rles in zip(detections, masks):
        out.append(Detections(dets.xyxy, dets.scores, dets.class_ids, dets.prompt_ids, list(rles)))
    return out


def _is_reduced(images, sizes) -> bool:
    from autolabel.models.owlv2 import as_size

    return any(tuple(map(int, size)) != as_size(image) for image, size in zip(images, sizes))


def _accepts(func, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


@dataclass
class Labeler:
    """Images + ontology -> Detections, with models loaded on first use.

    >>> labeler = Labeler(Ontology.from_prompts(["car=car,van", "person"]), model="google/owlv2-base-patch16")
    >>> dets = labeler.label_images([pil_image])[0]

    ``fast`` (the streaming path of ``labeling.label_into_store``): JPEGs are decoded by the DCT at
    a reduced scale (see ``decode_side``) and model inputs are made in torch (``models.preprocess``),
    in decode workers on the CPU or on the GPU; False decodes every image at full size and uses the
    stock processors (exact, slower). ``decode_margin``: the draft keeps at least this many times
    the model's input size on the long side (2: outputs move about as much as re-saving the JPEG
    does, see BENCHMARKS.md; 1: cheapest). ``compile``: ``torch.compile`` the OWLv2 vision tower.
    ``label_images`` always takes the images it is given through the stock processors.
    """

    ontology: Ontology
    model: str
    sam_model: str | None = None
    mode: str = "detect"
    config: DetectConfig = field(default_factory=DetectConfig)
    device: str = "auto"
    dtype: str = "auto"
    fast: bool = True
    decode_margin: float = 2.0
    compile: bool = False
    _detector: object = field(default=None, init=False, repr=False)
    _segmenter: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "segment" and not self.sam_model:
            raise ConfigError("segment mode needs a SAM2 model (--sam-model)")

    @property
    def detector(self):
        if self._detector is None:
            from autolabel.models.owlv2 import Owlv2Detector
            from autolabel.settings import resolve_device, resolve_dtype

            device = resolve_device(self.device)
            detector = Owlv2Detector.from_pretrained(self.model, device, resolve_dtype(self.dtype, device))
            if self.compile:
                detector.compile_vision()
            self._detector = detector
        return self._detector

    @property
    def segmenter(self):
        """SAM2, loaded only in segment mode."""
        if self._segmenter is None:
            from autolabel.models.sam2 import Sam2Segmenter
            from autolabel.settings import resolve_device, resolve_dtype

            device = resolve_device(self.device)
            self._segmenter = Sam2Segmenter.from_pretrained(self.sam_model, device, resolve_dtype(self.dtype, device))
        return self._segmenter

    def run_config(self) -> dict:
        """What identifies a run's output: a store refuses to mix results of different configs."""
        return {
            "model": self.model,
            "sam_model": self.sam_model if self.mode == "segment" else None,
            "mode": self.mode,
            "ontology": self.ontology.to_dict(),
            "detect": self.config.to_dict(),
        }

    def label_images(self, images, sizes=None) -> list[Detections]:
        """Label RGB PIL images (already oriented). ``sizes``: each image's original (width,
        height) when the images are shrunk copies; defaults to each image's own size."""
        images = list(images)
        sizes = sizes or [im.size for im in images]
        dets = detect_batch(self.detector, images, sizes, self.ontology, self.config)
        if self.mode == "segment":
            dets = segment_batch(self.segmenter, images, dets, sizes)
        return dets

    # -- the streaming path (labeling.label_into_store) ----------------------------------------------

    @property
    def uses_fast_path(self) -> bool:
        """Draft decoding + torch preprocessing, when asked for and the model objects offer it (the
        UI's shared wrappers may expose only the PIL API; they then get the exact path)."""
        if not self.fast or not callable(getattr(self.detector, "pixel_values", None)):
            return False
        if self.mode == "segment":
            return all(callable(getattr(self.segmenter, name, None))
                       for name in ("pixel_values", "embed_pixels", "predict_logits", "encode_masks"))
        return True

    @property
    def model_device(self) -> str:
        return str(getattr(self.detector, "device", "cpu"))

    def decode_side(self, width: int, height: int) -> int | None:
        """``max_side`` for ``images.load_image``: the largest JPEG draft reduction (1/2, 1/4, 1/8)
        that still gives OWLv2 ``decode_margin`` times its input size on the long side and, in
        segment mode, SAM2 at least its input size on both sides (SAM2 stretches each axis to a
        square); None: full size."""
        from autolabel.models.preprocess import draft_side

        min_short = int(self.segmenter.image_size) if self.mode == "segment" else 0
        min_long = max(int(self.detector.image_size * self.decode_margin), min_short)
        return draft_side(width, height, min_long=min_long, min_short=min_short)

    def prepare(self, path: str | Path, max_pixels: int | None = None, times: StageTimes | None = None) -> PreparedImage:
        """Decode one file and make its model inputs (runs in decode workers, overlapping the model).

        Raises ``ImageLoadError`` for files that cannot be labelled.
        """
        from autolabel.images import DEFAULT_MAX_PIXELS, load_image, oriented_size

        max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        if not self.uses_fast_path:
            with _stage(times, "decode"):
                loaded = load_image(path, max_pixels=max_pixels)
            return PreparedImage(str(loaded.path), loaded.sha256, loaded.width, loaded.height, image=loaded.image)

        from autolabel.models.preprocess import as_hwc_uint8

        with _stage(times, "decode"):
            side = None
            if _is_jpeg(path):
                side = self.decode_side(*oriented_size(path))
            loaded = load_image(path, max_pixels=max_pixels, max_side=side)
            pixels = as_hwc_uint8(loaded.image)
        prepared = PreparedImage(str(loaded.path), loaded.sha256, loaded.width, loaded.height)
        if self.model_device != "cpu":
            prepared.pixels = pixels  # small (draft-reduced) uint8; the GPU makes the inputs
            return prepared
        with _stage(times, "preprocess"):
            prepared.owl = self.detector.pixel_values(pixels, (loaded.width, loaded.height), "cpu")
            if self.mode == "segment":
                prepared.sam = self.segmenter.pixel_values(pixels, "cpu")
        return prepared

    def launch(self, batch: list[PreparedImage], times: StageTimes | None = None, pad_to: int | None = None) -> _Launched:
        """Queue the models' work for a batch (asynchronous on a GPU); ``finish`` collects it.

        ``pad_to``: pad the vision batch to this size (static shapes for a compiled vision tower).
        """
        import torch

        launched = _Launched(batch)
        if not batch:
            return launched
        if not self.uses_fast_path:
            images = [p.image for p in batch]
            with _stage(times, "vision"):
                launched.detections = self.label_images(images, [(p.width, p.height) for p in batch])
            return launched
        detector = self.detector
        with _stage(times, "text"):
            text = detector.encode_text(self.ontology.queries)
        with _stage(times, "preprocess"):
            if batch[0].owl is not None:
                pixel_values = torch.stack([p.owl for p in batch])
            else:
                with torch.inference_mode():
                    pixel_values = torch.stack([detector.pixel_values(p.pixels, (p.width, p.height)) for p in batch])
            if pad_to is not None and len(batch) < pad_to:
                pad = pixel_values[-1:].expand(pad_to - len(batch), -1, -1, -1)
                pixel_values = torch.cat([pixel_values, pad])
        with _stage(times, "vision"):
            features = detector.encode_images(pixel_values)
        with _stage(times, "heads"):
            launched.logits = detector.class_logits(features, text)
            launched.pred_boxes = features.pred_boxes
        if self.mode == "segment":
            segmenter = self.segmenter
            with _stage(times, "preprocess"):
                if batch[0].sam is not None:
                    sam_values = torch.stack([p.sam for p in batch])
                else:
                    with torch.inference_mode():
                        sam_values = torch.stack([segmenter.pixel_values(p.pixels) for p in batch])
            with _stage(times, "sam2_encoder"):
                launched.embeddings = segmenter.embed_pixels(sam_values, [(p.height, p.width) for p in batch])
        return launched

    def finish(self, launched: _Launched, times: StageTimes | None = None, mask_pool=None) -> list:
        """Detections for a launched batch, in batch order. In segment mode each entry is a
        ``concurrent.futures.Future`` when ``mask_pool`` (an executor) is given: mask upsampling and
        RLE encoding run there while the model goes on."""
        batch = launched.batch
        if not batch:
            return []
        if launched.detections is not None:
            return launched.detections
        n = len(batch)
        with _stage(times, "heads"):
            logits = launched.logits[:n].float().cpu().numpy()
            pred_boxes = launched.pred_boxes[:n].float().cpu().numpy()
            dets = [postprocess(logits[i], pred_boxes[i], p.width, p.height, self.ontology, self.config)
                    for i, p in enumerate(batch)]
        if self.mode != "segment":
            return dets
        segmenter = self.segmenter
        out = []
        for p, d, embedding in zip(batch, dets, launched.embeddings):
            with _stage(times, "sam2_decoder"):
                logits = segmenter.predict_logits(embedding, d.xyxy)
            task = partial(_attach_masks, d, logits, (p.height, p.width), segmenter.encode_masks, times)
            out.append(mask_pool.submit(task) if mask_pool is not None else task())
        return out


def _attach_masks(dets: Detections, logits, original_size, encode, times) -> Detections:
    with _stage(times, "masks"):
        rles = encode(logits, original_size)
    return Detections(dets.xyxy, dets.scores, dets.class_ids, dets.prompt_ids, list(rles))


def _is_jpeg(path: str | Path) -> bool:
    """JPEG signature (SOI + marker); other formats have no draft decoding."""
    try:
        with open(path, "rb") as fp:
            return fp.read(3) == b"\xff\xd8\xff"
    except OSError:
        return False  # load_image reports the problem
