"""OWLv2 forward passes with gradients, for training: the transformers split API that
``Owlv2Detector`` runs under ``inference_mode`` (``image_embedder`` -> ``box_predictor`` /
``class_predictor``, ``owlv2.get_text_features``), so the trained path is the inference path.

Parameter groups: ``vision`` (tower + the layer norm after it), ``text`` (tower + projection),
``heads`` (class and box). The objectness head and the unused CLIP projections stay frozen.
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
    """Model input exactly as inference makes it, cloned out of ``inference_mode`` for autograd.

    ``original_sizes``: the full-resolution (width, height) of images decoded smaller; those go
    through the detector's own preprocessor, as draft-decoded photos do at inference (unless it
    cannot reproduce the processor's settings); full-size images through the stock processor.
    """
    from autolabel.models.base import model_inputs
    from autolabel.models.preprocess import StockPreprocessor

    stock = StockPreprocessor(detector.processor.image_processor)
    if original_sizes is not None and any(tuple(o) != im.size for o, im in zip(original_sizes, images)):
        try:
            return model_inputs(detector.preprocessor, images, [tuple(o) for o in original_sizes],
                                detector.device).clone()
        except ValueError:
            pass
    return model_inputs(stock, images, None, detector.device).clone()


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
    """(U, D) unique embeddings and per-image indices into them -> (B, Qmax, D) embeddings
    (padding repeats the first) and a (B, Qmax) bool mask, False on padding."""
    qmax = max(1, max(len(ix) for ix in index))
    idx = torch.zeros((len(index), qmax), dtype=torch.long)
    mask = torch.zeros((len(index), qmax), dtype=torch.bool)
    for i, ix in enumerate(index):
        idx[i, : len(ix)] = torch.as_tensor(ix, dtype=torch.long)
        mask[i, : len(ix)] = True
    idx = idx.to(embeds.device)
    return embeds[idx], mask.to(embeds.device)


class QueryEncoder:
    """Query embeddings for training: with gradients when the text tower trains, else computed
    once per text and kept (a frozen tower gives the same embedding every step)."""

    def __init__(self, model, tokenizer, device, *, trains_text: bool):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.trains_text = trains_text
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        if self.trains_text:
            return encode_queries(self.model, self.tokenizer, texts, self.device)
        missing = [t for t in texts if t not in self.cache]
        if missing:
            with torch.no_grad():
                for start in range(0, len(missing), 256):
                    chunk = missing[start : start + 256]
                    embeds = encode_queries(self.model, self.tokenizer, chunk, self.device).float()
                    self.cache.update(zip(chunk, embeds))
        return torch.stack([self.cache[t] for t in texts])


def blend_with_base(trainable: dict[str, torch.nn.Parameter], base_model: str, alpha: float) -> None:
    """Weight-space ensemble (WiSE-FT), in place: alpha * fine-tuned + (1 - alpha) * ``base_model``'s weights."""
    from transformers import Owlv2ForObjectDetection

    from autolabel.models.loading import load_pretrained

    base = load_pretrained(Owlv2ForObjectDetection, base_model, "the OWLv2 model", dtype=torch.float32)
    base_state = base.state_dict()
    with torch.no_grad():
        for name, p in trainable.items():
            p.mul_(alpha).add_(base_state[name].to(p.device, p.dtype), alpha=1 - alpha)
