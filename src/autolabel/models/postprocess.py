"""Raw scores of the box-and-logit detectors (OWLv2, OWL-ViT, Grounding DINO, OmDet-Turbo) -> final
``Detections``: the steps they share, as transformers' post-processing computes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from autolabel.detections import Detections
from autolabel.geometry import Size, clip_boxes


@dataclass
class BoxScores:
    """A detector's ``score`` output for B images: ``logits`` ``(B, N, Q)`` per candidate and prompt
    and ``pred_boxes`` ``(B, N, 4)`` normalised ``cx, cy, w, h``, on the model's device (possibly
    still being computed)."""

    logits: torch.Tensor
    pred_boxes: torch.Tensor


def per_image(scores: BoxScores, sizes: list[Size], ontology, config, to_detections: Callable) -> list[Detections]:
    """Detections of the first ``len(sizes)`` images (a padded batch has more):
    ``to_detections(logits, pred_boxes, size, ontology, config)`` on each one's float32 arrays."""
    n = len(sizes)
    logits = scores.logits[:n].float().cpu().numpy()
    boxes = scores.pred_boxes[:n].float().cpu().numpy()
    return [to_detections(logits[i], boxes[i], size, ontology, config) for i, size in enumerate(sizes)]


def best_prompt(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, Q)`` logits -> per candidate the prompt with the highest logit and the sigmoid of that
    logit in float64 (without overflow warnings for very negative logits)."""
    from scipy.special import expit

    best = logits.argmax(axis=1)
    return best, expit(np.take_along_axis(logits, best[:, None], axis=1)[:, 0].astype(np.float64))


def thresholded(scores: np.ndarray, prompt_ids: np.ndarray, boxes_xyxy: np.ndarray, size: Size, ontology,
                config) -> Detections:
    """Candidates (float64 ``scores``, their prompts, ``xyxy`` pixel boxes) above their class's
    threshold, boxes clipped to the image, then ``filter_detections`` (empty boxes, NMS, the cap).
    Thresholds compare in float64; the record keeps float32 scores like the model's boxes."""
    from autolabel.pipeline import filter_detections

    class_ids = ontology.query_class_ids[prompt_ids]
    keep = scores > ontology.thresholds(config.threshold)[class_ids]
    boxes = clip_boxes(boxes_xyxy[keep], *size)
    dets = Detections(boxes, scores[keep].astype(np.float32), class_ids[keep], prompt_ids[keep])
    return filter_detections(dets, size, config)
