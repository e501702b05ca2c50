"""OWLv2 open-vocabulary detection through transformers' split API.

``forward()`` runs the text and vision towers together for every call. We split it (the same calls
``forward`` makes, so outputs are identical): text embeddings once per prompt set, the vision tower
once per image, and the cheap class head per (image, prompt set). That is what lets a batch reuse one
text encoding and lets the UI re-query a cached image with new prompts without the backbone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from autolabel.detections import Detections
from autolabel.geometry import Size
from autolabel.models.loaded import LoadedDetector
from autolabel.models.postprocess import BoxScores, best_prompt, per_image, thresholded
from autolabel.models.preprocess import DraftPreprocessor, Owlv2Preprocessor, StockPreprocessor
from autolabel.models.prompts import TruncationWarnings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextQueries:
    """Encoded prompts. ``embeds``: (Q, D) projected text embeddings; ``mask``: (Q,) bool."""

    queries: tuple[str, ...]
    embeds: torch.Tensor
    mask: torch.Tensor


@dataclass
class ImageFeatures:
    """Prompt-independent vision outputs of B images with P patches: ``image_feats`` (B, P, D) for
    the class head, ``pred_boxes`` (B, P, 4) float32 ``cx, cy, w, h`` normalised to the padded square."""

    image_feats: torch.Tensor
    pred_boxes: torch.Tensor

    def __len__(self) -> int:
        return self.image_feats.shape[0]


class Owlv2Detector(LoadedDetector):
    """OWLv2 behind the ``models.base.Detector`` protocol. Holds no per-image state. ``exact``: the
    stock processor (also chosen for processor settings the torch version does not reproduce)."""

    family = "OWLv2"

    def __init__(self, model, processor, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 exact: bool = False):
        super().__init__(model, processor, name, device, dtype, exact)
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)
        self._truncation = TruncationWarnings(processor.tokenizer, self.max_text_tokens)

    @classmethod
    def checkpoint_classes(cls, name_or_path: str) -> tuple:
        from transformers import AutoProcessor, Owlv2ForObjectDetection

        return Owlv2ForObjectDetection, AutoProcessor

    @classmethod
    def make_preprocessor(cls, image_processor, exact: bool):
        """JPEG draft decode to at least twice the model's input on the long side (then inputs move
        about as much as re-saving the JPEG does, see BENCHMARKS.md), then the processor's operations
        in torch (``Owlv2Preprocessor``); the stock processor when ``exact`` or for processor settings
        the torch version does not reproduce."""
        fast = None if exact else Owlv2Preprocessor.from_processor(image_processor)
        if fast is None:
            if not exact:
                log.info("OWLv2 processor settings not reproduced in torch: using the stock processor")
            return StockPreprocessor(image_processor)
        return DraftPreprocessor(fast, min_long=2 * fast.size)

    @property
    def image_size(self) -> int:
        """Side of the square the model sees (960 for B/16, 1008 for L/14)."""
        return int(self.model.config.vision_config.image_size)

    # -- text ---------------------------------------------------------------------------------------

    def _encode_text(self, key: tuple[str, ...]) -> TextQueries:
        """Projected text embeddings of the prompts (``encode_text`` caches them)."""
        self._truncation.check(key)
        tokens = self.processor.tokenizer(
            list(key), padding="max_length", truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            embeds = self.model.base_model.get_text_features(**tokens).pooler_output
        # forward() marks a query as padding when its first token is the pad id (0).
        return TextQueries(key, embeds, tokens["input_ids"][:, 0] > 0)

    # -- images -------------------------------------------------------------------------------------

    def compile_vision(self, **options) -> None:
        """``torch.compile`` the vision tower (opt-in). Shapes are static at a given batch size, so
        callers should keep batches full (the labelling loop pads the last one)."""
        self._compile(self.model, "image_embedder", dynamic=False, **options)

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

    def score(self, features: ImageFeatures, text: TextQueries) -> BoxScores:
        """The class head: (B, P, Q) float32 logits of every patch for every query."""
        b = len(features)
        embeds = text.embeds.unsqueeze(0).expand(b, -1, -1)
        mask = text.mask.unsqueeze(0).expand(b, -1)
        with torch.inference_mode():
            logits, _ = self.model.class_predictor(features.image_feats, embeds, mask)
        return BoxScores(logits.float(), features.pred_boxes)

    def postprocess(self, scores: BoxScores, sizes: list[Size], ontology, config) -> list[Detections]:
        """Detections of the first ``len(sizes)`` images (a padded batch has more)."""
        return per_image(scores, sizes, ontology, config, postprocess_logits)


def postprocess_logits(logits: np.ndarray, pred_boxes: np.ndarray, size: Size, ontology, config) -> Detections:
    """Raw outputs of one image (``(P, Q)`` logits, ``(P, 4)`` boxes) -> final Detections in original
    pixels. Score = sigmoid(max over queries), as transformers' post-processing does; the best query
    decides the class. Boxes are clipped to the image (``filter_detections`` drops those that lay
    wholly in the padding)."""
    query, scores = best_prompt(logits)
    return thresholded(scores, query, boxes_to_pixels(pred_boxes, *size), size, ontology, config)


def boxes_to_pixels(pred_boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(P, 4) normalised ``cx, cy, w, h`` -> ``xyxy`` pixels. The processor pads bottom/right to a
    square before resizing, so both axes scale by the longer side."""
    side = float(max(width, height))
    cx, cy, w, h = pred_boxes.T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32) * side
