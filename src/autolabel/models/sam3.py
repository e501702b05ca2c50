"""SAM 3: text prompts -> boxes and instance masks from one model; and the SAM 3 tracker, SAM2's
box -> mask API with SAM 3 weights.

``Sam3Model.forward`` runs the vision tower, the text tower and a DETR head per (image, prompt)
pair. We split it at the same seams (``get_vision_features`` once per image, ``get_text_features``
once per prompt list, then ``forward(vision_embeds=, text_embeds=)`` for every pair), so outputs
equal the plain recipe while a batch reuses one text encoding and a cached image can be re-queried
with new prompts without the backbone.

Detect mode asks ``score(..., masks=False)``: ``forward`` has no switch to skip its mask decoder,
so the same steps run up to the DETR head (``detection_heads``, proven equal to ``forward``) and
the mask decoder, a large share of the per-pair cost, is not run.

Every prompt of ``Ontology.queries`` gets its own ``num_queries`` candidates (200 for the released
model), each scored ``sigmoid(logit) * sigmoid(presence)`` as ``post_process_instance_segmentation``
does. The candidates of all prompts are pooled, each keeping its prompt, so per-class thresholds,
NMS and prompt ids work as for OWLv2 (``pipeline.filter_detections``).

Geometry: the processor stretches every image to a square (1008 px) without padding; boxes come out
normalised ``xyxy`` and scale per axis; masks (``4 / patch_size`` of the square, 288 px) are
stretched back per axis. Masks are upsampled only inside the region where they can pass the
threshold, with ATen's bilinear weights, so they equal the recipe's without full-frame floats.

Exemplars (example boxes) are SAM 3's own box prompts. ``forward`` turns ``input_boxes`` into prompt
tokens with its geometry encoder (each box: a projection of its coordinates, ROI-pooled features of
its image and a position encoding, refined by attention over that image's features; plus a CLS
token) and appends them to the text tokens; the DETR encoder, decoder, scoring and mask decoder read
the joined sequence as one prompt. An exemplar's tokens are computed once, on its own image
(``embed_exemplars``), and used as they are on every image labelled: this is the only reading that
keeps what the encoder looked at (re-encoding the box on another image would pool unrelated
pixels), and on the exemplar's own image it is exactly the recipe. Elsewhere the tokens carry the
exemplar's appearance, and its box's position encoding as a weak prior. A class's exemplars form
one prompt column, "visual" (the text the processor gives a box-only prompt) then each exemplar's
tokens; the class's text prompts stay their own columns and its detections are the union, as for
the OWL families (``with_exemplars`` is not told which class a column is, so it cannot join them).
Several exemplars are encoded one by one (their box and CLS tokens in turn): one image's boxes may
belong to different classes, and the tokens are remembered per exemplar (``ExemplarMemo``); for one
exemplar this is the recipe, for several on the same image it differs from encoding them jointly.

Negatives are refused. SAM 3 takes negative boxes natively (label 0, mixed with the positive boxes
of one prompt), but ``with_exemplars`` receives the negative exemplars per class without knowing
which class's positive column they belong with. The shared suppression rule
(``postprocess.suppress_negatives``) compares the scores of one candidate across columns; here each
prompt decodes its own candidates (query ``i`` of two prompts is not the same object), so there is
no such comparison, for negative text prompts or negative exemplars.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from autolabel.detections import Detections
from autolabel.errors import ConfigError
from autolabel.geometry import Size, clip_boxes
from autolabel.models.loaded import LoadedDetector
from autolabel.models.masks import encode_upsampled
from autolabel.models.preprocess import stretch_preprocessor
from autolabel.models.prompts import PaddedTokenizer
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
    normalised ``xyxy``, ``mask_logits`` (B, Q, N, h, w) in the model's dtype, None when scored
    without masks."""

    scores: torch.Tensor
    boxes: torch.Tensor
    mask_logits: torch.Tensor | None


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
        self._tokenize = PaddedTokenizer(processor.tokenizer, self.max_text_tokens)

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
        tokens = self._tokenize(key, self.device)
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

    # -- exemplars (SAM 3 box prompts) --------------------------------------------------------------

    # The text the processor pairs with box prompts given without text.
    VISUAL_PROMPT = "visual"

    def embed_exemplars(self, features: Sam3ImageFeatures, boxes_xyxy: np.ndarray, size: Size) -> torch.Tensor:
        """``(k, T, D)``: per exemplar box (``xyxy`` pixels of one image of ``size``) the geometry
        encoder's tokens (the box's, then CLS) as ``forward`` makes them from ``input_boxes`` on
        that image's ``encode_images`` features; each box encoded on its own (positive label)."""
        from transformers.models.sam3.processing_sam3 import box_xyxy_to_cxcywh

        if len(features) != 1:
            raise ValueError(f"exemplar embeddings take the features of one image, got {len(features)}")
        width, height = size
        scale = np.array([width, height, width, height], dtype=np.float32)  # the processor stretches
        boxes = box_xyxy_to_cxcywh(torch.as_tensor(np.asarray(boxes_xyxy, dtype=np.float32) / scale))
        k = len(boxes)
        boxes = boxes.to(device=self.device, dtype=self.dtype).unsqueeze(1)  # one box per prompt
        ones = torch.ones((k, 1), dtype=torch.long, device=self.device)
        # forward reads every FPN level but the coarsest.
        levels = lambda states: tuple(x.expand(k, -1, -1, -1) for x in states[:-1])  # noqa: E731
        with torch.inference_mode():
            out = self.model.geometry_encoder(box_embeddings=boxes, box_mask=ones.bool(), box_labels=ones,
                                              img_feats=levels(features.fpn_hidden_states),
                                              img_pos_embeds=levels(features.fpn_position_encoding))
        return out.last_hidden_state

    def with_exemplars(self, text: Sam3Prompts | None, positive: list, negative: list,
                       num_positive_text: int) -> Sam3Prompts:
        """Encoded positive-then-negative prompts plus one prompt per class with exemplars ("visual"
        then its ``embed_exemplars`` rows), in the column order of ``Ontology``; prompts of unequal
        length padded (masked). ``text`` None: no text prompts at all."""
        if negative:
            raise ConfigError(f"negative exemplars are not supported by {self.family}: remove them "
                              "('negative: true'), or use an OWLv2 or OWL-ViT checkpoint")
        visual = self.encode_text((self.VISUAL_PROMPT,))
        rows = [(torch.cat([visual.features[0], *(r.to(visual.features) for r in group)]),
                 torch.cat([visual.mask[0], visual.mask.new_ones(sum(len(r) for r in group))]))
                for group in positive]
        split = num_positive_text
        texts, queries = ([], ()) if text is None else (list(zip(text.features, text.mask)), text.queries)
        columns = texts[:split] + rows + texts[split:]
        names = queries[:split] + tuple(f"<exemplar {i}>" for i in range(len(positive))) + queries[split:]
        length = max(len(f) for f, _ in columns)
        features = torch.stack([torch.nn.functional.pad(f, (0, 0, 0, length - len(f))) for f, _ in columns])
        mask = torch.stack([torch.nn.functional.pad(m, (0, length - len(m))) for _, m in columns])
        return Sam3Prompts(names, features, mask)

    # -- prompts x images ---------------------------------------------------------------------------

    def score(self, features: Sam3ImageFeatures, text: Sam3Prompts, masks: bool = True) -> Sam3Scores:
        """The DETR head, and with ``masks`` the mask decoder, for every (image, prompt) pair."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        b, q = len(features), len(text.queries)
        pairs = torch.arange(b * q, device=text.features.device)
        chunks = []
        for start in range(0, b * q, self.max_pairs_per_call):
            chunk = pairs[start : start + self.max_pairs_per_call]
            images, prompts = chunk // q, chunk % q
            vision = features.select(images)
            prompt_features = text.features.index_select(0, prompts)
            prompt_mask = text.mask.index_select(0, prompts)
            with torch.inference_mode():
                if masks:
                    out = self.model(vision_embeds=vision, attention_mask=prompt_mask,
                                     text_embeds=BaseModelOutputWithPooling(pooler_output=prompt_features))
                else:
                    out = detection_heads(self.model, vision, prompt_features, prompt_mask)
                # As post_process_instance_segmentation scores a candidate.
                scores = out.pred_logits.float().sigmoid() * out.presence_logits.float().sigmoid()
            chunks.append((scores, out.pred_boxes.float(), out.pred_masks))
        scores, boxes, mask_logits = (_cat(parts) for parts in zip(*chunks))
        return Sam3Scores(
            scores.reshape(b, q, *scores.shape[1:]),
            boxes.reshape(b, q, *boxes.shape[1:]),
            None if mask_logits is None else mask_logits.reshape(b, q, *mask_logits.shape[1:]),
        )

    def postprocess(self, scores: Sam3Scores, sizes: list[Size], ontology, config) -> list[Detections]:
        """Detections of the first ``len(sizes)`` images (a padded batch has more), with masks
        when they were scored with masks."""
        return [self._postprocess_image(scores, i, Size(*size), ontology, config) for i, size in enumerate(sizes)]

    def _postprocess_image(self, scores: Sam3Scores, index: int, size: Size, ontology, config) -> Detections:
        from autolabel.pipeline import filter_detections

        width, height = size
        image_scores = scores.scores[index].cpu().numpy()  # (Q + E, N): text prompts, then exemplar columns
        columns = np.repeat(np.arange(image_scores.shape[0]), image_scores.shape[1])
        class_ids = ontology.positive_class_ids[columns]
        prompt_ids = np.where(columns < len(ontology.query_class_ids), columns, -1)  # exemplars: no prompt
        flat = image_scores.reshape(-1)
        keep = np.flatnonzero(flat.astype(np.float64) > ontology.thresholds(config.threshold)[class_ids])
        boxes = candidate_boxes_to_pixels(scores.boxes[index].reshape(-1, 4)[keep].cpu(), width, height)
        # The candidate's index rides in ``ids`` through filtering, so only survivors get masks.
        dets = Detections(clip_boxes(boxes, width, height).astype(np.float32), flat[keep], class_ids[keep],
                          prompt_ids[keep], ids=keep)
        dets = filter_detections(dets, size, config)
        if scores.mask_logits is None:
            return Detections(dets.xyxy, dets.scores, dets.class_ids, dets.prompt_ids)
        logits = scores.mask_logits[index].reshape(-1, *scores.mask_logits.shape[-2:])
        chosen = torch.as_tensor(dets.ids, device=logits.device)
        masks = encode_upsampled(logits.index_select(0, chosen).cpu().float().sigmoid(), size, self.mask_threshold)
        return Detections(dets.xyxy, dets.scores, dets.class_ids, dets.prompt_ids, masks)


def _cat(parts: tuple) -> torch.Tensor | None:
    """The chunks of one output joined (None: not computed)."""
    if parts[0] is None:
        return None
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def detection_heads(model, vision, text_features: torch.Tensor, text_mask: torch.Tensor):
    """``Sam3Model.forward`` for text prompts without its mask decoder: the same calls up to
    ``pred_logits``, ``pred_boxes`` (normalised ``xyxy``) and ``presence_logits``; ``pred_masks`` is None.
    ``vision``: ``get_vision_features`` output per pair; ``text_features`` ``(P, L, D)``, ``text_mask`` ``(P, L)``."""
    from types import SimpleNamespace

    from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy, inverse_sigmoid

    # forward drops the coarsest FPN level and reads the last of the rest.
    fpn_hidden_states = vision.fpn_hidden_states[:-1]
    fpn_position_encoding = vision.fpn_position_encoding[:-1]
    text_mask = text_mask.bool()
    encoded = model.detr_encoder(vision_features=[fpn_hidden_states[-1]], text_features=text_features,
                                 vision_pos_embeds=[fpn_position_encoding[-1]], text_mask=text_mask)
    decoded = model.detr_decoder(vision_features=encoded.last_hidden_state, text_features=encoded.text_features,
                                 vision_pos_encoding=encoded.pos_embeds_flattened, text_mask=text_mask,
                                 spatial_shapes=encoded.spatial_shapes)
    last_hidden = decoded.intermediate_hidden_states[-1:]
    offsets = model.detr_decoder.box_head(last_hidden)
    boxes = box_cxcywh_to_xyxy((inverse_sigmoid(decoded.reference_boxes[-1:]) + offsets).sigmoid())
    logits = model.dot_product_scoring(decoder_hidden_states=last_hidden, text_features=encoded.text_features,
                                       text_mask=text_mask).squeeze(-1)
    return SimpleNamespace(pred_logits=logits[-1], pred_boxes=boxes[-1],
                           presence_logits=decoded.presence_logits[-1], pred_masks=None)


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
        """``model_type`` sam3_tracker, or sam3_video (facebook/sam3) through ``TrackerOfVideoCheckpoint``."""
        from transformers import Sam3TrackerModel, Sam3TrackerProcessor

        from autolabel.models.registry import checkpoint_model_type

        if checkpoint_model_type(name_or_path) == "sam3_video":
            return TrackerOfVideoCheckpoint, Sam3TrackerProcessor
        return Sam3TrackerModel, Sam3TrackerProcessor


class TrackerOfVideoCheckpoint:
    """Loads ``Sam3TrackerModel`` from a sam3_video checkpoint. transformers 5.x maps such a file into
    ``Sam3TrackerModel`` only partly (its mask decoder and prompt encoder would stay random), while
    ``Sam3TrackerVideoModel`` loads it whole and holds every weight of the image tracker under the
    same names: load that, then copy them over."""

    # What ``models.loading`` looks for in a model class (transformers is imported when loading).
    config_class = None
    base_model_prefix = "tracker_model"

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, output_loading_info: bool = False, **kwargs):
        from transformers import Sam3TrackerConfig, Sam3TrackerModel, Sam3TrackerVideoModel

        video, info = Sam3TrackerVideoModel.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
        config = Sam3TrackerConfig(vision_config=video.config.vision_config,
                                   prompt_encoder_config=video.config.prompt_encoder_config.to_dict(),
                                   mask_decoder_config=video.config.mask_decoder_config.to_dict())
        config._attn_implementation = video.config._attn_implementation
        model = Sam3TrackerModel(config).to(video.dtype)
        weights = video.state_dict()
        model.load_state_dict({name: weights[name] for name in model.state_dict()}, strict=True)
        model.eval()
        return (model, info) if output_loading_info else model
