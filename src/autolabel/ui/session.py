"""The UI's engine side: configuration, shared model handles, the per-image feature cache and the
Test tab's query. No Gradio import: everything here is unit-tested directly.

Caching (the Test tab's promise that moving the threshold or editing prompts is near-instant):
an uploaded image is decoded once and run through the vision backbones once, by the labelling
engine's own steps (``Labeler.prepare`` + ``Labeler.encode``, as a batch runs them). The result is
kept in a small LRU keyed by the file's SHA-256. A change of prompts, threshold or mode then costs
only the text tower (LRU-cached itself), the class head, post-processing and, in segment mode,
the SAM2 decoder (``Labeler.label``).
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
from autolabel.images import DEFAULT_MAX_PIXELS
from autolabel.pipeline import DEFAULT_BATCH_SIZE, MODES, DetectConfig

log = logging.getLogger(__name__)


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
    threshold: float = DetectConfig.threshold
    nms_iou: float = DetectConfig.nms_iou
    batch_size: int = DEFAULT_BATCH_SIZE
    max_image_pixels: int = DEFAULT_MAX_PIXELS
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
    """A detector (see ``_Shared``). ``backbone_calls`` counts vision-backbone passes
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

    def score(self, features, text):
        with self.lock:
            return self.inner.score(features, text)

    def detect(self, features, text, sizes, ontology, config):
        return self.postprocess(self.score(features, text), sizes, ontology, config)


class SharedSegmenter(_Shared):
    """A segmenter (see ``_Shared``); ``embed_calls`` counts image-encoder passes."""

    def __init__(self, inner):
        super().__init__(inner)
        self.embed_calls = 0

    def embed(self, pixel_values, sizes):
        with self.lock:
            self.embed_calls += 1
            return self.inner.embed(pixel_values, sizes)

    def predict_logits(self, embedding, boxes_xyxy):
        with self.lock:
            return self.inner.predict_logits(embedding, boxes_xyxy)

    def predict(self, embedding, boxes_xyxy):
        return self.encode_masks(self.predict_logits(embedding, boxes_xyxy), embedding.size)


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

    prepared: the engine's ``PreparedImage`` (decoded as a batch decodes it, pixels kept);
    decode_side: the decode it was made with (``Labeler.decode_side``); size: the original
    oriented size. display / display_scale: a copy to draw on, long side at most
    ``UiConfig.display_side`` (display pixels = original * display_scale). encoded: the engine's
    ``Encoded`` for this one image (OWLv2 features, SAM2 embedding once needed).
    """

    key: str
    name: str
    prepared: object
    decode_side: int | None
    size: tuple[int, int]
    display: object
    display_scale: float
    encoded: object = None


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
    """The Test tab: one image, any prompts, thresholds and modes, backbone once per image.

    It runs the labelling engine's own steps (``Labeler.prepare`` -> ``encode`` -> ``label``) with
    the shared models, so an image, prompts and threshold give exactly the detections a batch or
    ``autolabel label`` gives (same decode, same model inputs, same post-processing).
    """

    def __init__(self, config: UiConfig, models: ModelHandles, cache: FeatureCache | None = None):
        self.config = config
        self.models = models
        self.cache = cache or FeatureCache(config.feature_cache_size)
        self._encode_lock = threading.Lock()
        self._load_lock = threading.Lock()

    def labeler(self, ontology: Ontology, threshold: float, mode: str = "detect"):
        """The engine as a batch with these settings would run it, on the shared models."""
        from autolabel.pipeline import DetectConfig, Labeler

        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        return Labeler(ontology, detector=self.models.detector,
                       segmenter=self.models.segmenter if mode == "segment" else None, mode=mode,
                       config=DetectConfig(threshold=float(threshold), nms_iou=self.config.nms_iou))

    def load(self, path: str | Path, labeler=None) -> CachedImage:
        """Decode (or fetch from the cache) the image at ``path`` as ``labeler`` (default: detect
        mode) decodes it in a batch. Raises ``ImageLoadError``."""
        from PIL import Image

        from autolabel.images import file_sha256
        from autolabel.pipeline import Encoded

        labeler = labeler or self.labeler(Ontology.from_prompts(["object"]), 0.0)
        key = file_sha256(path)
        with self._load_lock:  # one decode per new image, however many events ask at once
            cached = self.cache.get(key)
            if cached is not None and labeler.decode_side(cached.size) == cached.decode_side:
                return cached
            prepared = labeler.prepare(path, self.config.max_image_pixels, keep_pixels=True)
            pixels = Image.fromarray(prepared.pixels.numpy())
            display, scale = display_copy(pixels, self.config.display_side)
            return self.cache.put(CachedImage(
                key, Path(path).name, prepared, labeler.decode_side(prepared.size), prepared.size, display,
                scale * pixels.width / prepared.size.width, Encoded([prepared])))

    def query(self, path: str | Path, prompts: str, threshold: float, mode: str = "detect") -> QueryResult:
        """Detections (and masks in segment mode) for the image at ``path``."""
        from autolabel.pipeline import StageTimes

        ontology = parse_prompts(prompts)
        labeler = self.labeler(ontology, threshold, mode)  # loads (or fails) before any backbone time
        cached = self.load(path, labeler)
        times = StageTimes()
        # One lock: two events for the same new image (e.g. a prompt box losing focus as Detect is
        # clicked) must not both run the backbone; the second waits and finds the features cached.
        with self._encode_lock:
            labeler.encode(cached.encoded.batch, times=times, encoded=cached.encoded)
        spent = times.as_dict()
        started = time.perf_counter()
        (dets,) = labeler.label(cached.encoded)
        query_seconds = time.perf_counter() - started
        return QueryResult(cached, ontology, dets, mode, spent.get("vision"), spent.get("sam2_encoder"),
                           query_seconds, self.models.detector.backbone_calls, float(threshold))


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

