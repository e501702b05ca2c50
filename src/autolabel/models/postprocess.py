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
    ``to_detections(logits, pred_boxes, size, ontology, config)`` on each one's float32 arrays, the
    logits of its positive columns after ``suppress_negatives``."""
    n = len(sizes)
    logits = suppress_negatives(scores.logits[:n].float().cpu().numpy(), ontology)
    boxes = scores.pred_boxes[:n].float().cpu().numpy()
    return [to_detections(logits[i], boxes[i], size, ontology, config) for i, size in enumerate(sizes)]


def suppress_negatives(logits: np.ndarray, ontology) -> np.ndarray:
    """``(..., P + M)`` logits of every candidate for the ontology's positive then negative columns
    (``Ontology.positive_class_ids``, ``negative_class_ids``) -> ``(..., P)`` positive logits, where
    a candidate that matches a negative of a class better than that class's best positive column
    gets ``-inf`` for all of that class's columns (it is not that class; it may still be another)."""
    positive_ids, negative_ids = ontology.positive_class_ids, ontology.negative_class_ids
    p = len(positive_ids)
    if logits.shape[-1] != p + len(negative_ids):
        raise ValueError(f"{logits.shape[-1]} score columns for an ontology with {p} positive and "
                         f"{len(negative_ids)} negative queries")
    positive, negative = logits[..., :p], logits[..., p:]
    if not len(negative_ids):
        return positive
    positive = positive.copy()
    for class_id in np.unique(negative_ids):
        columns = positive_ids == class_id
        beaten = negative[..., negative_ids == class_id].max(axis=-1) > positive[..., columns].max(axis=-1)
        positive[..., columns] = np.where(beaten[..., None], -np.inf, positive[..., columns])
    return positive


def best_prompt(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, Q)`` logits -> per candidate the prompt with the highest logit and the sigmoid of that
    logit in float64 (without overflow warnings for very negative logits)."""
    from scipy.special import expit

    best = logits.argmax(axis=1)
    return best, expit(np.take_along_axis(logits, best[:, None], axis=1)[:, 0].astype(np.float64))


def thresholded(scores: np.ndarray, columns: np.ndarray, boxes_xyxy: np.ndarray, size: Size, ontology,
                config) -> Detections:
    """Candidates (float64 ``scores``, their positive columns, ``xyxy`` pixel boxes) above their
    class's threshold, boxes clipped to the image, then ``filter_detections`` (empty boxes, NMS, the
    cap). A text prompt's column is its prompt id; an exemplar column has none (-1). Thresholds
    compare in float64; the record keeps float32 scores like the model's boxes."""
    from autolabel.pipeline import filter_detections

    class_ids = ontology.positive_class_ids[columns]
    prompt_ids = np.where(columns < len(ontology.query_class_ids), columns, -1)
    keep = scores > ontology.thresholds(config.threshold)[class_ids]
    boxes = clip_boxes(boxes_xyxy[keep], *size)
    dets = Detections(boxes, scores[keep].astype(np.float32), class_ids[keep], prompt_ids[keep])
    return filter_detections(dets, size, config)
