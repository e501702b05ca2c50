"""Exemplar (visual) prompts for the OWL families (OWLv2, OWL-ViT): a box drawn on an image becomes
a query embedding, used like a text prompt's.

As transformers' image-guided detection does (``embed_image_query``): the class head's embedding of
the predicted box that best overlaps the exemplar box (IoU in the model's normalised frame;
generalised IoU when no box overlaps it at all) is the query. Several exemplars of one class average
their unit-length embeddings (the class head normalises queries, so each counts the same).
``ExemplarMemo`` keeps the embeddings computed on a loaded detector.
"""

from __future__ import annotations

import numpy as np
import torch

from autolabel.geometry import Size
from autolabel.models.memo import ModelMemo


def normalised_boxes(detector, boxes_xyxy: np.ndarray, size: Size) -> torch.Tensor:
    """``(k, 4)`` ``xyxy`` pixels of an image of ``size`` -> ``xyxy`` in the frame of the model's
    ``pred_boxes``: OWLv2 pads the image to a square (both axes by the longer side), OWL-ViT
    stretches it to one (each axis by its own side)."""
    from autolabel.models.owlvit import OwlVitDetector

    width, height = size
    if isinstance(detector, OwlVitDetector):
        scale = [width, height, width, height]
    else:
        scale = [max(width, height)] * 4
    return torch.as_tensor(np.asarray(boxes_xyxy, dtype=np.float32) / np.asarray(scale, dtype=np.float32))


def best_overlapping(pred_boxes: torch.Tensor, targets_xyxy: torch.Tensor) -> torch.Tensor:
    """``(P, 4)`` normalised ``cx, cy, w, h`` predictions, ``(k, 4)`` normalised ``xyxy`` targets ->
    ``(k,)`` the index of the prediction with the highest IoU with each target (generalised IoU for
    a target no prediction overlaps)."""
    from transformers.image_transforms import center_to_corners_format
    from transformers.models.owlvit.modeling_owlvit import box_iou, generalized_box_iou

    corners = center_to_corners_format(pred_boxes.float())
    targets = targets_xyxy.to(corners)
    ious, _ = box_iou(targets, corners)
    disjoint = (ious == 0).all(dim=1)
    if disjoint.any():
        ious[disjoint] = generalized_box_iou(targets[disjoint], corners)
    return ious.argmax(dim=1)


def exemplar_embeddings(detector, features, boxes_xyxy: np.ndarray, size: Size) -> torch.Tensor:
    """The query embeddings ``(k, D)`` (float32, not normalised) of ``k`` exemplar boxes drawn on one
    image: ``features`` are that image's ``encode_images`` output, ``boxes_xyxy`` in its pixels."""
    if len(features) != 1:
        raise ValueError(f"exemplar embeddings take the features of one image, got {len(features)}")
    with torch.inference_mode():
        _, class_embeds = detector.model.class_predictor(features.image_feats)
    best = best_overlapping(features.pred_boxes[0], normalised_boxes(detector, boxes_xyxy, size))
    return class_embeds[0, best.to(class_embeds.device)].float()


def class_query(embeddings: list[torch.Tensor]) -> torch.Tensor:
    """The ``(D,)`` embeddings of one class's exemplars -> ``(D,)``: the mean of their unit vectors."""
    return torch.nn.functional.normalize(torch.stack(embeddings).float(), dim=-1).mean(dim=0)


def with_exemplar_queries(text, positive: list[list[torch.Tensor]], negative: list[list[torch.Tensor]],
                          num_positive_text: int):
    """``TextQueries`` of the positive then negative text prompts -> the same with one exemplar
    query per class (``class_query`` of its exemplars' embeddings) in the order ``Ontology`` lays
    the columns out: positive prompts, ``positive`` classes, negative prompts, ``negative`` classes."""
    from autolabel.models.owlv2 import TextQueries

    split, dim = num_positive_text, text.embeds.shape[-1]

    def block(groups):
        rows = torch.stack([class_query(g) for g in groups]) if groups else torch.zeros((0, dim))
        return rows.to(text.embeds), torch.ones(len(groups), dtype=text.mask.dtype, device=text.mask.device)

    (pos, pos_mask), (neg, neg_mask) = block(positive), block(negative)
    names = (text.queries[:split] + tuple(f"<exemplar {i}>" for i in range(len(positive)))
             + text.queries[split:] + tuple(f"<negative exemplar {i}>" for i in range(len(negative))))
    return TextQueries(names, torch.cat([text.embeds[:split], pos, text.embeds[split:], neg]),
                       torch.cat([text.mask[:split], pos_mask, text.mask[split:], neg_mask]))


class ExemplarMemo(ModelMemo):
    """The exemplar embeddings (``embed_exemplars`` rows) computed on one detector object, by the
    exemplar's image content, box and kind: otherwise a UI would run the backbone on every exemplar
    image at every query."""

    KEPT = 256  # embeddings of a few KB each

    @staticmethod
    def key(exemplar) -> tuple:
        return exemplar.sha256, exemplar.box, exemplar.negative

    def get(self, exemplars) -> dict:
        """``{key: row}`` of the ``exemplars`` remembered."""
        return self.recall(map(self.key, exemplars))

    def put(self, rows: dict) -> None:
        self.remember(rows)
