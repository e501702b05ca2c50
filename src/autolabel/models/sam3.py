"""SAM 3: text prompts -> boxes and instance masks from one model; and the SAM 3 tracker, SAM2's
box -> mask API with SAM 3 weights.

``Sam3Model.forward`` runs the vision tower, the text tower and a DETR head per (image, prompt)
pair. We split it at the same seams (``get_vision_features`` once per image, ``get_text_features``
once per prompt list, then ``forward(vision_embeds=, text_embeds=)`` for every pair), so outputs
equal the plain recipe while a batch reuses one text encoding and a cached image can be re-queried
with new prompts without the backbone.

Every prompt of ``Ontology.queries`` gets its own ``num_queries`` candidates (200 for the released
model), each scored ``sigmoid(logit) * sigmoid(presence)`` as ``post_process_instance_segmentation``
does. The candidates of all prompts are pooled, each keeping its prompt, so per-class thresholds,
NMS and prompt ids work as for OWLv2 (``pipeline.filter_detections``).

Geometry: the processor stretches every image to a square (1008 px) without padding; boxes come out
normalised ``xyxy`` and scale per axis; masks (``4 / patch_size`` of the square, 288 px) are
stretched back per axis. Masks are upsampled only inside the region where they can pass the
threshold, with ATen's bilinear weights, so they equal the recipe's without full-frame floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from autolabel.detections import Detections
from autolabel.geometry import Size, clip_boxes
from autolabel.models.loaded import LoadedDetector
from autolabel.models.masks import encode_upsampled
from autolabel.models.preprocess import stretch_preprocessor
from autolabel.models.prompts import TruncationWarnings
from autolabel.models.sam2 import Sam2Segmenter


@dataclass(frozen=True)
class Sam3Prompts:
    """Encoded prompts: ``features`` ``(Q, L, D)`` projected text features, ``mask`` ``(Q, L)``
    (1: token, 0: padding), on the detector's device."""

    queries: tuple[str, ...]
    features: torch.Tensor
    mask: torch.Tensor


@dataclass
class Sam3ImageFeatures:
    """Prompt-independent vision outputs of B images: the FPN levels (``(B, C, h, w)`` each, finest
    first) and their position encodings, as ``get_vision_features`` returns them."""

    fpn_hidden_states: tuple[torch.Tensor, ...]
    fpn_position_encoding: tuple[torch.Tensor, ...]

    def __len__(self) -> int:
        return self.fpn_hidden_states[0].shape[0]

    def select(self, images: torch.Tensor):
        """The vision outputs of ``images`` (indices, repeats allowed) as ``forward`` takes them."""
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        return Sam3VisionEncoderOutput(
            fpn_hidden_states=tuple(level.index_select(0, images) for level in self.fpn_hidden_states),
            fpn_position_encoding=tuple(level.index_select(0, images) for level in self.fpn_position_encoding),
        )


@dataclass
class Sam3Scores:
    """``Sam3Detector.score`` output for B images and Q prompts with N candidates each, on the
    model's device: ``scores`` (B, Q, N) float32 (instance x presence), ``boxes`` (B, Q, N, 4)
    normalised ``xyxy``, ``mask_logits`` (B, Q, N, h, w) in the model's dtype."""

    scores: torch.Tensor
    boxes: torch.Tensor
    mask_logits: torch.Tensor


class Sam3Detector(LoadedDetector):
    """SAM 3 behind the ``models.base.Detector`` protocol; ``postprocess`` returns masks too, so
    segment mode needs no second model. Holds no per-image state. Loads ``model_type`` sam3, or
    sam3_video as facebook/sam3 is published (its detector half)."""

    family = "SAM 3"
    yields_masks = True
    # Each (image, prompt) pair holds N low-res masks (200 x 288 x 288 floats, ~66 MB, for the
    # released model) until post-processing; pairs are decoded this many at a time.
    max_pairs_per_call = 16
    mask_threshold = 0.5  # on sigmoid(mask logit), post_process_instance_segmentation's default

    def __init__(self, model, processor, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 exact: bool = False):
        super().__init__(model, processor, name, device, dtype, exact)
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)
        self._truncation = TruncationWarnings(processor.tokenizer, self.max_text_tokens)

    @classmethod
    def checkpoint_classes(cls, name_or_path: str) -> tuple:
        from transformers import Sam3Model, Sam3Processor

        return Sam3Model, Sam3Processor

    make_preprocessor = staticmethod(stretch_preprocessor)

    @property
    def image_size(self) -> int:
        """Side of the square the model sees (1008 for the released model)."""
        return int(self.model.config.vision_config.backbone_config.image_size)

    # -- text ---------------------------------------------------------------------------------------

    def _encode_text(self, key: tuple[str, ...]) -> Sam3Prompts:
        """Projected text features of the prompts (``encode_text`` caches them); tokens as
        ``Sam3Processor`` makes them (padded to 32), cut at 32 where it would fail."""
        if not key:
            raise ValueError("no prompts to encode")
        self._truncation.check(key)
        tokens = self.processor.tokenizer(
            list(key), padding="max_length", truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            features = self.model.get_text_features(**tokens).pooler_output
        return Sam3Prompts(key, features, tokens["attention_mask"])

    # -- images -------------------------------------------------------------------------------------

    def compile_vision(self, **options) -> None:
        """``torch.compile`` the vision tower (opt-in; static shapes at a given batch size)."""
        self._compile(self.model, "vision_encoder", dynamic=False, **options)

    def encode_images(self, pixel_values: torch.Tensor) -> Sam3ImageFeatures:
        """The vision tower and FPN neck, prompt independent."""
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            out = self.model.get_vision_features(pixel_values=pixel_values)
        return Sam3ImageFeatures(tuple(out.fpn_hidden_states), tuple(out.fpn_position_encoding))

    # -- prompts x images ---------------------------------------------------------------------------

    def score(self, features: Sam3ImageFeatures, text: Sam3Prompts) -> Sam3Scores:
        """The DETR head and mask decoder for every (image, prompt) pair."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        b, q = len(features), len(text.queries)
        pairs = torch.arange(b * q, device=text.features.device)
        chunks = []
        for start in range(0, b * q, self.max_pairs_per_call):
            chunk = pairs[start : start + self.max_pairs_per_call]
            images, prompts = chunk // q, chunk % q
            with torch.inference_mode():
                out = self.model(
                    vision_embeds=features.select(images),
                    text_embeds=BaseModelOutputWithPooling(pooler_output=text.features.index_select(0, prompts)),
                    attention_mask=text.mask.index_select(0, prompts),
                )
                # As post_process_instance_segmentation scores a candidate.
                scores = out.pred_logits.float().sigmoid() * out.presence_logits.float().sigmoid()
            chunks.append((scores, out.pred_boxes.float(), out.pred_masks))
        scores, boxes, masks = (torch.cat(parts) if len(parts) > 1 else parts[0] for parts in zip(*chunks))
        return Sam3Scores(
            scores.reshape(b, q, *scores.shape[1:]),
            boxes.reshape(b, q, *boxes.shape[1:]),
            masks.reshape(b, q, *masks.shape[1:]),
        )

    def postprocess(self, scores: Sam3Scores, sizes: list[Size], ontology, config) -> list[Detections]:
        """Detections with masks of the first ``len(sizes)`` images (a padded batch has more)."""
        return [self._postprocess_image(scores, i, Size(*size), ontology, config) for i, size in enumerate(sizes)]

    def _postprocess_image(self, scores: Sam3Scores, index: int, size: Size, ontology, config) -> Detections:
        from autolabel.pipeline import filter_detections

        width, height = size
        image_scores = scores.scores[index].cpu().numpy()  # (Q, N)
        prompt_ids = np.repeat(np.arange(image_scores.shape[0]), image_scores.shape[1])
        class_ids = ontology.query_class_ids[prompt_ids]
        flat = image_scores.reshape(-1)
        keep = np.flatnonzero(flat.astype(np.float64) > ontology.thresholds(config.threshold)[class_ids])
        boxes = candidate_boxes_to_pixels(scores.boxes[index].reshape(-1, 4)[keep].cpu(), width, height)
        # The candidate's index rides in ``ids`` through filtering, so only survivors get masks.
        dets = Detections(clip_boxes(boxes, width, height).astype(np.float32), flat[keep], class_ids[keep],
                          prompt_ids[keep], ids=keep)
        dets = filter_detections(dets, size, config)
        logits = scores.mask_logits[index].reshape(-1, *scores.mask_logits.shape[-2:])
        chosen = torch.as_tensor(dets.ids, device=logits.device)
        masks = encode_upsampled(logits.index_select(0, chosen).cpu().float().sigmoid(), size, self.mask_threshold)
        return Detections(dets.xyxy, dets.scores, dets.class_ids, dets.prompt_ids, masks)


def candidate_boxes_to_pixels(boxes: torch.Tensor, width: int, height: int) -> np.ndarray:
    """``(N, 4)`` float32 normalised ``xyxy`` -> pixels of the original image, per axis (the
    processor stretches without padding), in float32 as the recipe's ``_scale_boxes``."""
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    return (boxes.float() * scale).numpy()


# -- the SAM 3 tracker: box prompts -> masks ------------------------------------------------------


class Sam3TrackerSegmenter(Sam2Segmenter):
    """``Sam3TrackerModel`` behind the ``models.base.Segmenter`` protocol: SAM2's API (stretch to
    the square, boxes scaled per axis, one embedding per image) with SAM 3 weights, so everything
    but loading is ``Sam2Segmenter``'s."""

    family = "SAM 3 tracker"

    @classmethod
    def checkpoint_classes(cls, name_or_path: str) -> tuple:
        """``model_type`` sam3_tracker (or the tracker half of sam3_video)."""
        from transformers import Sam3TrackerModel, Sam3TrackerProcessor

        return Sam3TrackerModel, Sam3TrackerProcessor
