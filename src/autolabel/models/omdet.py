"""OmDet-Turbo behind the ``Detector`` protocol.

Its image side (Swin backbone + hybrid encoder) does not see the text, so ``encode_images`` runs it
once per image; the prompts enter only in the decoder (``score``). Each of our prompts is one of its
"classes"; the task prompt is the processor's default, "Detect cat, remote control.". Class and task
embeddings are computed once per prompt list (cached). Post-processing follows transformers': every
(box, prompt) pair is a candidate, the best ``N`` pairs are kept (N = number of queries), then the
thresholds and per-class NMS (``DetectConfig.nms_iou``, 0.5 like the recipe). Negative prompts are
more of its classes: a (box, prompt) pair is dropped before that selection when the same box scores
a negative of the prompt's class higher than the class's best prompt (``postprocess.suppress_negatives``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from autolabel.detections import Detections
from autolabel.errors import ModelLoadError
from autolabel.geometry import Size
from autolabel.models.grounding_dino import FUSION_ATTENTION, CanvasPreprocessor, boxes_to_pixels
from autolabel.models.loaded import LoadedDetector
from autolabel.models.loading import load_pretrained
from autolabel.models.postprocess import BoxScores, per_image, thresholded

MODEL_TYPE = "omdet-turbo"
TEXT_TOKENS = 77  # the processor's padding and truncation length


@dataclass(frozen=True)
class OmDetText:
    """Encoded prompts: ``class_features`` ``(Q, 1, D)``, ``task_features`` ``(T, 1, D)``,
    ``task_mask`` ``(1, T)``, as the model's ``get_language_embedding`` returns them for one image."""

    queries: tuple[str, ...]
    class_features: torch.Tensor
    task_features: torch.Tensor
    task_mask: torch.Tensor


@dataclass
class OmDetFeatures:
    """Prompt-independent encoder outputs of B images (one tensor per feature level)."""

    states: list[torch.Tensor]

    def __len__(self) -> int:
        return self.states[0].shape[0]


def task_prompt(queries) -> str:
    """The processor's default task for these classes."""
    return f"Detect {', '.join(queries)}."


class OmDetTurboDetector(LoadedDetector):
    """OmDet-Turbo behind ``models.base.Detector``; no per-image state."""

    family = "OmDet-Turbo"
    supports_negatives = True
    attention = FUSION_ATTENTION

    @classmethod
    def checkpoint_classes(cls, name_or_path: str) -> tuple:
        from transformers import AutoConfig, AutoProcessor, OmDetTurboForObjectDetection

        config = load_pretrained(AutoConfig, name_or_path, "the OmDet-Turbo config")
        if config.model_type != MODEL_TYPE:
            raise ModelLoadError(f"cannot load OmDet-Turbo from {name_or_path!r}: its model type is "
                                 f"{config.model_type!r}, not {MODEL_TYPE!r}")
        return OmDetTurboForObjectDetection, AutoProcessor

    @classmethod
    def make_preprocessor(cls, image_processor, exact: bool):
        return CanvasPreprocessor(image_processor, draft=not exact)

    def compile_vision(self, **options) -> None:
        """``torch.compile`` the image backbone (opt-in; inputs have one fixed size)."""
        self._compile(self.model, "vision_backbone", dynamic=False, **options)

    # -- text ---------------------------------------------------------------------------------------

    def _encode_text(self, key: tuple[str, ...]) -> OmDetText:
        """Class and task embeddings of the prompts (``encode_text`` caches them)."""
        tokenize = self.processor.tokenizer
        options = dict(padding="max_length", truncation=True, max_length=TEXT_TOKENS, return_tensors="pt")
        classes = tokenize(list(key), **options).to(self.device)
        task = tokenize([task_prompt(key)], **options).to(self.device)
        with torch.inference_mode():
            class_features, task_features, task_mask = self.model.get_language_embedding(
                classes["input_ids"], classes["attention_mask"], task["input_ids"], task["attention_mask"],
                torch.tensor([len(key)], device=self.device))
        return OmDetText(key, class_features, task_features, task_mask)

    # -- images -------------------------------------------------------------------------------------

    def encode_images(self, pixel_values: torch.Tensor) -> OmDetFeatures:
        """Backbone and hybrid encoder (prompt independent)."""
        values = torch.nan_to_num(pixel_values.to(self.device), nan=0.0).to(self.dtype)
        with torch.inference_mode():
            encoded = self.model.encoder(self.model.vision_backbone(values), return_dict=True)
        return OmDetFeatures(list(encoded.extracted_states))

    # -- prompts x images ---------------------------------------------------------------------------

    def score(self, features: OmDetFeatures, text: OmDetText) -> BoxScores:
        """The decoder: per-box logits for every prompt."""
        b = len(features)
        with torch.inference_mode():
            outputs = self.model.decoder(
                features.states, text.class_features.expand(-1, b, -1), text.task_features.expand(-1, b, -1),
                text.task_mask.expand(b, -1), return_dict=True)
        return BoxScores(outputs.decoder_classes[-1].float(), outputs.decoder_coords[-1].float())

    def postprocess(self, scores: BoxScores, sizes: list[Size], ontology, config) -> list[Detections]:
        """Detections of the first ``len(sizes)`` images (a padded batch has more)."""
        return per_image(scores, sizes, ontology, config, pair_logits_to_detections)


def pair_logits_to_detections(logits: np.ndarray, pred_boxes: np.ndarray, size: Size, ontology,
                              config) -> Detections:
    """One image's ``(N, Q)`` logits and ``(N, 4)`` boxes -> Detections: the best ``N`` (box,
    prompt) pairs (a box may carry several classes), per-class thresholds, boxes in original pixels
    clipped to the image, then ``filter_detections`` (NMS)."""
    from scipy.special import expit

    num_boxes, num_queries = logits.shape
    flat = logits.reshape(-1)
    top = np.argsort(-flat, kind="stable")[:num_boxes]
    box_index, query = np.divmod(top, num_queries)
    scores = expit(flat[top].astype(np.float64))
    return thresholded(scores, query, boxes_to_pixels(pred_boxes[box_index], size), size, ontology, config)
