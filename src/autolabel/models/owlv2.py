"""OWLv2 open-vocabulary detection through transformers' split API.

``forward()`` runs the text and vision towers together for every call. We split it (the same calls
``forward`` makes, so outputs are identical): text embeddings once per prompt set, the vision tower
once per image, and the cheap class head per (image, prompt set). That is what lets a batch reuse one
text encoding and lets the UI re-query a cached image with new prompts without the backbone.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from autolabel.detections import Detections
from autolabel.geometry import Size, clip_boxes
from autolabel.models.loading import load_pretrained
from autolabel.models.preprocess import Owlv2Preprocessor, draft_side

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextQueries:
    """Encoded prompts. ``embeds``: (Q, D) projected text embeddings; ``mask``: (Q,) bool."""

    queries: tuple[str, ...]
    embeds: torch.Tensor
    mask: torch.Tensor


@dataclass
class ImageFeatures:
    """Prompt-independent vision outputs for a batch of B images with P patches.

    ``image_feats``: (B, P, D) patch embeddings fed to the class head.
    ``pred_boxes``: (B, P, 4) float32 boxes, ``cx, cy, w, h`` normalised to the padded square.
    """

    image_feats: torch.Tensor
    pred_boxes: torch.Tensor

    def __len__(self) -> int:
        return self.image_feats.shape[0]

    def select(self, index: int) -> "ImageFeatures":
        return ImageFeatures(self.image_feats[index : index + 1], self.pred_boxes[index : index + 1])


@dataclass
class OwlScores:
    """``Owlv2Detector.score`` output: ``logits`` (B, P, Q) per patch and query and ``pred_boxes``
    (B, P, 4), on the model's device (possibly still being computed)."""

    logits: torch.Tensor
    pred_boxes: torch.Tensor


class Owlv2ExactPreprocessor:
    """The stock ``Owlv2ImageProcessor`` on fully decoded pixels (the plain transformers recipe)."""

    on_device = False

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def decode_side(self, size: Size) -> None:
        return None

    def __call__(self, pixels: torch.Tensor, size: Size, device="cpu") -> torch.Tensor:
        if (int(pixels.shape[1]), int(pixels.shape[0])) != tuple(size):
            raise ValueError("the stock OWLv2 processor needs the original pixels, not a reduced decode")
        values = self.image_processor(images=[pixels.cpu().numpy()], return_tensors="pt")["pixel_values"][0]
        return values.to(device=device, dtype=torch.float32)


class Owlv2FastPreprocessor:
    """JPEG draft decode to at least ``decode_margin`` times the model's input on the long side
    (2: inputs move about as much as re-saving the JPEG does, see BENCHMARKS.md), then the
    processor's pad + blur + resize + normalise as banded matrices in torch (``Owlv2Preprocessor``,
    within 1e-5 of the processor on the same pixels), on the model's device when it has one."""

    on_device = True

    def __init__(self, torch_preprocessor: Owlv2Preprocessor, decode_margin: float = 2.0):
        if decode_margin < 1:
            raise ValueError(f"decode_margin must be >= 1, got {decode_margin}")
        self.torch_preprocessor = torch_preprocessor
        self.decode_margin = decode_margin

    def decode_side(self, size: Size) -> int | None:
        return draft_side(*size, min_long=int(self.torch_preprocessor.size * self.decode_margin))

    def __call__(self, pixels: torch.Tensor, size: Size, device="cpu") -> torch.Tensor:
        return self.torch_preprocessor(pixels, tuple(size), device)


class Owlv2Detector:
    """OWLv2 behind the ``models.base.Detector`` protocol. Holds no per-image state.

    ``exact``: full decodes and the stock processor instead of draft decodes and torch
    preprocessing (also chosen when the processor has settings the torch version does not
    reproduce).
    """

    TEXT_CACHE_SIZE = 32

    def __init__(self, model, processor, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 exact: bool = False, decode_margin: float = 2.0):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = processor
        self.name = str(name)
        self.device = device
        self.dtype = dtype
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)
        self._text_cache: OrderedDict[tuple[str, ...], TextQueries] = OrderedDict()
        self._warned_long: set[str] = set()
        fast = None if exact else Owlv2Preprocessor.from_processor(processor.image_processor)
        if fast is None:
            if not exact:
                log.info("OWLv2 processor settings not reproduced in torch: using the stock processor")
            self.preprocessor = Owlv2ExactPreprocessor(processor.image_processor)
        else:
            self.preprocessor = Owlv2FastPreprocessor(fast, decode_margin)
        self.compiled = False

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                        exact: bool = False, decode_margin: float = 2.0) -> "Owlv2Detector":
        """Load a checkpoint (hub id or local directory; safetensors only)."""
        from transformers import AutoProcessor, Owlv2ForObjectDetection

        processor = load_pretrained(AutoProcessor, name_or_path, "the OWLv2 processor")
        model = load_pretrained(Owlv2ForObjectDetection, name_or_path, "the OWLv2 model", dtype=dtype)
        return cls(model, processor, name_or_path, device, dtype, exact, decode_margin)

    @property
    def image_size(self) -> int:
        """Side of the square the model sees (960 for B/16, 1008 for L/14)."""
        return int(self.model.config.vision_config.image_size)

    # -- text ---------------------------------------------------------------------------------------

    def encode_text(self, queries: list[str] | tuple[str, ...]) -> TextQueries:
        """Embed prompts once; later calls with the same prompts hit a small LRU cache."""
        key = tuple(queries)
        cached = self._text_cache.get(key)
        if cached is not None:
            self._text_cache.move_to_end(key)
            return cached
        self._warn_truncated(key)
        tokens = self.processor.tokenizer(
            list(key), padding="max_length", truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            embeds = self.model.owlv2.get_text_features(**tokens).pooler_output
        # forward() marks a query as padding when its first token is the pad id (0).
        encoded = TextQueries(key, embeds, tokens["input_ids"][:, 0] > 0)
        self._text_cache[key] = encoded
        if len(self._text_cache) > self.TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return encoded

    def _warn_truncated(self, queries: tuple[str, ...]) -> None:
        lengths = self.processor.tokenizer(list(queries), truncation=False)["input_ids"]
        for query, ids in zip(queries, lengths):
            if len(ids) > self.max_text_tokens and query not in self._warned_long:
                self._warned_long.add(query)
                log.warning("prompt %r is %d tokens; OWLv2 reads only the first %d, the rest is ignored",
                            query, len(ids), self.max_text_tokens)

    # -- images -------------------------------------------------------------------------------------

    def compile_vision(self, **options) -> None:
        """``torch.compile`` the vision tower (opt-in). Shapes are static at a given batch size, so
        callers should keep batches full (the labelling loop pads the last one)."""
        if not self.compiled:
            self.model.image_embedder = torch.compile(self.model.image_embedder, dynamic=False, **options)
            self.compiled = True

    def encode_images(self, pixel_values: torch.Tensor) -> ImageFeatures:
        """Run the vision tower and the prompt-independent box head."""
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            feature_map, _ = self.model.image_embedder(pixel_values=pixel_values)
            b, h, w, d = feature_map.shape
            image_feats = feature_map.reshape(b, h * w, d)
            pred_boxes = self.model.box_predictor(image_feats, feature_map)
        return ImageFeatures(image_feats, pred_boxes.float())

    # -- prompts x images -----------------------------------------------------------------------------

    def score(self, features: ImageFeatures, text: TextQueries) -> OwlScores:
        """The class head: (B, P, Q) float32 logits of every patch for every query."""
        b = len(features)
        embeds = text.embeds.unsqueeze(0).expand(b, -1, -1)
        mask = text.mask.unsqueeze(0).expand(b, -1)
        with torch.inference_mode():
            logits, _ = self.model.class_predictor(features.image_feats, embeds, mask)
        return OwlScores(logits.float(), features.pred_boxes)

    def postprocess(self, scores: OwlScores, sizes: list[Size], ontology, config) -> list[Detections]:
        """Raw scores of the first ``len(sizes)`` images -> their Detections (see ``postprocess_logits``)."""
        n = len(sizes)
        logits = scores.logits[:n].float().cpu().numpy()
        pred_boxes = scores.pred_boxes[:n].float().cpu().numpy()
        return [postprocess_logits(logits[i], pred_boxes[i], size, ontology, config) for i, size in enumerate(sizes)]

    def detect(self, features: ImageFeatures, text: TextQueries, sizes: list[Size], ontology, config) -> list[Detections]:
        return self.postprocess(self.score(features, text), sizes, ontology, config)


def postprocess_logits(logits: np.ndarray, pred_boxes: np.ndarray, size: Size, ontology, config) -> Detections:
    """Raw outputs of one image -> final Detections in original (oriented) pixels.

    logits: (P, Q) float32 per patch and query; pred_boxes: (P, 4) normalised cxcywh in the padded
    square. Score = sigmoid(max over queries), as transformers' post-processing does; the best query
    decides the class. Boxes are clipped to the image; boxes lying wholly in the padding are dropped
    (``pipeline.filter_detections``, with the config's area filters and NMS).
    """
    from scipy.special import expit  # sigmoid without overflow warnings for very negative logits

    from autolabel.pipeline import filter_detections

    width, height = size
    best_query = logits.argmax(axis=1)
    best_logit = np.take_along_axis(logits, best_query[:, None], axis=1)[:, 0]
    scores = expit(best_logit.astype(np.float64))
    class_ids = ontology.query_class_ids[best_query]
    keep = scores > ontology.thresholds(config.threshold)[class_ids]
    boxes = clip_boxes(boxes_to_pixels(pred_boxes[keep], width, height), width, height)
    # Thresholds compare in float64; the record keeps float32 scores like the model's boxes.
    dets = Detections(boxes, scores[keep].astype(np.float32), class_ids[keep], best_query[keep])
    return filter_detections(dets, size, config)


def boxes_to_pixels(pred_boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(P, 4) normalised ``cx, cy, w, h`` in the padded square -> (P, 4) ``xyxy`` pixels.

    The processor pads bottom/right to a square before resizing, so both axes scale by the longer
    side of the original image.
    """
    side = float(max(width, height))
    cx, cy, w, h = pred_boxes.T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32) * side
