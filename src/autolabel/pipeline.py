"""The one inference engine: files or images + ontology + config -> Detections (and masks).

``Labeler`` is the only place that drives models (``models.base`` protocols); the CLI, the UI's
Test and Batch tabs, fine-tune validation and the benchmark all go through it. Its per-batch steps
(``prepare``, ``encode``, ``score``, ``finish``) are methods of an object that holds no per-image
state, so a distributed engine can run them in remote workers; no model lives in a module global.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from autolabel.detections import Detections
from autolabel.errors import ConfigError
from autolabel.geometry import Size
from autolabel.models.memo import ModelMemo
from autolabel.models.precision import PRECISIONS
from autolabel.ontology import Ontology
from autolabel.tiling import AutoTiling, Tiling

log = logging.getLogger(__name__)

MODES = ("detect", "segment")
DEFAULT_BATCH_SIZE = 4  # images per forward pass; 32 suits a GPU


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


def filter_detections(dets: Detections, size: Size, config: DetectConfig) -> Detections:
    """The family-independent end of post-processing, for boxes already clipped to the image:
    drop empty boxes (those that lay wholly in padding or outside) and boxes outside the area
    range, sort by score, per-class then optional class-agnostic NMS, keep ``max_detections``."""
    from autolabel.geometry import batched_nms, nms

    # Each step narrows one index into ``dets``; the record is built once, at the end.
    area = dets.area
    image_area = float(size[0] * size[1])
    keep = np.flatnonzero((area > 0) & (area >= config.min_area_frac * image_area)
                          & (area <= config.max_area_frac * image_area))
    keep = keep[np.argsort(-dets.scores[keep], kind="stable")]
    if config.nms_iou is not None and len(keep):
        keep = keep[batched_nms(dets.xyxy[keep], dets.scores[keep], dets.class_ids[keep], config.nms_iou)]
    if config.agnostic_nms_iou is not None and len(keep):
        keep = keep[nms(dets.xyxy[keep], dets.scores[keep], config.agnostic_nms_iou)]
    if config.max_detections is not None:
        keep = keep[: config.max_detections]  # already in descending score order
    return dets[keep]


class StageTimes:
    """Wall-clock seconds per stage (``decode``, ``preprocess``, ``wait_input``, ``text``, ``vision``,
    ``heads``, ``sam2_encoder``, ``sam2_decoder``, ``masks``, ``store``), summed over threads, so
    stages can add up to more than the run's time.

    ``sync`` (e.g. ``torch.cuda.synchronize``) ends each stage so device time lands in the stage
    that queued it; it serialises the GPU pipeline, so profile and time throughput in separate runs.
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
    """One decoded image, made by ``Labeler.prepare`` (in a decode worker).

    ``size``: the original oriented size (the frame of boxes and masks). ``*_input``: ``(3, S, S)``
    float32 model inputs made on the CPU, or None when the model's device makes them from
    ``pixels`` (``(h, w, 3)`` uint8, possibly draft-reduced; also kept when the caller asks).
    With tiling, ``tile_inputs`` are the detector inputs of the crops ``tiles`` (``tiling.crop_boxes``)
    made on the CPU, like ``detector_input``.
    """

    path: str
    sha256: str
    size: Size
    pixels: Any = None
    detector_input: Any = None
    segmenter_input: Any = None
    tiles: tuple = ()
    tile_inputs: list | None = None


@dataclass
class Encoded:
    """The prompt-independent outputs of a batch of prepared images: the detector's ``features``
    and, in segment mode, one segmenter embedding per image. A UI caches these per image.
    ``tiles``: None, or per image the crop boxes whose features follow the batch's own in
    ``features`` (all images first, then every image's tiles in order)."""

    batch: list[PreparedImage]
    features: Any = None
    embeddings: list | None = None
    tiles: list[tuple] | None = None

    @property
    def sizes(self) -> list[Size]:
        return [p.size for p in self.batch]


@dataclass
class Launched:
    """A batch whose prompt-dependent scores are queued on the device; ``Labeler.finish`` collects it."""

    encoded: Encoded
    scores: Any = None


def _require_cpp_compiler() -> None:
    """``torch.compile`` on the CPU builds C++ kernels at the first forward; without a compiler that
    fails deep inside a run, so check now and say it in one line."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        from torch._inductor.exc import InvalidCxxCompiler
    except ImportError:  # inductor's layout moved: torch.compile reports a missing compiler itself
        return
    try:
        get_cpp_compiler()
    except InvalidCxxCompiler:
        raise ConfigError("--compile on the CPU needs a C++ compiler (g++ on PATH, or CXX); "
                          "install one or run without --compile") from None


class Labeler:
    """The one inference engine: ontology + config + models -> Detections (and masks).

    Models are loaded objects (``detector=``, ``segmenter=``, see ``models.base``) or checkpoint
    names (``model=``, ``sam_model=``) loaded on first use, on ``device`` in ``precision``
    (``models.precision``: auto, fp32, bf16, fp16, int8). ``exact``: full decodes and the stock
    transformers processors instead of JPEG draft decodes and torch preprocessing (BENCHMARKS.md).
    ``compile``: ``torch.compile`` the OWLv2 vision tower (CPU or GPU; on the CPU it needs a C++ compiler).
    ``tiles``: sliced inference for small objects (``tiling``): None (off), a ``Tiling`` grid,
    ``AutoTiling`` or its text form (``"auto"``, ``"2x3:0.25"``); the full image is always labelled too.

    Per batch, split so a streaming loop can overlap the steps and a UI can cache the expensive
    half: ``prepare(path)`` (decode workers) -> ``encode`` (vision backbones, prompt independent)
    -> ``score`` (prompt-dependent head, queued on the device) -> ``finish`` (post-processing, masks).
    """

    def __init__(self, ontology: Ontology, *, model: str | None = None, sam_model: str | None = None,
                 detector=None, segmenter=None, mode: str = "detect", config: DetectConfig | None = None,
                 device: str = "auto", precision: str = "auto", exact: bool = False, compile: bool = False,
                 tiles: Tiling | AutoTiling | str | None = None):
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if model is None and detector is None:
            raise ConfigError("give a detector checkpoint (model=) or a loaded detector (detector=)")
        if mode == "segment" and not (sam_model or segmenter is not None or _yields_masks(detector, model)):
            raise ConfigError("segment mode needs a segmenter (--sam-model) or a detector that makes masks "
                              "(see `autolabel models`)")
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
        if isinstance(tiles, str):
            from autolabel.tiling import parse_tiles

            tiles = parse_tiles(tiles)
        if tiles is not None and not isinstance(tiles, (Tiling, AutoTiling)):
            raise ConfigError(f"tiles must be None, a Tiling, AutoTiling or text like 'auto' or '2x2', got {tiles!r}")
        if tiles is not None and mode == "segment" and not (sam_model or segmenter is not None):
            raise ConfigError("tiles in segment mode need a segmenter (--sam-model): a detector's own masks "
                              "are not merged across tiles")
        self.ontology = ontology
        self.mode = mode
        self.config = config or DetectConfig()
        self.model = detector.name if detector is not None else str(model)
        self.sam_model = None if mode != "segment" else segmenter.name if segmenter is not None else (
            str(sam_model) if sam_model else None)
        self.device = device
        self.precision = precision
        self.exact = exact
        self.compile = compile
        self.tiles = tiles
        self._detector = detector
        self._segmenter = segmenter if mode == "segment" else None

    def __repr__(self) -> str:
        return (f"Labeler(model={self.model!r}, sam_model={self.sam_model!r}, mode={self.mode!r}, "
                f"precision={self.precision!r}, exact={self.exact})")

    # -- models -------------------------------------------------------------------------------------

    @property
    def detector(self):
        if self._detector is None:
            from autolabel.models.registry import load_detector

            self._detector = self._load(load_detector, self.model)
        if self.compile and not self._detector.compiled:
            if str(self._detector.device).startswith("cpu"):
                _require_cpp_compiler()
            self._detector.compile_vision()
        return self._detector

    @property
    def segmenter(self):
        if not self.uses_segmenter:
            raise ConfigError("this labeler has no segmenter (detect mode, or a detector that makes masks)")
        if self._segmenter is None:
            from autolabel.models.registry import load_segmenter

            self._segmenter = self._load(load_segmenter, self.sam_model)
        return self._segmenter

    def _load(self, load, name: str):
        from autolabel.settings import resolve_device

        return load(name, resolve_device(self.device), self.precision, exact=self.exact)

    @property
    def uses_segmenter(self) -> bool:
        """Segment mode with a second model (a detector that makes masks itself needs none)."""
        return self.mode == "segment" and self.sam_model is not None

    def _models(self) -> list:
        return [self.detector, self.segmenter] if self.uses_segmenter else [self.detector]

    @property
    def model_device(self) -> str:
        return str(self.detector.device)

    def run_config(self) -> dict:
        """What identifies a run's output: a store refuses to mix results of different configs.
        ``precision`` is recorded as asked; ``auto`` is left out, so runs made before the option
        existed resume with the default."""
        config = {
            "model": self.model,
            "sam_model": self.sam_model,
            "mode": self.mode,
            "ontology": self.ontology.to_dict(),
            "detect": self.config.to_dict(),
        }
        if self.precision != "auto":
            config["precision"] = self.precision
        if self.tiles is not None:  # recorded only when on, so runs made before tiling resume
            config["tiles"] = self.tiles.to_dict()
        return config

    def tile_boxes(self, size: Size) -> list[tuple[int, int, int, int]]:
        """The tiles (crop boxes in original pixels) this labeler cuts an image of ``size`` into;
        empty when tiling is off or the image needs none."""
        from autolabel.tiling import DEFAULT_MODEL_SIDE, crop_boxes, resolve

        if self.tiles is None:
            return []
        side = getattr(self.detector, "image_size", None) or DEFAULT_MODEL_SIDE
        tiling = resolve(self.tiles, Size(*size), int(side))
        return crop_boxes(Size(*size), tiling) if tiling is not None else []

    # -- 1. decode ----------------------------------------------------------------------------------

    def decode_side(self, size: Size) -> int | None:
        """The long side to draft-decode a JPEG of ``size`` at: the least reduction any model's
        preprocessor asks for; None (full size) when one of them needs the original pixels, or
        when the image is tiled (tiles are cut at full resolution)."""
        if self.tiles is not None and self.tile_boxes(size):
            return None
        sides = [model.preprocessor.decode_side(Size(*size)) for model in self._models()]
        return None if None in sides else max(sides)

    def prepare(self, path: str | Path, max_pixels: int | None = None, times: StageTimes | None = None,
                keep_pixels: bool = False) -> PreparedImage:
        """Decode one file (opened once) and, on the CPU, make its model inputs; ``ImageLoadError``
        for files that cannot be labelled."""
        from autolabel.images import DEFAULT_MAX_PIXELS, load_image
        from autolabel.models.preprocess import as_hwc_uint8

        models = self._models()  # loaded before the first decode
        with _stage(times, "decode"):
            loaded = load_image(path, max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
                                draft=lambda size: self.decode_side(Size(*size)))
            pixels = as_hwc_uint8(loaded.image)
        size = Size(loaded.width, loaded.height)
        prepared = PreparedImage(str(loaded.path), loaded.sha256, size, pixels=pixels)
        del loaded  # the decoded PIL image: ``pixels`` is its copy, and preprocessing needs memory
        on_device = self.model_device != "cpu"
        with _stage(times, "preprocess"):
            for model, field_name in zip(models, ("detector_input", "segmenter_input")):
                if not (on_device and model.preprocessor.on_device):
                    setattr(prepared, field_name, model.preprocessor(pixels, size, "cpu"))
            if self.tiles is not None:
                prepared.tiles = tuple(self.tile_boxes(size))
                if prepared.tiles and not (on_device and self.detector.preprocessor.on_device):
                    prepared.tile_inputs = [self._tile_input(pixels, size, box, "cpu") for box in prepared.tiles]
        if not keep_pixels and not (on_device and any(m.preprocessor.on_device for m in models)):
            prepared.pixels = None  # the inputs are made: drop the pixels (memory)
        return prepared

    # -- 2. prompt-independent encoders -------------------------------------------------------------

    def encode(self, batch: list[PreparedImage], times: StageTimes | None = None, pad_to: int | None = None,
               encoded: Encoded | None = None) -> Encoded:
        """Run the vision backbones on a batch (asynchronous on a GPU). ``pad_to``: pad the batch to
        this size (static shapes for a compiled vision tower). ``encoded``: a cached result for the
        same batch; only what it lacks for this labeler's mode is computed."""
        import torch

        encoded = encoded or Encoded(batch)
        if not batch:
            return encoded
        tiles = self._batch_tiles(batch)
        if encoded.features is not None and encoded.tiles != tiles:
            encoded.features = None  # cached with another tiling
        if encoded.features is None:
            inputs = self._inputs(batch, self.detector, "detector_input", times)
            if tiles is not None:  # every tile of the batch in the same forward pass
                inputs = torch.cat([inputs, self._tile_inputs(batch, tiles, times)])
            if pad_to is not None and len(inputs) < pad_to:
                inputs = torch.cat([inputs, inputs[-1:].expand(pad_to - len(inputs), -1, -1, -1)])
            with _stage(times, "vision"):
                encoded.features = self.detector.encode_images(inputs)
            encoded.tiles = tiles
        if self.uses_segmenter and encoded.embeddings is None:
            inputs = self._inputs(batch, self.segmenter, "segmenter_input", times)
            with _stage(times, "sam2_encoder"):
                encoded.embeddings = self.segmenter.embed(inputs, encoded.sizes)
        return encoded

    def _inputs(self, batch: list[PreparedImage], model, field_name: str, times: StageTimes | None):
        """Stacked model inputs: made in the workers, or now on the model's device from the pixels."""
        import torch

        with _stage(times, "preprocess"), torch.inference_mode():
            return torch.stack([
                getattr(p, field_name) if getattr(p, field_name) is not None
                else model.preprocessor(p.pixels, p.size, model.device)
                for p in batch
            ])

    def _batch_tiles(self, batch: list[PreparedImage]) -> list[tuple] | None:
        """Per image its tiles, or None when no image of the batch is tiled."""
        if self.tiles is None:
            return None
        tiles = [tuple(self.tile_boxes(p.size)) for p in batch]
        return tiles if any(tiles) else None

    def _tile_input(self, pixels, size: Size, box, device):
        from autolabel.tiling import crop_pixels, crop_size

        crop = crop_pixels(pixels, size, box).contiguous()
        return self.detector.preprocessor(crop, crop_size(box), device)

    def _tile_inputs(self, batch: list[PreparedImage], tiles: list[tuple], times: StageTimes | None):
        """Stacked detector inputs of every tile: made in the workers, or now from the pixels."""
        import torch

        inputs = []
        with _stage(times, "preprocess"), torch.inference_mode():
            for p, boxes in zip(batch, tiles):
                if p.tile_inputs is not None and p.tiles == boxes:
                    inputs += p.tile_inputs
                elif p.pixels is not None:
                    inputs += [self._tile_input(p.pixels, p.size, box, self.detector.device) for box in boxes]
                elif boxes:
                    raise ValueError(f"{p.path}: prepared without pixels or inputs for these tiles; prepare it "
                                     "with this labeler or with keep_pixels=True")
            return torch.stack([x.to(self.detector.device) for x in inputs])

    # -- 3. prompts ---------------------------------------------------------------------------------

    def score(self, encoded: Encoded, times: StageTimes | None = None) -> Launched:
        """Queue the prompt-dependent head for an encoded batch: every query of the ontology, in the
        column order post-processing reads (``Ontology.positive_class_ids``, ``negative_class_ids``)."""
        launched = Launched(encoded)
        if encoded.batch:
            with _stage(times, "text"):
                queries = self._queries()
            with _stage(times, "heads"):
                # A detector that makes masks skips its mask decoder when they would be dropped.
                options = {"masks": self.mode == "segment"} if self.detector.yields_masks else {}
                launched.scores = self.detector.score(encoded.features, queries, **options)
        return launched

    def _queries(self):
        """The detector's encoded queries: text prompts, positive then negative (the detector caches
        them), and exemplar embeddings in their columns (``_exemplar_queries``)."""
        ontology, detector = self.ontology, self.detector
        family = getattr(detector, "family", type(detector).__name__)
        if ontology.negative_queries and not getattr(detector, "supports_negatives", False):
            raise ConfigError(f"negative prompts are not supported by {family}: remove the negatives ('not=')")
        if ontology.has_exemplars and not hasattr(detector, "embed_exemplars"):
            raise ConfigError(f"exemplars (example boxes) are not supported by {family}: use an OWLv2, "
                              "OWL-ViT or SAM 3 checkpoint, or text prompts")
        texts = ontology.queries + ontology.negative_queries
        if not ontology.has_exemplars:
            return detector.encode_text(texts)
        text = detector.encode_text(texts) if texts else None  # a class may have exemplars alone
        positive, negative = self._exemplar_queries()
        return detector.with_exemplars(text, positive, negative, ontology.query_class_ids)

    def _exemplar_queries(self) -> tuple[dict[int, list], dict[int, list]]:
        """Per class index with exemplars (then with negative exemplars) the embeddings of its
        exemplars (``detector.embed_exemplars`` rows), remembered per detector (``ExemplarMemo``)."""
        from autolabel.models.owl_exemplars import ExemplarMemo

        exemplars = [e for c in self.ontology.classes for e in c.exemplars]
        memo = ExemplarMemo.of(self.detector) or self.__dict__.setdefault("_exemplar_memo", ExemplarMemo())
        embedding = memo.get(exemplars)
        missing = [e for e in dict.fromkeys(exemplars) if ExemplarMemo.key(e) not in embedding]
        for image in dict.fromkeys(e.image for e in missing):
            on_image = [e for e in missing if e.image == image]
            rows = self._embed_exemplars(image, on_image)
            embedding.update((ExemplarMemo.key(e), row) for e, row in zip(on_image, rows))
        memo.put(embedding)
        return tuple({i: [embedding[ExemplarMemo.key(e)] for e in c.exemplars_of(negative)]
                      for i, c in enumerate(self.ontology.classes) if c.exemplars_of(negative)}
                     for negative in (False, True))

    def _embed_exemplars(self, image: str, exemplars: list) -> list:
        """The ``embed_exemplars`` rows of ``exemplars`` drawn on ``image``: decoded and encoded as
        the detector alone asks (untiled, whatever this labeler's tiles or segmenter), so an
        exemplar gives the same query in every labeler on the detector."""
        import torch

        from autolabel.images import DEFAULT_MAX_PIXELS, load_image
        from autolabel.models.preprocess import as_hwc_uint8

        detector = self.detector
        loaded = load_image(image, max_pixels=DEFAULT_MAX_PIXELS,
                            draft=lambda size: detector.preprocessor.decode_side(Size(*size)))
        if any(e.sha256 != loaded.sha256 for e in exemplars):
            raise ConfigError(f"exemplar image {image} changed since the ontology was made: make it again")
        size = Size(loaded.width, loaded.height)
        if any(e.box[2] > size.width or e.box[3] > size.height for e in exemplars):
            raise ConfigError(f"an exemplar box reaches outside {image} ({size.width}x{size.height})")
        on_device = self.model_device != "cpu" and detector.preprocessor.on_device
        with torch.inference_mode():
            inputs = detector.preprocessor(as_hwc_uint8(loaded.image), size, detector.device if on_device else "cpu")
            features = detector.encode_images(torch.stack([inputs]))
        boxes = np.array([e.box for e in exemplars], dtype=np.float32)
        return list(detector.embed_exemplars(features, boxes, size))

    def launch(self, batch: list[PreparedImage], times: StageTimes | None = None,
               pad_to: int | None = None) -> Launched:
        return self.score(self.encode(batch, times, pad_to), times)

    # -- 4. results ---------------------------------------------------------------------------------

    def finish(self, launched: Launched, times: StageTimes | None = None, mask_pool=None) -> list:
        """Detections of a launched batch, in batch order. In segment mode each entry is a
        ``concurrent.futures.Future`` when ``mask_pool`` (an executor) is given: mask upsampling and
        RLE encoding run there while the model goes on."""
        encoded = launched.encoded
        if not encoded.batch:
            return []
        with _stage(times, "heads"):
            if encoded.tiles is None:
                dets = self.detector.postprocess(launched.scores, encoded.sizes, self.ontology, self.config)
            else:
                dets = self._merged_tiles(launched.scores, encoded)
        if not self.uses_segmenter:
            # A detector that makes masks keeps them in segment mode only.
            return dets if self.mode == "segment" else [replace(d, masks=None) for d in dets]
        out = []
        for size, d, embedding in zip(encoded.sizes, dets, encoded.embeddings):
            with _stage(times, "sam2_decoder"):
                logits = self.segmenter.predict_logits(embedding, d.xyxy)
            task = partial(_attach_masks, d, logits, size, self.segmenter.encode_masks, times)
            out.append(mask_pool.submit(task) if mask_pool is not None else task())
        return out

    def _merged_tiles(self, scores, encoded: Encoded) -> list[Detections]:
        """Each image's detections from its full view and its tiles: every view post-processed at
        its own size (area limits and the cap wait for the merge: they refer to the whole image),
        tiles shifted into the image, then merged (``tiling.merge_detections``)."""
        from autolabel.tiling import crop_size, from_tile, merge_detections

        views = replace(self.config, min_area_frac=0.0, max_area_frac=1.0, agnostic_nms_iou=None,
                        max_detections=None)
        tile_sizes = [crop_size(box) for boxes in encoded.tiles for box in boxes]
        dets = self.detector.postprocess(scores, encoded.sizes + tile_sizes, self.ontology, views)
        out, k = [], len(encoded.batch)
        for i, (size, boxes) in enumerate(zip(encoded.sizes, encoded.tiles)):
            parts = [dets[i]] + [from_tile(dets[k + j], box, size) for j, box in enumerate(boxes)]
            k += len(boxes)
            out.append(merge_detections(parts, size, self.tiles, self.config))
        return out

    def label(self, encoded: Encoded) -> list[Detections]:
        """Detections of an encoded batch at once: re-queries cached encodings with this labeler's
        prompts, thresholds and mode."""
        return self.finish(self.score(self.encode(encoded.batch, encoded=encoded)))

    def label_images(self, images, sizes: list[Size] | None = None) -> list[Detections]:
        """Label in-memory RGB images (PIL or ``(h, w, 3)`` uint8, already EXIF-oriented) through the
        same calls. ``sizes``: each image's original size when it is a reduced copy."""
        from autolabel.models.preprocess import as_hwc_uint8

        pixels = [as_hwc_uint8(image) for image in images]
        sizes = sizes or [Size(int(p.shape[1]), int(p.shape[0])) for p in pixels]
        batch = [PreparedImage(f"<image {i}>", "", Size(*size), pixels=p)
                 for i, (p, size) in enumerate(zip(pixels, sizes))]
        return self.label(self.encode(batch))

    def masks_for_boxes(self, image: str | Path, boxes_xyxy, max_pixels: int | None = None, *,
                        points=None) -> list[dict | None]:
        """COCO RLE masks (original resolution, EXIF-oriented frame) of ``(N, 4)`` ``xyxy`` boxes in
        the original pixels of the image file ``image``, made as a segment run makes them: the same
        draft decode (``decode_side``), segmenter embedding and mask encoding. Boxes are clipped to
        the image; one left empty gets None. ``points``: per box, ``(x, y, label)`` clicks in the
        same pixels that refine its mask (label 1: part of the object, 0: not; ``models.base.Segmenter``).
        The embedding of the last few images is remembered per segmenter (``_EmbeddingMemo``), so a
        second box or click on an image does not run the encoder again."""
        if not self.uses_segmenter:
            raise ConfigError("masks for boxes need a segmenter: a segment-mode labeler with sam_model= or segmenter=")
        from autolabel.geometry import clip_boxes
        from autolabel.models.loaded import check_points

        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        clicks = check_points(points, len(boxes)) if points is not None else None
        if not len(boxes):
            return []
        embedding, size = self._image_embedding(image, max_pixels)
        boxes = clip_boxes(boxes, *size)
        usable = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        masks: list[dict | None] = [None] * len(boxes)
        if usable.any():
            # Box-only calls stay as they were, for segmenters that take no points.
            kept = np.flatnonzero(usable)
            logits = (self.segmenter.predict_logits(embedding, boxes[usable]) if clicks is None
                      else self.segmenter.predict_logits(embedding, boxes[usable], [clicks[i] for i in kept]))
            for i, rle in zip(kept, self.segmenter.encode_masks(logits, size)):
                masks[i] = rle
        return masks

    def _image_embedding(self, image: str | Path, max_pixels: int | None):
        """``(embedding, original size)`` of one image file for the segmenter, decoded and
        preprocessed as ``prepare`` and ``encode`` do it in a run; remembered by content and decode side."""
        import torch

        from autolabel.images import DEFAULT_MAX_PIXELS, file_sha256, load_image, oriented_size
        from autolabel.models.preprocess import as_hwc_uint8

        segmenter = self.segmenter
        memo = _EmbeddingMemo.of(segmenter) or self.__dict__.setdefault("_embedding_memo", _EmbeddingMemo())
        key = (file_sha256(image), self.decode_side(Size(*oriented_size(image))))
        remembered = memo.recall([key])
        if remembered:
            return remembered[key]
        loaded = load_image(image, max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
                            draft=lambda size: self.decode_side(Size(*size)))
        size = Size(loaded.width, loaded.height)
        pixels = as_hwc_uint8(loaded.image)
        del loaded
        on_device = self.model_device != "cpu" and segmenter.preprocessor.on_device
        with torch.inference_mode():
            inputs = segmenter.preprocessor(pixels, size, segmenter.device if on_device else "cpu")
        (embedding,) = segmenter.embed(torch.stack([inputs]), [size])
        memo.remember({key: (embedding, size)})
        return embedding, size

    def candidates(self, launched: Launched, k: int) -> list:
        """The detector's top-``k`` prompt-independent candidates of each image of a launched batch
        (``autolabel.candidates.Candidates``, queued on the device), for re-prompting it later
        without the backbone (``autolabel relabel``). Padding images are left out."""
        encoded = launched.encoded
        if not encoded.batch:
            return []
        return self.detector.candidates(encoded.features, k)[: len(encoded.batch)]

    def rescore(self, candidates, sizes: list[Size], times: StageTimes | None = None) -> list[Detections]:
        """Detections of images from their kept candidates (``autolabel.candidates.Candidates`` of
        B images, e.g. a ``CandidateBuffer`` batch; ``sizes`` their original sizes) with this
        labeler's queries, assembled as ``score`` does (negatives, exemplars), and post-processing:
        what a full run gives restricted to those boxes, without the vision backbone (``autolabel
        relabel``). The post-processing floor (the lowest class threshold) is applied first, so
        most candidates never reach the per-image steps."""
        if not len(sizes):
            return []
        if not getattr(self.detector, "ranks_candidates", False):
            raise ConfigError(f"{self.model} cannot re-score kept candidates (an OWLv2 checkpoint can)")
        with _stage(times, "text"):
            queries = self._queries()
        with _stage(times, "heads"):
            floor = float(self.ontology.thresholds(self.config.threshold).min())
            scores = self.detector.score_candidates(candidates, queries, min_score=floor)
        with _stage(times, "postprocess"):
            return self.detector.postprocess(scores, list(sizes), self.ontology, self.config)


class _EmbeddingMemo(ModelMemo):
    """Segmenter embeddings of the last images ``masks_for_boxes`` was asked about (keyed by file
    content and decode side): the image encoder is the costly part of a mask."""

    KEPT = 2  # an embedding is tens of MB at 1024 px


def _attach_masks(dets: Detections, logits, size: Size, encode, times) -> Detections:
    with _stage(times, "masks"):
        rles = encode(logits, size)
    return Detections(dets.xyxy, dets.scores, dets.class_ids, dets.prompt_ids, list(rles))


def _yields_masks(detector, model: str | None) -> bool:
    """Whether the detector (loaded, or the checkpoint's family) makes masks itself."""
    if detector is not None:
        return detector.yields_masks
    from autolabel.models.registry import makes_masks

    return makes_masks(model)
