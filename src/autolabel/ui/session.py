"""The UI's engine side: configuration, shared model handles, the per-image feature cache and the
Test tab's query. No Gradio import: everything here is unit-tested directly.

Caching (the Test tab's promise that moving the threshold or editing prompts is near-instant):
an uploaded image is decoded once and run through OWLv2's vision backbone once
(``Owlv2Detector.preprocess`` + ``encode_images`` -> ``ImageFeatures``); SAM2's image encoder runs
once too (``Sam2Segmenter.embed``). Both are kept in a small LRU keyed by the file's SHA-256. A
change of prompts, threshold or mode then costs only ``encode_text`` (LRU-cached itself),
``class_logits``, ``pipeline.postprocess`` and, in segment mode, ``Sam2Segmenter.predict``.
``SharedDetector.backbone_calls`` / ``SharedSegmenter.embed_calls`` count the expensive passes, so
tests (and the timing line in the UI) can prove it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from autolabel.detections import Detections
from autolabel.errors import AutolabelError, ConfigError
from autolabel.ontology import Ontology

log = logging.getLogger(__name__)

MODES = ("detect", "segment")


@dataclass(frozen=True)
class UiConfig:
    """Everything the UI needs to know at start-up (from ``Settings`` and ``autolabel ui`` flags).

    runs_dir: the runs root; every batch is a run folder directly under it (the CLI's ``--out``
    folders placed there are listed too). work_dir: a private temporary folder for Gradio's uploads
    and our downloads; nothing is written into the source checkout. allow_folders: server folders
    the Batch tab may read (``--allow-folder``); empty means uploads only.
    """

    model: str
    sam_model: str | None
    runs_dir: Path
    work_dir: Path
    device: str = "auto"
    dtype: str = "auto"
    threshold: float = 0.1
    nms_iou: float = 0.5
    batch_size: int = 4
    max_image_pixels: int = 178_956_970
    allow_folders: tuple[Path, ...] = ()
    display_side: int = 1024
    feature_cache_size: int = 4


# -- prompts ----------------------------------------------------------------------------------------


def parse_prompts(text: str | None) -> Ontology:
    """The prompt box -> an Ontology. One class per line, the CLI's ``--prompt`` syntax:
    ``person`` or ``car=car,automobile,van``. Blank lines and lines starting with ``#`` are ignored.
    """
    lines = [line.strip() for line in (text or "").splitlines()]
    specs = [line for line in lines if line and not line.startswith("#")]
    if not specs:
        raise ConfigError("enter at least one class, one per line: e.g. 'person' or 'car=car,automobile,van'")
    return Ontology.from_prompts(specs)


def ontology_to_text(ontology: Ontology) -> str:
    """The inverse of ``parse_prompts`` (per-class thresholds are not shown)."""
    lines = []
    for cls in ontology.classes:
        lines.append(cls.name if cls.prompts == (cls.name,) else f"{cls.name}={','.join(cls.prompts)}")
    return "\n".join(lines)


# -- model handles ----------------------------------------------------------------------------------


class _Shared:
    """A model object shared by the tabs and the batch thread.

    The calls that run the network (listed by subclasses) take one lock: the text LRU is not
    thread-safe, and two CPU forward passes at once are slower than one after the other. Everything
    else (``preprocess``, ``pixel_values``, ``image_size``, ``device``, ...) is forwarded as is, so
    the labelling loop sees the model's full API (its fast path included) and decode workers are
    never serialised behind the model.
    """

    def __init__(self, inner):
        self.inner = inner
        self.lock = threading.RLock()

    def __getattr__(self, name):
        if name == "inner":  # not set yet (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


class SharedDetector(_Shared):
    """An ``Owlv2Detector`` (see ``_Shared``). ``backbone_calls`` counts vision-backbone passes
    (``encode_images`` calls) and ``backbone_images`` the images they covered."""

    def __init__(self, inner):
        super().__init__(inner)
        self.backbone_calls = 0
        self.backbone_images = 0

    def encode_text(self, queries):
        with self.lock:
            return self.inner.encode_text(queries)

    def encode_images(self, pixel_values):
        with self.lock:
            self.backbone_calls += 1
            self.backbone_images += int(pixel_values.shape[0])
            return self.inner.encode_images(pixel_values)

    def class_logits(self, features, text):
        with self.lock:
            return self.inner.class_logits(features, text)


class SharedSegmenter(_Shared):
    """A ``Sam2Segmenter`` (see ``_Shared``); ``embed_calls`` counts image-encoder passes."""

    def __init__(self, inner):
        super().__init__(inner)
        self.embed_calls = 0

    def embed(self, images, *args, **kwargs):
        with self.lock:
            self.embed_calls += 1
            return self.inner.embed(images, *args, **kwargs)

    def embed_pixels(self, *args, **kwargs):
        with self.lock:
            self.embed_calls += 1
            return self.inner.embed_pixels(*args, **kwargs)

    def predict(self, embedding, boxes_xyxy):
        with self.lock:
            return self.inner.predict(embedding, boxes_xyxy)

    def predict_logits(self, *args, **kwargs):
        with self.lock:
            return self.inner.predict_logits(*args, **kwargs)

    def segment(self, images, boxes):
        images = list(images)
        embeddings = self.embed(images)
        return [self.predict(e, b) for e, b in zip(embeddings, boxes)]


class ModelHandles:
    """OWLv2 and SAM2, each loaded on first use (thread-safe), with a status line for the UI.

    ``loaders`` replaces the real ``from_pretrained`` calls in tests: ``{"owlv2": fn, "sam2": fn}``
    with ``fn(name, device, dtype) -> model object``.
    """

    def __init__(self, model: str, sam_model: str | None, device: str = "auto", dtype: str = "auto",
                 loaders: dict | None = None):
        self.model = model
        self.sam_model = sam_model
        self.device = device
        self.dtype = dtype
        self._loaders = loaders or {}
        self._lock = threading.Lock()
        self._detector: SharedDetector | None = None
        self._segmenter: SharedSegmenter | None = None
        self._state = {"owlv2": "not loaded", "sam2": "not loaded"}

    # -- status -------------------------------------------------------------------------------------

    def status(self) -> str:
        """One Markdown line: what is loaded, loading or failed."""
        parts = [f"**OWLv2** `{self.model}`: {self._state['owlv2']}"]
        if self.sam_model:
            parts.append(f"**SAM2** `{self.sam_model}`: {self._state['sam2']}")
        return " · ".join(parts)

    def is_loaded(self, which: str) -> bool:
        return (self._detector if which == "owlv2" else self._segmenter) is not None

    # -- loading ------------------------------------------------------------------------------------

    def _device_dtype(self):
        from autolabel.settings import resolve_device, resolve_dtype

        device = resolve_device(self.device)
        return device, resolve_dtype(self.dtype, device)

    def _load(self, which: str, name: str, default_loader):
        self._state[which] = "loading…"
        started = time.perf_counter()
        try:
            device, dtype = self._device_dtype()
            loader = self._loaders.get(which, default_loader)
            obj = loader(name, device, dtype)
        except AutolabelError as exc:
            self._state[which] = f"failed to load: {exc}"
            raise
        except Exception as exc:  # e.g. a transformers error on a broken config: still one line
            log.exception("loading %s from %s failed", which, name)
            self._state[which] = f"failed to load: {type(exc).__name__}: {exc}"
            from autolabel.errors import ModelLoadError

            raise ModelLoadError(f"cannot load {which} from {name!r}: {type(exc).__name__}: {exc}") from exc
        self._state[which] = f"ready on {device} ({time.perf_counter() - started:.1f} s to load)"
        return obj

    @property
    def detector(self) -> SharedDetector:
        with self._lock:
            if self._detector is None:
                from autolabel.models.owlv2 import Owlv2Detector

                self._detector = SharedDetector(self._load("owlv2", self.model, Owlv2Detector.from_pretrained))
            return self._detector

    @property
    def segmenter(self) -> SharedSegmenter:
        with self._lock:
            if self._segmenter is None:
                if not self.sam_model:
                    raise ConfigError("segment mode needs a SAM2 model: start the UI with --sam-model")

                def default(name, device, dtype):
                    from autolabel.models.sam2 import Sam2Segmenter

                    return Sam2Segmenter.from_pretrained(name, device, dtype)

                self._segmenter = SharedSegmenter(self._load("sam2", self.sam_model, default))
            return self._segmenter


# -- feature cache ----------------------------------------------------------------------------------


@dataclass
class CachedImage:
    """One decoded image and its prompt-independent model outputs.

    image: RGB, EXIF-oriented, full resolution (``width`` x ``height``). display / display_scale:
    a copy with the long side at most ``UiConfig.display_side`` (display pixels = original *
    display_scale). features: OWLv2 ``ImageFeatures`` of this one image; sam: its SAM2
    ``ImageEmbedding``. Both None until first needed.
    """

    key: str
    name: str
    image: object
    width: int
    height: int
    display: object
    display_scale: float
    features: object = None
    sam: object = None


class FeatureCache:
    """A small LRU of ``CachedImage`` keyed by the file's SHA-256 (thread-safe)."""

    def __init__(self, capacity: int = 4):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[str, CachedImage] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> CachedImage | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, item: CachedImage) -> CachedImage:
        with self._lock:
            self._items[item.key] = item
            self._items.move_to_end(item.key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return item


def display_copy(image, side: int = 1024, min_side: int = 512):
    """The copy of an image the UI draws on: long side at most ``side``; small images are enlarged
    to ``min_side`` so that labels stay legible. Returns ``(image, scale)``, scale = display / input."""
    from PIL import Image

    long_side = max(image.size)
    if long_side >= min_side:
        return shrink(image, side)
    scale = min_side / long_side
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.NEAREST), scale


def shrink(image, long_side: int):
    """A copy of a PIL image with its long side at most ``long_side`` (and the scale used)."""
    from PIL import Image

    scale = min(1.0, long_side / max(image.size))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0), scale


# -- the Test tab's query ---------------------------------------------------------------------------


@dataclass
class QueryResult:
    """Detections of one image (original pixels) plus how long each stage took, in seconds."""

    cached: CachedImage
    ontology: Ontology
    detections: Detections
    mode: str
    backbone_seconds: float | None  # None: the vision backbone did not run (features were cached)
    sam_embed_seconds: float | None
    query_seconds: float
    backbone_calls: int
    threshold: float = 0.0

    def timing_text(self) -> str:
        parts = [f"threshold {self.threshold:.2f}, {self.mode}, classes {', '.join(self.ontology.names)}"]
        if self.backbone_seconds is None:
            parts.append(f"re-queried cached image features in {self.query_seconds * 1000:.0f} ms (no backbone pass)")
        else:
            parts.append(f"vision backbone {self.backbone_seconds * 1000:.0f} ms (new image)")
            parts.append(f"query {self.query_seconds * 1000:.0f} ms")
        if self.sam_embed_seconds is not None:
            parts.append(f"SAM2 image embedding {self.sam_embed_seconds * 1000:.0f} ms")
        parts.append(f"{len(self.detections)} detections")
        parts.append(f"backbone passes so far: {self.backbone_calls}")
        return " · ".join(parts)


class PromptTester:
    """The Test tab: one image, any prompts, thresholds and modes, backbone once per image."""

    def __init__(self, config: UiConfig, models: ModelHandles, cache: FeatureCache | None = None):
        self.config = config
        self.models = models
        self.cache = cache or FeatureCache(config.feature_cache_size)
        self._encode_lock = threading.Lock()
        self._load_lock = threading.Lock()

    def load(self, path: str | Path) -> CachedImage:
        """Decode (or fetch from the cache) the image at ``path``. Raises ``ImageLoadError``."""
        from autolabel.images import file_sha256, load_image

        key = file_sha256(path)
        with self._load_lock:  # one decode per new image, however many events ask at once
            cached = self.cache.get(key)
            if cached is not None:
                return cached
            loaded = load_image(path, max_pixels=self.config.max_image_pixels)
            display, scale = display_copy(loaded.image, self.config.display_side)
            return self.cache.put(CachedImage(key, Path(path).name, loaded.image, loaded.width, loaded.height,
                                              display, scale))

    def query(self, path: str | Path, prompts: str, threshold: float, mode: str = "detect") -> QueryResult:
        """Detections (and masks in segment mode) for the image at ``path``."""
        from autolabel.pipeline import DetectConfig, postprocess

        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        ontology = parse_prompts(prompts)
        config = DetectConfig(threshold=float(threshold), nms_iou=self.config.nms_iou)
        cached = self.load(path)
        detector = self.models.detector
        if mode == "segment":
            segmenter = self.models.segmenter  # load (or fail) before spending time on the backbone

        backbone_seconds = sam_seconds = None
        # One lock: two events for the same new image (e.g. a prompt box losing focus as Detect is
        # clicked) must not both run the backbone; the second waits and finds the features cached.
        with self._encode_lock:
            if cached.features is None:
                started = time.perf_counter()
                # Exactly the batch path's preprocessing (pipeline.detect_batch), so that what is
                # dialled in here gives the same detections in a batch run.
                cached.features = detector.encode_images(detector.preprocess([cached.image]))
                backbone_seconds = time.perf_counter() - started
            if mode == "segment" and cached.sam is None:
                started = time.perf_counter()
                cached.sam = segmenter.embed([cached.image])[0]
                sam_seconds = time.perf_counter() - started

        started = time.perf_counter()
        text = detector.encode_text(ontology.queries)
        logits = detector.class_logits(cached.features, text).cpu().numpy()[0]
        pred_boxes = cached.features.pred_boxes.cpu().numpy()[0]
        dets = postprocess(logits, pred_boxes, cached.width, cached.height, ontology, config)
        if mode == "segment":
            masks = segmenter.predict(cached.sam, dets.xyxy)
            dets = Detections(dets.xyxy, dets.scores, dets.class_ids, dets.prompt_ids, masks)
        query_seconds = time.perf_counter() - started
        return QueryResult(cached, ontology, dets, mode, backbone_seconds, sam_seconds, query_seconds,
                           detector.backbone_calls, float(threshold))


def detection_rows(result: QueryResult) -> list[list]:
    """Rows of the Test tab's table: index, class, prompt, score, box (original pixels)."""
    d = result.detections
    queries = result.ontology.queries
    names = result.ontology.names
    rows = []
    for i in range(len(d)):
        x0, y0, x1, y1 = (round(float(v), 1) for v in d.xyxy[i])
        rows.append([i + 1, names[int(d.class_ids[i])], queries[int(d.prompt_ids[i])],
                     round(float(d.scores[i]), 3), x0, y0, x1, y1])
    return rows


DETECTION_HEADERS = ["#", "class", "prompt", "score", "x0", "y0", "x1", "y1"]

