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

Every prompt column (a prompt of ``Ontology.queries``, or a class's example boxes, below) gets its
own ``num_queries`` candidates (200 for the released model), each scored
``sigmoid(logit) * sigmoid(presence)`` as ``post_process_instance_segmentation`` does. The
candidates of all prompts are pooled, each keeping its prompt, so per-class thresholds, NMS and
prompt ids work as for OWLv2 (``pipeline.filter_detections``).

Geometry: the processor stretches every image to a square (1008 px) without padding; boxes come out
normalised ``xyxy`` and scale per axis; masks (``4 / patch_size`` of the square, 288 px) are
stretched back per axis. Masks are upsampled only inside the region where they can pass the
threshold, with ATen's bilinear weights, so they equal the recipe's without full-frame floats.

Exemplars (example boxes) are SAM 3's own box prompts: a class's text and its boxes form one
prompt, as ``processor(text=, input_boxes=, input_boxes_labels=)`` makes it (label 1: an example of
the class, 0: an example of what it is not). ``forward`` turns ``input_boxes`` into prompt tokens with
its geometry encoder (each box: a projection of its coordinates, ROI-pooled features of its image, a
position encoding and its label's embedding, refined by attention over that image's features; plus a
CLS token) and appends them to the text tokens; the DETR encoder, decoder, scoring and mask decoder
read the joined sequence as one prompt. An exemplar's tokens are computed once, on its own image
(``embed_exemplars``, under both labels), and used as they are on every image labelled: this is the
only reading that keeps what the encoder looked at (re-encoding the box on another image would pool
unrelated pixels), and on the exemplar's own image it is exactly the recipe. Elsewhere the tokens
carry the exemplar's appearance, and its box's position encoding as a weak prior.

``with_exemplars`` is told each exemplar group's class and each text prompt's: every text prompt of a
class is followed by the class's exemplar tokens (positive, then negative); a class with exemplars but
no text prompt gets one column, "visual" (the text the processor gives a box-only prompt) then its
tokens. The columns' classes and prompt ids (-1 for a "visual" one) ride with the prompts
(``PromptColumns``) to post-processing. Several exemplars are encoded one by one (their box and CLS
tokens in turn): exemplars come from different images, and one image's boxes may belong to different
classes, so the tokens are remembered per exemplar (``ExemplarMemo``); for one box this is the
recipe, for several on the same image it differs from encoding them jointly (one CLS, attention
between the boxes).

Negative exemplars need a prompt to join: a class with negative exemplars only is refused (the
ontology refuses it too). Negative text prompts are refused: the shared suppression rule
(``postprocess.suppress_negatives``) compares the scores of one candidate across columns; here each
prompt decodes its own candidates (query ``i`` of two prompts is not the same object), so there is
no such comparison, and SAM 3 has no negative text form.
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
class PromptColumns:
    """What each prompt column stands for: ``class_ids`` ``(Q,)`` its class, ``prompt_ids`` ``(Q,)``
    its text prompt's index in ``Ontology.queries`` (-1: a box-only prompt)."""

    class_ids: np.ndarray
    prompt_ids: np.ndarray


@dataclass(frozen=True)
class Sam3Prompts:
    """Encoded prompts: ``features`` ``(Q, L, D)`` projected text features, ``mask`` ``(Q, L)``
    (1: token, 0: padding), on the detector's device. ``columns`` None: the ontology's text
    prompts in order (``encode_text``); else set by ``with_exemplars``."""

    queries: tuple[str, ...]
    features: torch.Tensor
    mask: torch.Tensor
    columns: PromptColumns | None = None


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
    without masks; ``columns`` as the prompts' (``Sam3Prompts.columns``)."""

    scores: torch.Tensor
    boxes: torch.Tensor
    mask_logits: torch.Tensor | None
    columns: PromptColumns | None = None


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
        """``(k, 2, T, D)``: per exemplar box (``xyxy`` pixels of one image of ``size``) the geometry
        encoder's tokens (the box's, then CLS) as ``forward`` makes them from ``input_boxes`` on
        that image's ``encode_images`` features, each box encoded on its own, indexed by SAM 3's box
        label: ``[:, 0]`` as a negative box, ``[:, 1]`` as a positive one (the label enters before
        the encoder's attention; ``with_exemplars`` takes the one its group asks for)."""
        from transformers.models.sam3.processing_sam3 import box_xyxy_to_cxcywh

        if len(features) != 1:
            raise ValueError(f"exemplar embeddings take the features of one image, got {len(features)}")
        width, height = size
        scale = np.array([width, height, width, height], dtype=np.float32)  # the processor stretches
        boxes = box_xyxy_to_cxcywh(torch.as_tensor(np.asarray(boxes_xyxy, dtype=np.float32) / scale))
        k = len(boxes)
        # One box per prompt, each box twice: 2k prompts, the first k labelled 0, the next k 1.
        boxes = boxes.to(device=self.device, dtype=self.dtype).unsqueeze(1).repeat(2, 1, 1)
        labels = torch.arange(2, device=self.device).repeat_interleave(k)[:, None]
        # forward reads every FPN level but the coarsest.
        levels = lambda states: tuple(x.expand(2 * k, -1, -1, -1) for x in states[:-1])  # noqa: E731
        with torch.inference_mode():
            out = self.model.geometry_encoder(box_embeddings=boxes, box_mask=torch.ones_like(labels, dtype=torch.bool),
                                              box_labels=labels, img_feats=levels(features.fpn_hidden_states),
                                              img_pos_embeds=levels(features.fpn_position_encoding))
        tokens = out.last_hidden_state
        return tokens.reshape(2, k, *tokens.shape[1:]).transpose(0, 1)

    def with_exemplars(self, text: Sam3Prompts | None, positive: dict[int, list], negative: dict[int, list],
                       query_class_ids: np.ndarray) -> Sam3Prompts:
        """SAM 3's own text + boxes prompts: each text prompt followed by its class's exemplar
        tokens (``embed_exemplars`` rows, the positive ones with label 1, then the negative ones
        with label 0), then per class with exemplars but no text prompt one "visual" column with
        them. ``positive`` / ``negative``: per class index its exemplars' rows; ``text``: the
        encoded text prompts (None: none), ``query_class_ids`` the class of each. Columns of
        unequal length are padded (masked); ``columns`` says each one's class and prompt."""
        queries = () if text is None else text.queries
        text_classes = [int(c) for c in query_class_ids]
        if len(queries) > len(text_classes):
            raise ConfigError(f"negative prompts are not supported by {self.family}: remove the negatives ('not=')")
        alone = sorted(set(negative) - set(text_classes) - set(positive))
        if alone:
            raise ConfigError(f"class {alone[0]} has negative exemplars only: {self.family} needs a text prompt "
                              "or a positive exemplar of the class to go with them")
        boxes_only = sorted(set(positive) - set(text_classes))
        heads = [] if text is None else list(zip(text.features, text.mask))  # (L, D) features, (L,) mask
        if boxes_only:
            visual = self.encode_text((self.VISUAL_PROMPT,))
            heads += [(visual.features[0], visual.mask[0])] * len(boxes_only)
        joined = []
        for (features, mask), cls in zip(heads, text_classes + boxes_only):
            tokens = [row[1] for row in positive.get(cls, ())] + [row[0] for row in negative.get(cls, ())]
            tokens = torch.cat([features, *(t.to(features) for t in tokens)])
            joined.append((tokens, torch.cat([mask, mask.new_ones(len(tokens) - len(mask))])))
        length = max(len(f) for f, _ in joined)
        features = torch.stack([torch.nn.functional.pad(f, (0, 0, 0, length - len(f))) for f, _ in joined])
        mask = torch.stack([torch.nn.functional.pad(m, (0, length - len(m))) for _, m in joined])
        names = tuple(queries) + tuple(f"<exemplars of class {c}>" for c in boxes_only)
        prompt_ids = np.concatenate([np.arange(len(text_classes)), np.full(len(boxes_only), -1)]).astype(np.int64)
        class_ids = np.array(text_classes + boxes_only, dtype=np.int64)
        return Sam3Prompts(names, features, mask, PromptColumns(class_ids, prompt_ids))

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
            text.columns,
        )

    def postprocess(self, scores: Sam3Scores, sizes: list[Size], ontology, config) -> list[Detections]:
        """Detections of the first ``len(sizes)`` images (a padded batch has more), with masks
        when they were scored with masks."""
        return [self._postprocess_image(scores, i, Size(*size), ontology, config) for i, size in enumerate(sizes)]

    def _postprocess_image(self, scores: Sam3Scores, index: int, size: Size, ontology, config) -> Detections:
        from autolabel.pipeline import filter_detections

        width, height = size
        image_scores = scores.scores[index].cpu().numpy()  # (Q, N): per prompt column its candidates
        columns = scores.columns or PromptColumns(ontology.query_class_ids, np.arange(len(ontology.queries)))
        column = np.repeat(np.arange(image_scores.shape[0]), image_scores.shape[1])
        class_ids, prompt_ids = columns.class_ids[column], columns.prompt_ids[column]
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
