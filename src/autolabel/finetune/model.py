"""OWLv2 forward passes with gradients, for training.

``Owlv2Detector``'s methods run under ``inference_mode``; training calls the same split API of the
transformers model directly (``image_embedder`` -> ``box_predictor`` / ``class_predictor``, and
``owlv2.get_text_features`` for the queries), so the trained path is the inference path.

Parameter groups: ``vision`` (vision tower + the detection layer norm after it), ``text`` (text
tower + projection), ``heads`` (class and box heads). The objectness head and the CLIP projections
that detection never uses stay frozen.
"""

from __future__ import annotations

import torch

GROUPS = ("vision", "text", "heads")


def parameter_group(name: str) -> str | None:
    """Which training group a parameter of ``Owlv2ForObjectDetection`` belongs to (None: never trained)."""
    if name.startswith(("class_head.", "box_head.")):
        return "heads"
    if name.startswith(("owlv2.vision_model.", "layer_norm.")):
        return "vision"
    if name.startswith(("owlv2.text_model.", "owlv2.text_projection.")):
        return "text"
    return None  # objectness_head, owlv2.visual_projection, owlv2.logit_scale: unused by detection


def set_trainable(model, groups: set[str]) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """Enable gradients for the parameters of ``groups`` only; return {group: [(name, param)]}."""
    out: dict[str, list] = {g: [] for g in GROUPS}
    for name, param in model.named_parameters():
        group = parameter_group(name)
        train = group in groups
        param.requires_grad_(train)
        if train:
            out[group].append((name, param))
    return out


def preprocess(detector, images, original_sizes=None) -> torch.Tensor:
    """Model input exactly as inference makes it (``Owlv2Detector.preprocess``), as an ordinary
    tensor autograd can use (the detector may compute it under ``inference_mode``).

    ``original_sizes``: the (width, height) each image has at full resolution when it was decoded
    smaller; the detector then reproduces the processor on the full-resolution pixels, as it does
    for draft-decoded photos at inference. Detectors that cannot (an older ``preprocess``, or a
    processor with unusual settings) get the images as they are.
    """
    if original_sizes is not None and any(tuple(o) != im.size for o, im in zip(original_sizes, images)):
        try:
            return detector.preprocess(images, original_sizes=[tuple(o) for o in original_sizes]).clone()
        except (TypeError, ValueError):
            pass
    return detector.preprocess(images).clone()


def encode_images(model, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, S, S) -> image_feats (B, P, D) and feature_map (B, h, w, D), with gradients."""
    feature_map, _ = model.image_embedder(pixel_values=pixel_values)
    b, h, w, d = feature_map.shape
    return feature_map.reshape(b, h * w, d), feature_map


def encode_queries(model, tokenizer, texts: list[str], device) -> torch.Tensor:
    """(U,) texts -> (U, D) projected text embeddings, with gradients if the text tower trains.
    Tokenised as ``Owlv2Detector.encode_text`` does (max_length padding, truncation)."""
    max_len = int(model.config.text_config.max_position_embeddings)
    tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt").to(device)
    return model.owlv2.get_text_features(**tokens).pooler_output


def predict(model, image_feats: torch.Tensor, feature_map: torch.Tensor, query_embeds: torch.Tensor,
            query_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Heads on image features: (B, P, Q) logits and (B, P, 4) cxcywh boxes in the padded square."""
    pred_boxes = model.box_predictor(image_feats, feature_map)
    logits, _ = model.class_predictor(image_feats, query_embeds, query_mask)
    return logits, pred_boxes


def gather_queries(embeds: torch.Tensor, index: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image query lists from a table of unique embeddings.

    embeds: (U, D); index: for each image, indices into ``embeds``. Returns (B, Qmax, D) embeddings
    (padding rows repeat the first embedding) and a (B, Qmax) bool mask, False on padding.
    """
    qmax = max(1, max(len(ix) for ix in index))
    idx = torch.zeros((len(index), qmax), dtype=torch.long)
    mask = torch.zeros((len(index), qmax), dtype=torch.bool)
    for i, ix in enumerate(index):
        idx[i, : len(ix)] = torch.as_tensor(ix, dtype=torch.long)
        mask[i, : len(ix)] = True
    idx = idx.to(embeds.device)
    return embeds[idx], mask.to(embeds.device)
