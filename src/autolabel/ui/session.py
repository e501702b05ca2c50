"""The UI's engine side (no Gradio import): configuration, shared model handles, display copies and
the Test tab's query. The Test tab runs the engine's own steps as a batch does: ``Labeler.prepare``
and ``encode`` once per image (keyed by the file's SHA-256), ``Labeler.label`` for every change of
prompts, threshold or mode. Its cache keeps the encodings, model inputs not encoded yet and a display
copy, never decoded pixels; an image whose decode would exceed ``DECODE_BUDGET`` is refused first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from autolabel.detections import Detections
from autolabel.errors import AutolabelError, ConfigError, ImageLoadError, ModelLoadError
from autolabel.geometry import Size
from autolabel.images import DEFAULT_MAX_PIXELS
from autolabel.ontology import Ontology
from autolabel.pipeline import DEFAULT_BATCH_SIZE, DetectConfig

log = logging.getLogger(__name__)

# Measured peak of decoding a PNG (Pillow's 4-byte pixels, their RGB conversion, the pixel array and
# its transient copy): 12000 x 9000 (108 MP) takes about 1 GB and fits; PNGs over ~160 MP are refused.
DECODE_BYTES_PER_PIXEL = 10
DECODE_BUDGET = 3 << 29  # 1.5 GiB


@dataclass(frozen=True)
class UiConfig:
    """What the UI needs at start-up (``Settings`` and ``autolabel ui`` flags). ``runs_dir``: every
    batch is a run folder in it; ``work_dir``: a private temporary folder for uploads and downloads;
    ``allow_folders``: server folders the Batch tab may read (empty: uploads only)."""

    model: str
    sam_model: str | None
    runs_dir: Path
    work_dir: Path
    device: str = "auto"
    precision: str = "auto"  # models.precision: auto, fp32, bf16, fp16, int8
    threshold: float = DetectConfig.threshold
    nms_iou: float = DetectConfig.nms_iou
    batch_size: int = DEFAULT_BATCH_SIZE
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    allow_folders: tuple[Path, ...] = ()
    display_side: int = 1024
    feature_cache_size: int = 4
    models_dir: Path | None = None  # checkpoint folders the model picker lists


def parse_prompts(text: str | None) -> Ontology:
    """The prompt box -> an Ontology, one class per line in the CLI's ``--prompt`` syntax (``person``
    or ``car=car,automobile,van``); blank lines and ``#`` comments are ignored."""
    lines = [line.strip() for line in (text or "").splitlines()]
    specs = [line for line in lines if line and not line.startswith("#")]
    if not specs:
        raise ConfigError("enter at least one class, one per line: e.g. 'person' or 'car=car,automobile,van'")
    return Ontology.from_prompts(specs)


# -- the model picker -------------------------------------------------------------------------------

#: How deep under ``--models-dir`` checkpoint folders are looked for (``owlv2-ft``, ``google/owlv2-base``).
MODELS_DIR_DEPTH = 2


@dataclass(frozen=True)
class ModelChoice:
    """One detector of the picker. ``key`` is what the browser sees and sends back: a hub id, a
    configured folder's name or a folder's path inside the models directory, never a server path;
    ``checkpoint`` is what the registry loads; ``family`` the family's name (None: not known yet)."""

    key: str
    checkpoint: str
    family: str | None

    @property
    def label(self) -> str:
        return f"{self.family}: {self.key}" if self.family else self.key


class ModelCatalog:
    """The detectors the UI offers: the configured checkpoint, each detector family's default and the
    checkpoint folders under ``models_dir`` (a ``config.json`` whose ``model_type`` a detector family
    loads). The folder is read anew on each call, so a checkpoint copied in shows on the next page
    load; a folder or config that resolves outside it (a symlink) is never listed."""

    def __init__(self, configured: str, models_dir: str | Path | None = None):
        self.configured = str(configured)
        self.models_dir = Path(models_dir).resolve() if models_dir else None
        self._configured_choice: ModelChoice | None = None
        self._escapes_logged: set[Path] = set()  # the folder is read on every call: say it once

    def choices(self) -> list[ModelChoice]:
        """Configured first, then the families' defaults, then the models directory (path order);
        a checkpoint or key listed twice keeps its first entry."""
        from autolabel.models.registry import families

        if self._configured_choice is None:  # the family of a hub id may take a hub request: once
            self._configured_choice = ModelChoice(_shown(self.configured), self.configured,
                                                  _detector_family(self.configured))
        found = [self._configured_choice]
        found += [ModelChoice(f.default_checkpoint, f.default_checkpoint, f.name) for f in families("detector")]
        found += self._folder_choices()
        unique: list[ModelChoice] = []
        for choice in found:
            if all(choice.key != u.key and choice.checkpoint != u.checkpoint for u in unique):
                unique.append(choice)
        return unique

    def checkpoint(self, key: str) -> str:
        """The checkpoint of the listed detector ``key``; anything else is refused."""
        for choice in self.choices():
            if key in (choice.key, choice.checkpoint):
                return choice.checkpoint
        raise ConfigError(f"unknown detector {key!r}: pick one of the listed models (a reload lists them anew)")

    def key(self, checkpoint: str) -> str:
        """The picker key of ``checkpoint`` (its shown name when it is no longer listed)."""
        return next((c.key for c in self.choices() if c.checkpoint == checkpoint), _shown(checkpoint))

    def _folder_choices(self) -> list[ModelChoice]:
        from autolabel.ui.security import is_within

        root = self.models_dir
        if root is None or not root.is_dir():
            return []
        configs = sorted(p for depth in range(1, MODELS_DIR_DEPTH + 1)
                         for p in root.glob("/".join(["*"] * depth) + "/config.json"))
        found = []
        for config in configs:
            folder = config.parent
            if not (is_within(folder, root) and is_within(config, root)):
                if folder not in self._escapes_logged:
                    self._escapes_logged.add(folder)
                    log.warning("not listing %s: it leads outside the models directory", folder.relative_to(root))
                continue
            family = _detector_family(str(folder.resolve()))
            if family is not None:
                found.append(ModelChoice(folder.relative_to(root).as_posix(), str(folder.resolve()), family))
        return found


def _detector_family(checkpoint: str) -> str | None:
    """The detector family that loads ``checkpoint``; None when unreadable or not a detector."""
    from autolabel.models.registry import checkpoint_model_type, families

    for family in families("detector"):
        if checkpoint == family.default_checkpoint:
            return family.name
    try:
        model_type = checkpoint_model_type(checkpoint)
    except AutolabelError:
        return None
    return next((f.name for f in families("detector") if model_type in f.model_types), None)


# -- model handles ----------------------------------------------------------------------------------


class _Shared:
    """A model shared by the tabs and the batch thread. Only its forward passes take the lock (the
    text LRU is not thread-safe, and two passes at once are slower than one after the other):
    decoding and post-processing never wait for another user's model work."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.device, self.preprocessor = inner.name, inner.device, inner.preprocessor
        self.lock = threading.Lock()


#: What a family offers beyond ``models.base.Detector`` (the engine looks for them by name):
#: facts copied once, and calls that run the model and so take the lock.
DETECTOR_FACTS = ("family", "image_size", "supports_negatives", "ranks_candidates")
DETECTOR_CALLS = ("embed_exemplars", "with_exemplars", "candidates", "score_candidates")


class SharedDetector(_Shared):
    """A shared ``models.base.Detector``; ``backbone_calls`` counts vision-backbone passes. The
    optional ``DETECTOR_FACTS`` and ``DETECTOR_CALLS`` exist only where the family has them: the
    engine tells what a family supports by their presence."""

    backbone_calls = 0

    def __init__(self, inner):
        super().__init__(inner)
        self.yields_masks = getattr(inner, "yields_masks", False)  # families that predate it give none
        self.compiled = inner.compiled
        for name in DETECTOR_FACTS:
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))
        for name in DETECTOR_CALLS:
            if hasattr(inner, name):
                setattr(self, name, self._locked(getattr(inner, name)))

    def _locked(self, call):
        def locked(*args, **kwargs):
            with self.lock:
                return call(*args, **kwargs)

        locked.__name__ = call.__name__
        return locked

    def compile_vision(self, **options) -> None:
        with self.lock:
            self.inner.compile_vision(**options)
        self.compiled = self.inner.compiled

    def encode_text(self, queries):
        with self.lock:
            return self.inner.encode_text(queries)

    def encode_images(self, pixel_values):
        with self.lock:
            self.backbone_calls += 1
            return self.inner.encode_images(pixel_values)

    def score(self, features, text, **options):
        with self.lock:
            return self.inner.score(features, text, **options)

    def postprocess(self, scores, sizes, ontology, config):
        return self.inner.postprocess(scores, sizes, ontology, config)

    def detect(self, features, text, sizes, ontology, config):
        return self.postprocess(self.score(features, text), sizes, ontology, config)


class SharedSegmenter(_Shared):
    """A shared ``models.base.Segmenter``; ``embed_calls`` counts image-encoder passes."""

    embed_calls = 0

    def embed(self, pixel_values, sizes):
        with self.lock:
            self.embed_calls += 1
            return self.inner.embed(pixel_values, sizes)

    def predict_logits(self, embedding, boxes_xyxy, points=None):
        with self.lock:
            return self.inner.predict_logits(embedding, boxes_xyxy, points)

    def encode_masks(self, logits, size):
        return self.inner.encode_masks(logits, size)

    def predict(self, embedding, boxes_xyxy, points=None):
        return self.encode_masks(self.predict_logits(embedding, boxes_xyxy, points), embedding.size)



#: Detectors kept loaded at once: the Test tab's side-by-side pair.
DETECTOR_CACHE_SIZE = 2


class ModelHandles:
    """The detectors, the segmenter (any family, ``models.registry``) and the Video tab's video
    model, each loaded on first use (thread-safe), with a status line for the UI. ``model`` is the
    selected detector (``select``): what a Labeler gets unless a call names another listed one
    (``catalog``); the last ``cache_size`` detectors used stay loaded. ``loaders`` replaces the
    registry's loaders in tests: ``{"detector": fn, "segmenter": fn, "video": fn}``,
    ``fn(name, device, precision) -> model``."""

    def __init__(self, model: str, sam_model: str | None, device: str = "auto", precision: str = "auto",
                 loaders: dict | None = None, models_dir: str | Path | None = None,
                 cache_size: int = DETECTOR_CACHE_SIZE):
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.model = str(model)
        self.sam_model = sam_model
        self.device = device
        self.precision = precision
        self.catalog = ModelCatalog(model, models_dir)
        self.cache_size = cache_size
        self._loaders = loaders or {}
        self._lock = threading.Lock()
        self._detectors: OrderedDict[str, SharedDetector] = OrderedDict()  # checkpoint -> model, LRU
        self._segmenter: SharedSegmenter | None = None
        self._video = None  # models.sam2_video.Sam2VideoPropagator: each clip takes a fresh() session of it
        self._state: dict[tuple[str, str | None], str] = {}  # (kind, checkpoint) -> status

    def status(self, video: bool = False) -> str:
        """One Markdown line: what is loaded, loading or failed (checkpoint names, not server paths).
        The video model shows once the Video tab asked for it, or with ``video``."""
        parts = [f"**Detector** `{_shown(self.model)}`: {self._state.get(('detector', self.model), 'not loaded')}"]
        if self.sam_model:
            state = self._state.get(("segmenter", self.sam_model), "not loaded")
            parts.append(f"**Segmenter** `{_shown(self.sam_model)}`: {state}")
            video_state = self._state.get(("video", self.sam_model))
            if video_state or video:
                parts.append(f"**Video model** `{_shown(self.sam_model)}`: {video_state or 'not loaded'}")
        return " · ".join(parts)

    def select(self, key: str) -> str:
        """Make the listed detector ``key`` the selected one (loaded on first use); its checkpoint."""
        self.model = self.catalog.checkpoint(key)
        return self.model

    def checkpoint(self, key: str | None = None) -> str:
        """The checkpoint of the listed detector ``key``; the selected one for None or ''."""
        return self.catalog.checkpoint(key) if key else self.model

    def is_loaded(self, which: str, key: str | None = None) -> bool:
        """Whether the segmenter, the video model, or the detector ``key`` (default: the selected
        one) is loaded."""
        if which == "detector":
            return self.checkpoint(key) in self._detectors
        if which == "video":
            return self._video is not None
        return self._segmenter is not None

    def makes_masks(self, key: str | None = None) -> bool:
        """Whether the detector makes masks itself (SAM 3): segment mode then needs no segmenter."""
        return self.detector_for(key).yields_masks

    def _load(self, which: str, name: str, registry_loader):
        from autolabel.settings import resolve_device

        self._state[(which, name)] = "loading…"
        started = time.perf_counter()
        try:
            device = resolve_device(self.device)
            loader = self._loaders.get(which, registry_loader)
            obj = loader(name, device, self.precision)
        except AutolabelError as exc:
            self._state[(which, name)] = f"failed to load: {exc}"
            raise
        except Exception as exc:  # e.g. a transformers error on a broken config: still one line
            log.exception("loading %s from %s failed", which, name)
            self._state[(which, name)] = f"failed to load: {type(exc).__name__}: {exc}"
            raise ModelLoadError(f"cannot load {which} from {name!r}: {type(exc).__name__}: {exc}") from exc
        self._state[(which, name)] = f"ready on {device} ({time.perf_counter() - started:.1f} s to load)"
        return obj

    def detector_for(self, key: str | None = None) -> SharedDetector:
        """The listed detector ``key`` (default: the selected one), loaded now if it is not."""
        checkpoint = self.checkpoint(key)
        with self._lock:
            shared = self._detectors.get(checkpoint)
            if shared is None:
                from autolabel.models.registry import load_detector

                shared = SharedDetector(self._load("detector", checkpoint, load_detector))
                self._detectors[checkpoint] = shared
                while len(self._detectors) > self.cache_size:  # a running batch keeps its own reference
                    evicted, _ = self._detectors.popitem(last=False)
                    self._state.pop(("detector", evicted), None)
            self._detectors.move_to_end(checkpoint)
            return shared

    @property
    def detector(self) -> SharedDetector:
        return self.detector_for(None)

    @property
    def segmenter(self) -> SharedSegmenter:
        with self._lock:
            if self._segmenter is None:
                if not self.sam_model:
                    raise ConfigError("segment mode needs a segmentation model: start the UI with --sam-model")
                from autolabel.models.registry import load_segmenter

                self._segmenter = SharedSegmenter(self._load("segmenter", self.sam_model, load_segmenter))
            return self._segmenter

    @property
    def video_model(self):
        """The SAM2-video model of the segmentation checkpoint (``models.sam2_video``), shared by every
        clip: one clip at a time runs on it, each in a session of its own (``fresh()``)."""
        with self._lock:
            if self._video is None:
                if not self.sam_model:
                    raise ConfigError("tracking needs a SAM2 model: start the UI with --sam-model")
                from autolabel.models.sam2_video import Sam2VideoPropagator

                self._video = self._load("video", self.sam_model, Sam2VideoPropagator.from_pretrained)
            return self._video


def make_labeler(config: UiConfig, models: ModelHandles, ontology: Ontology, mode: str, threshold: float,
                 detect: dict | None = None, model: str | None = None, tiles=None):
    """A ``Labeler`` on the UI's shared models, loaded now (a load failure shows at once): the listed
    detector ``model``, by default the selected one. ``detect``: a stored ``DetectConfig`` dict
    (resuming a run); otherwise the threshold and the configured NMS IoU. ``tiles``: the engine's
    ``tiles`` (None, ``"off"``, ``"auto"`` or a ``Tiling``)."""
    from autolabel.pipeline import Labeler

    detect_config = (DetectConfig(**detect) if detect
                     else DetectConfig(threshold=float(threshold), nms_iou=config.nms_iou))
    detector = models.detector_for(model)
    segment_with_model = mode == "segment" and not detector.yields_masks
    return Labeler(ontology, detector=detector, segmenter=models.segmenter if segment_with_model else None,
                   mode=mode, config=detect_config, precision=models.precision, tiles=tiles)


def mask_labeler(config: UiConfig, models: ModelHandles, run_config: dict, ontology: Ontology):
    """A segment-mode ``Labeler`` on the UI's shared models that makes the masks of boxes a person
    draws or moves in review (``Labeler.masks_for_boxes``), with the run's tiling, so an image is
    decoded as the run decoded it."""
    from autolabel.tiling import tiling_from_dict

    return make_labeler(config, models, ontology, "segment", config.threshold,
                        tiles=tiling_from_dict(run_config.get("tiles")))


def _shown(checkpoint: str) -> str:
    """A hub id as is; a local checkpoint by its folder name (the server's folders stay private)."""
    return Path(checkpoint).name if Path(checkpoint).exists() else checkpoint


def display_copy(image, side: int = 1024, min_side: int = 512):
    """The copy of a PIL image the UI draws on: long side at most ``side``; small images are enlarged
    to ``min_side`` so that labels stay legible. Returns ``(image, scale)``, scale = display / input."""
    from PIL import Image

    long_side = max(image.size)
    scale = min_side / long_side if long_side < min_side else min(1.0, side / long_side)
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if scale > 1.0:
        return image.resize(size, Image.Resampling.NEAREST), scale
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0), scale


def display_image(path: str | Path, side: int, max_pixels: int, min_side: int = 512):
    """``display_copy`` of an image file from a reduced decode (JPEG draft); ``(image, scale)`` with
    scale = display / original pixels. Raises ``ImageLoadError``."""
    from autolabel.images import load_image

    loaded = load_image(path, max_pixels=max_pixels, max_side=side)
    image, enlarge = display_copy(loaded.image, side, min_side)
    return image, loaded.scale * enlarge


# -- the Test tab's query ---------------------------------------------------------------------------


@dataclass
class CachedImage:
    """One image of the Test tab for one detector (``key``: the file's SHA-256 and the checkpoint):
    ``encoded``, the engine's ``Encoded`` for it (its one
    ``PreparedImage``, features and embeddings once computed), made with ``decode_side``
    (``Labeler.decode_side``); ``display``, the copy to draw on (display = original * ``display_scale``)."""

    key: str
    size: Size
    decode_side: int | None
    encoded: object
    display: object
    display_scale: float

    def serves(self, labeler) -> bool:
        """Whether ``labeler`` gets the decode a batch would make, and each of its models either its
        output or its input."""
        prepared, encoded = self.encoded.batch[0], self.encoded
        tiles = tuple(labeler.tile_boxes(self.size))
        return (labeler.decode_side(self.size) == self.decode_side
                and (encoded.features is not None and (encoded.tiles or [()])[0] == tiles
                     or prepared.detector_input is not None and prepared.tiles == tiles)
                and (labeler.mode != "segment" or encoded.embeddings is not None
                     or prepared.segmenter_input is not None))


def feature_key(sha256: str, checkpoint: str) -> str:
    """The ``FeatureCache`` key of an image (its file's SHA-256) encoded by the detector ``checkpoint``."""
    return f"{sha256}:{checkpoint}"


class FeatureCache:
    """A small LRU of ``CachedImage`` by ``key`` (thread-safe)."""

    def __init__(self, capacity: int = 4):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[str, CachedImage] = OrderedDict()
        self._lock = threading.Lock()

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
    model: str = ""  # the detector's picker key
    tiles: int = 0  # tiles labelled besides the full image

    def timing_text(self) -> str:
        parts = [f"`{self.model}`"] if self.model else []
        parts += [f"threshold {self.threshold:.2f}, {self.mode}, classes {', '.join(self.ontology.names)}"]
        if self.tiles:
            parts.append(f"{self.tiles} tiles + the full image")
        if self.backbone_seconds is None:
            parts.append(f"re-queried cached image features in {self.query_seconds * 1000:.0f} ms (no backbone pass)")
        else:
            parts += [f"vision backbone {self.backbone_seconds * 1000:.0f} ms (new image)",
                      f"query {self.query_seconds * 1000:.0f} ms"]
        if self.sam_embed_seconds is not None:
            parts.append(f"SAM2 image embedding {self.sam_embed_seconds * 1000:.0f} ms")
        parts += [f"{len(self.detections)} detections", f"backbone passes so far: {self.backbone_calls}"]
        return " · ".join(parts)


class PromptTester:
    """The Test tab: one image, any prompts, thresholds and modes, backbone once per image, through
    the engine's own steps, so it gives exactly the detections of a batch or ``autolabel label``.
    Work on one image is done once however many events ask for it at once; work on another image
    waits for nothing but the model's forward passes. Each detector has its own features of an
    image (``feature_cache_size`` images for each detector that stays loaded)."""

    def __init__(self, config: UiConfig, models: ModelHandles):
        self.config = config
        self.models = models
        self.cache = FeatureCache(config.feature_cache_size * models.cache_size)
        self._guard = threading.Lock()
        self._image_locks: dict[str, list] = {}  # key -> [lock, threads holding or waiting for it]

    @contextmanager
    def _image_lock(self, key: str):
        with self._guard:
            entry = self._image_locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if not entry[1]:
                    del self._image_locks[key]

    def load(self, path: str | Path, labeler, times=None) -> CachedImage:
        """The image at ``path`` as ``labeler`` decodes it in a batch, with the encodings it needs.
        Raises ``ImageLoadError``."""
        from autolabel.images import file_sha256
        from autolabel.pipeline import Encoded

        sha256 = file_sha256(path)
        key = feature_key(sha256, labeler.model)
        with self._image_lock(sha256):
            cached = self.cache.get(key)
            if cached is None or not cached.serves(labeler):
                check_decode_budget(path, labeler.decode_side)
                prepared = labeler.prepare(path, self.config.max_image_pixels)
                side = labeler.decode_side(prepared.size)
                if cached is not None and cached.decode_side == side:  # same decode: its encodings hold
                    encoded = Encoded([prepared], cached.encoded.features, cached.encoded.embeddings,
                                      tiles=cached.encoded.tiles)
                    display, scale = cached.display, cached.display_scale
                else:
                    encoded = Encoded([prepared])
                    display, scale = display_image(path, self.config.display_side, self.config.max_image_pixels)
                cached = CachedImage(key, prepared.size, side, encoded, display, scale)
            labeler.encode(cached.encoded.batch, times=times, encoded=cached.encoded)
            # Keep only what a later query may need: the encodings and any model input not encoded yet.
            prepared = cached.encoded.batch[0]
            prepared.pixels = None
            if cached.encoded.features is not None:
                prepared.detector_input = prepared.tile_inputs = None
            if cached.encoded.embeddings is not None:
                prepared.segmenter_input = None
            return self.cache.put(cached)

    def query(self, path: str | Path, prompts: str, threshold: float, mode: str = "detect",
              model: str | None = None, examples=(), tiles: str | None = None) -> QueryResult:
        """Detections (and masks in segment mode) for the image at ``path`` from the listed detector
        ``model`` (default: the selected one); ``examples``: ``exemplars.ExampleBox``es joining the
        classes of ``prompts``; ``tiles``: ``"off"`` or ``"auto"``."""
        from autolabel.pipeline import StageTimes
        from autolabel.ui.exemplars import query_ontology

        ontology = query_ontology(prompts, examples)
        labeler = make_labeler(self.config, self.models, ontology, mode, threshold, model=model,
                               tiles=tiles)  # loads before any decode
        times = StageTimes()
        cached = self.load(path, labeler, times)
        spent = times.as_dict()
        started = time.perf_counter()
        (dets,) = labeler.label(cached.encoded)
        return QueryResult(cached, ontology, dets, mode, spent.get("vision"), spent.get("sam2_encoder"),
                           time.perf_counter() - started, labeler.detector.backbone_calls, float(threshold),
                           self.models.catalog.key(labeler.model), len((cached.encoded.tiles or [()])[0]))


def check_decode_budget(path: str | Path, draft) -> None:
    """Refuse, from the header alone, an image whose decode would take more than ``DECODE_BUDGET``.
    ``draft(size)``: the long side JPEGs are decoded at (None: full size, as every other format)."""
    from autolabel.images import oriented_size

    size = Size(*oriented_size(path))
    with open(path, "rb") as fh:
        side = draft(size) if fh.read(3) == b"\xff\xd8\xff" else None
    reduction = min(1.0, side / max(size)) if side else 1.0
    needed = size.width * size.height * reduction**2 * DECODE_BYTES_PER_PIXEL
    if needed > DECODE_BUDGET:
        raise ImageLoadError(f"{Path(path).name} is {size.width}x{size.height} pixels: decoding it takes about "
                             f"{needed / 2**30:.1f} GB, more than the Test tab's {DECODE_BUDGET / 2**30:.1f} GB; "
                             "try a smaller copy")


def detection_rows(result: QueryResult) -> list[list]:
    """Rows of the Test tab's table: index, class, prompt, score, box (original pixels)."""
    d, names, queries = result.detections, result.ontology.names, result.ontology.queries
    return [[i + 1, names[int(d.class_ids[i])], _matched(queries, int(d.prompt_ids[i])), round(float(d.scores[i]), 3),
             *(round(float(v), 1) for v in d.xyxy[i])] for i in range(len(d))]


def _matched(queries: list[str], prompt_id: int) -> str:
    """The text prompt that found a detection; -1: none matched, its class's example boxes did."""
    return EXAMPLE_BOX if prompt_id < 0 else queries[prompt_id]


EXAMPLE_BOX = "(example box)"


DETECTION_HEADERS = ["#", "class", "prompt", "score", "x0", "y0", "x1", "y1"]
