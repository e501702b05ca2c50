"""Grounding DINO, MM-Grounding-DINO and LLMDet (text-grounded DETR) behind the ``Detector`` protocol.

The model reads one string of phrases, "a cat. a remote control." (lower-cased, each ending with
"."), at most ``max_text_len`` (256) tokens, and scores each of its box candidates against every
text token. We give each of our prompts a score per candidate: the highest token logit inside that
prompt's own character span, found through the tokenizer's offsets, so sub-word labels are never
decoded back into text (decoding is how "catfish" gets reported as "cat"). Ontologies longer than
the token limit are split into several forward passes; every pass adds its own candidates.

Image features are fused with the text inside the encoder, so nothing past the preprocessed pixels
is prompt independent: ``encode_images`` returns the batch's pixels and extents, ``score`` runs the model.
Two things in that forward do not depend on the image and are not redone per batch: the BERT text
backbone (fed only the tokens and masks made from them: ``TextBackboneCache`` runs it once per
text) and, on the CPU, transformers' deformable attention is replaced by an equal, cheaper gather
(``models.deformable``).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from autolabel.detections import Detections
from autolabel.errors import ConfigError, ModelLoadError
from autolabel.geometry import Size
from autolabel.models.deformable import use_gathered_deformable_attention
from autolabel.models.loaded import LoadedDetector
from autolabel.models.loading import load_pretrained
from autolabel.models.postprocess import BoxScores, best_prompt, per_image, thresholded
from autolabel.models.precision import ATTENTION
from autolabel.models.preprocess import draft_side


MODEL_TYPES = ("grounding-dino", "mm-grounding-dino")
_DELIMITERS = (".", "?")  # the model ends a phrase at these tokens


@dataclass(frozen=True)
class PromptPass:
    """The text of one forward pass: ``tokens`` (``input_ids``, ``attention_mask``,
    ``token_type_ids``, each ``(1, T)``), and per prompt in it, its index in the query list and its
    token span ``[start, end)``."""

    text: str
    tokens: dict
    query_index: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class GroundedText:
    """Encoded prompts: one ``PromptPass`` per forward pass the token limit requires."""

    queries: tuple[str, ...]
    passes: tuple[PromptPass, ...]


@dataclass
class GroundingInputs:
    """``encode_images`` output: ``pixel_values`` ``(B, 3, h, w)`` (each image top-left, zero
    padding) and each image's ``extents`` ``(height, width)`` in them."""

    pixel_values: torch.Tensor
    extents: list[tuple[int, int]]

    def __len__(self) -> int:
        return self.pixel_values.shape[0]


def phrase(prompt: str) -> str:
    """A prompt as one phrase of the model's text: lower case, without the delimiters that would
    split it into two phrases."""
    for delimiter in _DELIMITERS:
        prompt = prompt.replace(delimiter, " ")
    return " ".join(prompt.lower().split())


def output_size(image_processor, size: Size) -> tuple[int, int]:
    """``(height, width)`` the processor resizes an image of ``size`` to (its ``resize`` rule)."""
    from transformers.models.grounding_dino.image_processing_grounding_dino import (
        get_image_size_for_max_height_width, get_size_with_aspect_ratio)

    rule = image_processor.size
    hw = (size.height, size.width)
    if rule.shortest_edge and rule.longest_edge:
        return tuple(get_size_with_aspect_ratio(hw, rule.shortest_edge, rule.longest_edge))
    if rule.max_height and rule.max_width:
        return tuple(get_image_size_for_max_height_width(hw, rule.max_height, rule.max_width))
    return int(rule.height), int(rule.width)


class CanvasPreprocessor:
    """The processor's own resize, rescale and normalisation (a torchvision image processor, so it
    runs on tensors on any device), its result placed top-left on a fixed ``(3, C, C)`` canvas (C:
    the largest side the processor can output) filled with NaN, so images of any aspect ratio stack
    into one batch and ``encode_images`` recovers each one's extent. ``draft``: decode JPEGs reduced
    to at least twice the input size (the fast path); else the full image on the CPU (exact)."""

    def __init__(self, image_processor, draft: bool):
        self.image_processor = image_processor
        self.draft = draft
        self.on_device = draft
        rule = image_processor.size
        sides = (rule.longest_edge, rule.max_height, rule.max_width, rule.height, rule.width)
        self.canvas = max((int(s) for s in sides if s), default=0)
        if not self.canvas:
            raise ModelLoadError(f"processor size {dict(rule)} has no largest side; cannot batch its inputs")

    def decode_side(self, size: Size) -> int | None:
        if not self.draft:
            return None
        height, width = output_size(self.image_processor, Size(*size))
        return draft_side(*size, min_long=2 * max(height, width), min_short=2 * min(height, width))

    def __call__(self, pixels: torch.Tensor, size: Size, device="cpu") -> torch.Tensor:
        if not self.draft and (int(pixels.shape[1]), int(pixels.shape[0])) != tuple(size):
            raise ValueError("the exact preprocessor needs the original pixels, not a reduced decode")
        values = self.image_processor(images=[pixels], return_tensors="pt", device=device)["pixel_values"][0]
        canvas = torch.full((3, self.canvas, self.canvas), math.nan, dtype=torch.float32, device=values.device)
        canvas[:, : values.shape[1], : values.shape[2]] = values
        return canvas.to(device)


class TextBackboneCache(torch.nn.Module):
    """Stands in for the model's text backbone: the forward feeds it the tokens, the attention mask
    and positions derived from them, and nothing from the image, so its output for one text is the
    same for every image. A batch whose rows all hold one text runs the backbone once, on one row,
    and gets that output for every row; the last ``size`` texts are kept. Anything else (rows that
    differ, tuple outputs) goes to the backbone as before."""

    def __init__(self, backbone: torch.nn.Module, size: int = 8):
        super().__init__()
        self.backbone = backbone
        self.size = size
        self._outputs: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, return_dict=True,
                **kwargs):
        inputs = (input_ids, attention_mask, token_type_ids, position_ids)
        if not return_dict or kwargs or any(t is None or not bool((t == t[:1]).all()) for t in inputs):
            return self.backbone(input_ids, attention_mask, token_type_ids, position_ids, return_dict=return_dict,
                                 **kwargs)
        from transformers.modeling_outputs import BaseModelOutput

        key = tuple((tuple(t.shape[1:]), t.dtype, str(t.device), t[0].cpu().numpy().tobytes()) for t in inputs)
        with self._lock:
            hidden = self._outputs.get(key)
            if hidden is not None:
                self._outputs.move_to_end(key)
        if hidden is None:
            first = [t[:1] for t in inputs]
            hidden = self.backbone(*first, return_dict=True).last_hidden_state
            with self._lock:
                self._outputs[key] = hidden
                while len(self._outputs) > self.size:
                    self._outputs.popitem(last=False)
        return BaseModelOutput(last_hidden_state=hidden.expand(input_ids.shape[0], *hidden.shape[1:]))


# Transformers has no SDPA for the fusion model itself (eager there), while the text and image
# backbones keep SDPA: BERT's eager attention in transformers 5.24 does not apply the model's
# per-phrase text mask (SDPA does, and the plain recipe uses it), so "eager everywhere" would change
# the scores.
FUSION_ATTENTION = {"": "eager", "text_config": ATTENTION, "backbone_config": ATTENTION}


class GroundingDinoDetector(LoadedDetector):
    """Grounding DINO family behind ``models.base.Detector``; no per-image state. ``exact``: full
    decodes on the CPU (the plain recipe's pixels)."""

    family = "Grounding DINO"
    supports_negatives = True  # the shared post-processing compares per-phrase scores of a candidate
    attention = FUSION_ATTENTION

    def __init__(self, model, processor, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 exact: bool = False):
        super().__init__(model, processor, name, device, dtype, exact)
        self.max_text_tokens = int(model.config.max_text_len)
        self.model.model.text_backbone = TextBackboneCache(self.model.model.text_backbone)
        on_cpu = str(device).startswith("cpu")
        if on_cpu:  # measured there (BENCHMARKS.md); GPUs keep transformers' own
            use_gathered_deformable_attention(self.model)
        # On the CPU a forward of two images costs more than two of one (the fusion encoder's
        # activations outgrow the caches, BENCHMARKS.md), so images go one at a time there.
        self.images_per_forward = 1 if on_cpu else None

    @classmethod
    def checkpoint_classes(cls, name_or_path: str) -> tuple:
        """Grounding DINO or MM-Grounding-DINO (LLMDet), by the checkpoint's model type."""
        from transformers import (AutoConfig, AutoProcessor, GroundingDinoForObjectDetection,
                                  MMGroundingDinoForObjectDetection)

        config = load_pretrained(AutoConfig, name_or_path, "the Grounding DINO config")
        classes = {"grounding-dino": GroundingDinoForObjectDetection,
                   "mm-grounding-dino": MMGroundingDinoForObjectDetection}
        if config.model_type not in classes:
            raise ModelLoadError(f"cannot load Grounding DINO from {name_or_path!r}: its model type is "
                                 f"{config.model_type!r}, not one of {', '.join(MODEL_TYPES)}")
        return classes[config.model_type], AutoProcessor

    @classmethod
    def make_preprocessor(cls, image_processor, exact: bool):
        return CanvasPreprocessor(image_processor, draft=not exact)

    def compile_vision(self, **options) -> None:
        """``torch.compile`` the image backbone (opt-in; input sizes vary, so shapes are dynamic)."""
        self._compile(self.model.model, "backbone", dynamic=True, **options)

    # -- text ---------------------------------------------------------------------------------------

    def _encode_text(self, key: tuple[str, ...]) -> GroundedText:
        """Split the prompts into passes within the token limit and find each prompt's token span
        (``encode_text`` caches them)."""
        return GroundedText(key, tuple(self._pass(key, group) for group in self._groups(key)))

    def _groups(self, queries: tuple[str, ...]) -> list[list[int]]:
        """Query indices per pass: consecutive prompts while the text stays within the limit
        ([CLS] and [SEP], then each phrase's tokens and its ".")."""
        tokenizer = self.processor.tokenizer
        groups: list[list[int]] = []
        used = self.max_text_tokens
        for i, query in enumerate(queries):
            cost = len(tokenizer(phrase(query), add_special_tokens=False)["input_ids"]) + 1
            if cost + 2 > self.max_text_tokens:
                raise ConfigError(f"prompt {query!r} is {cost - 1} tokens; this model reads at most "
                                  f"{self.max_text_tokens - 3} per prompt")
            if used + cost > self.max_text_tokens:
                groups.append([])
                used = 2
            groups[-1].append(i)
            used += cost
        return groups

    def _pass(self, queries: tuple[str, ...], group: list[int]) -> PromptPass:
        phrases = [phrase(queries[i]) for i in group]
        text = ". ".join(phrases) + "."  # the processor's own joining of a label list
        bounds, start = [], 0
        for p in phrases:
            bounds.append((start, start + len(p)))
            start += len(p) + 2
        encoding = self.processor.tokenizer(text, return_offsets_mapping=True, return_token_type_ids=True,
                                            return_tensors="pt")
        offsets = encoding.pop("offset_mapping")[0].tolist()
        spans = []
        for query_index, (lo, hi) in zip(group, bounds):
            inside = [t for t, (a, b) in enumerate(offsets) if b > a and a >= lo and b <= hi]
            if not inside:
                raise ConfigError(f"prompt {queries[query_index]!r} has no tokens this model can read")
            spans.append((inside[0], inside[-1] + 1))
        tokens = {k: v.to(self.device) for k, v in encoding.items()}
        return PromptPass(text, tokens, tuple(group), tuple(spans))

    # -- images -------------------------------------------------------------------------------------

    def encode_images(self, pixel_values: torch.Tensor) -> GroundingInputs:
        """``(B, 3, C, C)`` canvases -> the batch cropped to its largest image, and each image's extent."""
        pixel_values = pixel_values.to(self.device)
        valid = ~torch.isnan(pixel_values[:, 0])
        heights = valid.any(dim=2).sum(dim=1).tolist()
        widths = valid.any(dim=1).sum(dim=1).tolist()
        values = torch.nan_to_num(pixel_values[:, :, : max(heights), : max(widths)], nan=0.0)
        return GroundingInputs(values.to(self.dtype), list(zip(heights, widths)))

    # -- prompts x images ---------------------------------------------------------------------------

    def score(self, features: GroundingInputs, text: GroundedText) -> BoxScores:
        """Every pass over the batch; per candidate, each prompt's best token logit in its span.
        Images run in groups of equal extent, unpadded: padding changes a DETR's candidates, and an
        image must get the same detections whatever batch it is in; at most ``images_per_forward``
        images per forward (None: the whole group)."""
        b = len(features)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, extent in enumerate(features.extents):
            groups.setdefault(extent, []).append(i)
        step = self.images_per_forward or b
        forwards = [(extent, members[start : start + step]) for extent, members in groups.items()
                    for start in range(0, len(members), step)]
        all_logits, all_boxes = [], []
        with torch.inference_mode():
            for prompt_pass in text.passes:
                token_logits = boxes = None
                for (height, width), members in forwards:
                    values = features.pixel_values[members, :, :height, :width]
                    tokens = {k: v.expand(len(members), -1) for k, v in prompt_pass.tokens.items()}
                    mask = torch.ones_like(values[:, 0], dtype=torch.long)
                    outputs = self.model(pixel_values=values, pixel_mask=mask, **tokens)
                    if token_logits is None:
                        token_logits = outputs.logits.new_empty((b, *outputs.logits.shape[1:]), dtype=torch.float32)
                        boxes = outputs.pred_boxes.new_empty((b, *outputs.pred_boxes.shape[1:]), dtype=torch.float32)
                    token_logits[members] = outputs.logits.float()
                    boxes[members] = outputs.pred_boxes.float()
                logits = torch.full((b, token_logits.shape[1], len(text.queries)), -math.inf,
                                    device=token_logits.device)
                for query_index, (start, end) in zip(prompt_pass.query_index, prompt_pass.spans):
                    logits[:, :, query_index] = token_logits[:, :, start:end].amax(dim=-1)
                all_logits.append(logits)
                all_boxes.append(boxes)
        return BoxScores(torch.cat(all_logits, dim=1), torch.cat(all_boxes, dim=1))

    def postprocess(self, scores: BoxScores, sizes: list[Size], ontology, config) -> list[Detections]:
        """Detections of the first ``len(sizes)`` images (a padded batch has more); ``logits`` are
        per prompt (``-inf`` for prompts another pass read), boxes normalised to each image."""
        return per_image(scores, sizes, ontology, config, prompt_logits_to_detections)


def prompt_logits_to_detections(logits: np.ndarray, pred_boxes: np.ndarray, size: Size, ontology,
                                config) -> Detections:
    """One image's ``(N, Q)`` per-prompt logits and ``(N, 4)`` normalised ``cx, cy, w, h`` boxes ->
    final Detections in original pixels. Score: sigmoid of the best prompt's logit, which names the
    class; per-class thresholds, then ``filter_detections`` (boxes clipped to the image, empty ones
    dropped, NMS)."""
    query, scores = best_prompt(logits)
    return thresholded(scores, query, boxes_to_pixels(pred_boxes, size), size, ontology, config)


def boxes_to_pixels(pred_boxes: np.ndarray, size: Size) -> np.ndarray:
    """``(N, 4)`` ``cx, cy, w, h`` normalised to the image -> ``xyxy`` pixels (each axis its own scale)."""
    width, height = size
    cx, cy, w, h = np.asarray(pred_boxes, dtype=np.float32).T
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return xyxy * np.array([width, height, width, height], dtype=np.float32)
