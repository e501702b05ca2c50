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

from autolabel.models.loading import load_pretrained
from autolabel.models.preprocess import Owlv2Preprocessor, as_hwc_uint8

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


class Owlv2Detector:
    """Model handles plus the split inference calls. Holds no per-image state."""

    TEXT_CACHE_SIZE = 32

    def __init__(self, model, processor, device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = processor
        self.device = device
        self.dtype = dtype
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)
        self._text_cache: OrderedDict[tuple[str, ...], TextQueries] = OrderedDict()
        self._warned_long: set[str] = set()
        # Torch preprocessing equal to the processor's (None if the processor has unusual settings).
        self.fast_preprocessor = Owlv2Preprocessor.from_processor(processor.image_processor)
        self.compiled = False

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
        """Load a checkpoint (hub id or local directory; safetensors only)."""
        from transformers import AutoProcessor, Owlv2ForObjectDetection

        processor = load_pretrained(AutoProcessor, name_or_path, "the OWLv2 processor")
        model = load_pretrained(Owlv2ForObjectDetection, name_or_path, "the OWLv2 model", dtype=dtype)
        return cls(model, processor, device, dtype)

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

    def preprocess(self, images, original_sizes=None, *, fast: bool | None = None) -> torch.Tensor:
        """RGB images -> (B, 3, S, S) pixel values on the model's device and dtype, as the stock
        processor makes them (pad bottom/right to square, blur + resize to S, normalise).

        images: RGB PIL images or (H, W, 3) uint8 arrays/tensors, EXIF-oriented.
        original_sizes: (width, height) per image when the images are reduced versions of larger
            originals (draft-decoded); boxes are then in the originals' frame. None: the images
            are the originals.
        fast: compute in torch on the model's device (``models.preprocess``; equal to the processor
            within 1e-5 on the same pixels, see tests/models/test_preprocess.py) instead of calling
            the processor (bit-exact, about 2 s for a 12 MP photo on a laptop CPU). Default: fast
            only for reduced images, which the processor cannot take.
        """
        images = list(images)
        if original_sizes is not None and len(original_sizes) != len(images):
            raise ValueError(f"got {len(images)} images but {len(original_sizes)} original sizes")
        if fast is None:
            fast = original_sizes is not None
        if not fast:
            if original_sizes is not None and any(
                tuple(size) != tuple(as_size(im)) for im, size in zip(images, original_sizes)
            ):
                raise ValueError("the stock processor needs original pixels: use fast=True for reduced images")
            return self.preprocess_reference(images)
        sizes = original_sizes or [None] * len(images)
        with torch.inference_mode():
            pixel_values = torch.stack([self.pixel_values(as_hwc_uint8(im), size) for im, size in zip(images, sizes)])
        return pixel_values.to(dtype=self.dtype)

    def pixel_values(self, pixels: torch.Tensor, original_size: tuple[int, int] | None = None,
                     device: str | torch.device | None = None) -> torch.Tensor:
        """One image's ``(3, S, S)`` float32 pixel values, computed on ``device`` (default: the
        model's). ``pixels``: ``(h, w, 3)`` uint8, ``original_size``: see ``preprocess``. Holds no
        model state: decode workers call it to preprocess on the CPU while the model runs."""
        device = self.device if device is None else device
        if self.fast_preprocessor is None:
            from PIL import Image

            if original_size is not None and tuple(original_size) != (pixels.shape[1], pixels.shape[0]):
                raise ValueError("this processor's settings need original pixels (no reduced decode)")
            return self.preprocess_reference([Image.fromarray(pixels.cpu().numpy())])[0].to(device, torch.float32)
        return self.fast_preprocessor(pixels, original_size, device)

    def preprocess_reference(self, images) -> torch.Tensor:
        """The stock processor (the plain transformers recipe), on original pixels."""
        images = [im if not isinstance(im, (np.ndarray, torch.Tensor)) else as_hwc_uint8(im).cpu().numpy()
                  for im in images]
        pixel_values = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return pixel_values.to(device=self.device, dtype=self.dtype)

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

    def class_logits(self, features: ImageFeatures, text: TextQueries) -> torch.Tensor:
        """(B, P, Q) float32 logits of every patch for every query."""
        b = len(features)
        embeds = text.embeds.unsqueeze(0).expand(b, -1, -1)
        mask = text.mask.unsqueeze(0).expand(b, -1)
        with torch.inference_mode():
            logits, _ = self.model.class_predictor(features.image_feats, embeds, mask)
        return logits.float()


def as_size(image) -> tuple[int, int]:
    """(width, height) of a PIL image or an (H, W, 3) array/tensor."""
    if hasattr(image, "size") and not callable(image.size) and not isinstance(image, np.ndarray):
        return tuple(image.size)
    return int(image.shape[1]), int(image.shape[0])


def boxes_to_pixels(pred_boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(P, 4) normalised ``cx, cy, w, h`` in the padded square -> (P, 4) ``xyxy`` pixels.

    The processor pads bottom/right to a square before resizing, so both axes scale by the longer
    side of the original image.
    """
    side = float(max(width, height))
    cx, cy, w, h = pred_boxes.T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32) * side
