"""OWLv2 open-vocabulary detection through transformers' split API.

``forward()`` runs the text and vision towers together for every call. We split it (the same calls
``forward`` makes, so outputs are identical): text embeddings once per prompt set, the vision tower
once per image, and the cheap class head per (image, prompt set). That is what lets a batch reuse one
text encoding and lets the UI re-query a cached image with new prompts without the backbone.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from autolabel.detections import Detections
from autolabel.geometry import Size
from autolabel.models.loaded import LoadedDetector
from autolabel.models.owl_exemplars import exemplar_embeddings, with_exemplar_queries
from autolabel.models.postprocess import BoxScores, best_prompt, per_image, thresholded
from autolabel.models.preprocess import DraftPreprocessor, Owlv2Preprocessor, StockPreprocessor
from autolabel.models.prompts import PaddedTokenizer

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
    supports_negatives = True  # negative prompts are more class-head columns (``postprocess.suppress_negatives``)

    def __init__(self, model, processor, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 exact: bool = False):
        super().__init__(model, processor, name, device, dtype, exact)
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)
        self._tokenize = PaddedTokenizer(processor.tokenizer, self.max_text_tokens)

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
        tokens = self._tokenize(key, self.device)
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

    # -- exemplars (visual prompts, ``models.owl_exemplars``) ----------------------------------------

    def embed_exemplars(self, features: ImageFeatures, boxes_xyxy: np.ndarray, size: Size) -> torch.Tensor:
        """``(k, D)`` float32 query embeddings of ``k`` exemplar boxes (``xyxy`` pixels) drawn on one
        image of ``size``, from that image's ``encode_images`` features."""
        return exemplar_embeddings(self, features, boxes_xyxy, size)

    def with_exemplars(self, text: TextQueries, positive: dict[int, list], negative: dict[int, list],
                       query_class_ids: np.ndarray) -> TextQueries:
        """Encoded positive-then-negative prompts (``query_class_ids``: the class of each positive
        one) plus one query per class with (negative) exemplars, from each class index's list of
        ``embed_exemplars`` rows, in the column order of ``Ontology``. ``text`` None: no text
        prompts at all."""
        if text is None:
            dim = self.model.class_head.dense0.out_features
            text = TextQueries((), torch.empty((0, dim), dtype=self.dtype, device=self.device),
                               torch.empty(0, dtype=torch.bool, device=self.device))
        positive, negative = ([groups[c] for c in sorted(groups)] for groups in (positive, negative))  # class order
        return with_exemplar_queries(text, positive, negative, len(query_class_ids))

    # -- kept candidates (re-prompting a finished run, ``autolabel relabel``) --------------------------

    @property
    def ranks_candidates(self) -> bool:
        """Whether the model has the objectness head that ranks prompt-independent candidates
        (OWLv2 does; OWL-ViT v1 does not)."""
        return hasattr(self.model, "objectness_predictor")

    def candidates(self, features: ImageFeatures, k: int) -> list:
        """Per image the ``k`` patches of highest objectness, in patch order, with what the class
        head needs to score them against any prompt later (``candidate_logits``); torch tensors on
        the model's device (``Candidates.to_host`` converts)."""
        from autolabel.candidates import Candidates
        from autolabel.errors import ConfigError

        if not self.ranks_candidates:
            raise ConfigError(f"{self.family} has no objectness head to rank candidates by: "
                              "--keep-candidates needs an OWLv2 checkpoint (use --keep-candidates 0)")
        head = self.model.class_head
        with torch.inference_mode():
            objectness = self.model.objectness_predictor(features.image_feats)
            top = objectness.topk(min(int(k), objectness.shape[1]), dim=1).indices.sort(dim=1).values
            feats = torch.gather(features.image_feats, 1, top[..., None].expand(-1, -1, features.image_feats.shape[2]))
            # The class head's own steps (Owlv2ClassPredictionHead.forward) up to the text product.
            embeds = head.dense0(feats)
            embeds = embeds / (torch.linalg.norm(embeds, dim=-1, keepdim=True) + 1e-6)
            shift = head.logit_shift(feats)[..., 0]
            scale = head.elu(head.logit_scale(feats))[..., 0] + 1
            boxes = torch.gather(features.pred_boxes, 1, top[..., None].expand(-1, -1, 4))
        return [Candidates(top[i], boxes[i], embeds[i], shift[i], scale[i]) for i in range(len(features))]

    def score_candidates(self, candidates, text: TextQueries, min_score: float = 0.0) -> BoxScores:
        """The class head on kept candidates (``autolabel.candidates.Candidates`` of B images) as
        ``BoxScores`` for ``postprocess``. Per image, in patch order, only the candidates whose best
        logit can score above ``min_score``: post-processing keeps a box when the sigmoid of its best
        positive logit beats its class's threshold (negatives only lower it), so it would drop the
        others itself. Lists are padded to the longest with rows at the float32 minimum (score 0:
        never kept)."""
        logits = candidate_logits(candidates, text)
        boxes = torch.as_tensor(candidates.pred_boxes).cpu().float()
        if logits.ndim == 2:  # one image
            logits, boxes = logits[None], boxes[None]
        with torch.inference_mode():
            floor = _logit(min_score)
            if math.isfinite(floor):  # a hair below the threshold's logit: the exact test is post-processing's
                floor -= 1e-9 * (1 + abs(floor))
            passing = logits.max(dim=-1).values.double() > floor
            counts = passing.sum(dim=1)
            width = int(counts.max()) if len(counts) else 0
            order = torch.argsort((~passing).to(torch.uint8), dim=1, stable=True)[:, :width]  # kept first, in order
            logits = torch.gather(logits, 1, order[..., None].expand(-1, -1, logits.shape[-1]))
            boxes = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4))
            logits[torch.arange(width)[None, :] >= counts[:, None]] = torch.finfo(torch.float32).min
        return BoxScores(logits, boxes)


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


_WIDEN_ROWS = 4096  # fp16 candidates widened to float32 at a time: the chunk stays in the CPU's caches


def candidate_logits(candidates, text: TextQueries) -> torch.Tensor:
    """The class head's ``(..., K, Q)`` float32 logits, on the host, of kept candidates
    (``autolabel.candidates.Candidates`` of one image or a batch) against encoded prompts, computed as
    ``Owlv2ClassPredictionHead.forward`` does: normalised dot product, plus shift, times scale, padding
    queries at the float32 minimum. fp16 embeddings are widened chunk by chunk (one matrix product each)."""
    queries = text.embeds.detach().float().cpu()
    queries = queries / (torch.linalg.norm(queries, dim=-1, keepdim=True) + 1e-6)
    embeds = torch.as_tensor(candidates.class_embeds).cpu()
    flat = embeds.reshape(-1, embeds.shape[-1])
    logits = torch.empty((flat.shape[0], queries.shape[0]), dtype=torch.float32)
    widened = None if flat.dtype == torch.float32 else torch.empty((min(_WIDEN_ROWS, len(flat)), flat.shape[1]))
    with torch.inference_mode():
        for start in range(0, len(flat), _WIDEN_ROWS):
            rows = flat[start:start + _WIDEN_ROWS]
            if widened is not None:
                rows = widened[: len(rows)].copy_(rows)
            torch.mm(rows, queries.T, out=logits[start:start + len(rows)])
        logits = logits.reshape(*embeds.shape[:-1], queries.shape[0])
        logits += torch.as_tensor(candidates.logit_shift).cpu()[..., None]
        logits *= torch.as_tensor(candidates.logit_scale).cpu()[..., None]
        logits[..., ~text.mask.detach().cpu().bool()] = torch.finfo(torch.float32).min
    return logits


def _logit(probability: float) -> float:
    """The logit whose sigmoid is ``probability`` (infinite at 0 and 1)."""
    if probability <= 0.0:
        return -math.inf
    if probability >= 1.0:
        return math.inf
    return math.log(probability) - math.log1p(-probability)
