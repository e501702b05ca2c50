"""Build SAM 3 checkpoints with random weights: a tiny one for tests, the released size for timing.

``Sam3Model`` is a text-prompted detector with masks: a ViT backbone with an FPN neck, a CLIP text
encoder, a DETR encoder/decoder scoring ``num_queries`` candidates per (image, prompt) pair and a
mask decoder. The processor stretches each image to ``image_size`` square; the backbone sees
``image_size / patch_size`` patches per side and the finest FPN level (scale 4) is the mask grid.
"""

from __future__ import annotations

from pathlib import Path

from autolabel.testing.checkpoints import save_random_checkpoint
from autolabel.testing.owlv2_checkpoint import clip_tokenizer

# Prompts are padded (and here truncated) to this many tokens, as Sam3Processor does.
TEXT_TOKENS = 32


def sam3_config(
    *,
    image_size: int = 112,
    patch_size: int = 14,
    vision_hidden: int = 32,
    vision_layers: int = 2,
    vision_heads: int = 4,
    vision_intermediate: int = 128,
    window_size: int = 4,
    pretrain_image_size: int | None = None,
    global_attention_layers: tuple[int, ...] = (1,),
    fpn_hidden_size: int = 32,
    text_hidden: int = 32,
    text_layers: int = 2,
    text_heads: int = 4,
    text_projection: int = 32,
    vocab_size: int = 1000,
    pad_token_id: int = 0,
    hidden_size: int = 32,
    heads: int = 4,
    geometry_layers: int = 1,
    encoder_layers: int = 1,
    decoder_layers: int = 1,
    num_queries: int = 8,
    intermediate_size: int = 64,
):
    """A ``Sam3Config``; tiny by default (112 px, 8x8 patches, 32x32 masks, 8 candidates per prompt)."""
    from transformers import (
        Sam3Config,
        Sam3DETRDecoderConfig,
        Sam3DETREncoderConfig,
        Sam3GeometryEncoderConfig,
        Sam3MaskDecoderConfig,
        Sam3VisionConfig,
        Sam3ViTConfig,
    )

    grid = image_size // patch_size
    backbone = Sam3ViTConfig(
        hidden_size=vision_hidden,
        num_hidden_layers=vision_layers,
        num_attention_heads=vision_heads,
        intermediate_size=vision_intermediate,
        image_size=image_size,
        patch_size=patch_size,
        window_size=window_size,
        global_attn_indexes=list(global_attention_layers),
        pretrain_image_size=pretrain_image_size or image_size,
    )
    vision = Sam3VisionConfig(
        backbone_config=backbone,
        fpn_hidden_size=fpn_hidden_size,
        scale_factors=[4.0, 2.0, 1.0, 0.5],
        backbone_feature_sizes=[[grid * 4] * 2, [grid * 2] * 2, [grid] * 2],
    )
    text = dict(
        vocab_size=vocab_size,
        hidden_size=text_hidden,
        intermediate_size=text_hidden * 4,
        projection_dim=text_projection,
        num_hidden_layers=text_layers,
        num_attention_heads=text_heads,
        max_position_embeddings=TEXT_TOKENS,
        hidden_act="gelu",
        pad_token_id=pad_token_id,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
    )
    common = dict(hidden_size=hidden_size, num_attention_heads=heads, intermediate_size=intermediate_size)
    return Sam3Config(
        vision_config=vision,
        text_config=text,
        geometry_encoder_config=Sam3GeometryEncoderConfig(num_layers=geometry_layers, **common),
        detr_encoder_config=Sam3DETREncoderConfig(num_layers=encoder_layers, **common),
        detr_decoder_config=Sam3DETRDecoderConfig(num_layers=decoder_layers, num_queries=num_queries, **common),
        mask_decoder_config=Sam3MaskDecoderConfig(hidden_size=hidden_size, num_attention_heads=heads),
    )


def build_sam3_checkpoint(save_dir: str | Path, *, seed: int = 0, **sizes) -> Path:
    """Save a random SAM 3 checkpoint + processor to ``save_dir`` and return the path. ``sizes``:
    ``sam3_config`` keywords (``FULL_SIZE_SAM3`` for the released architecture). The tokenizer is
    character level (``testing.owlv2_checkpoint``'s); ``vocab_size`` is raised to hold it."""
    from transformers import Sam3Model, Sam3Processor

    tokenizer, n_tokens = clip_tokenizer(TEXT_TOKENS)
    sizes.setdefault("vocab_size", n_tokens)
    if sizes["vocab_size"] < n_tokens:
        raise ValueError(f"vocab_size must be at least {n_tokens}")
    config = sam3_config(**sizes)
    backbone = config.vision_config.backbone_config
    processor = Sam3Processor(image_processor=_image_processor(backbone.image_size, backbone.patch_size),
                              tokenizer=tokenizer)
    return save_random_checkpoint(save_dir, Sam3Model, config, processor, seed=seed)


def _image_processor(image_size: int, patch_size: int):
    """SAM 3's stretch to ``image_size``; low-res masks at 4 per patch."""
    from transformers import Sam3ImageProcessor

    mask_side = 4 * image_size // patch_size
    return Sam3ImageProcessor(size={"height": image_size, "width": image_size},
                              mask_size={"height": mask_side, "width": mask_side})


# The released facebook/sam3 detector: ViT-L-like backbone at 1008 px (72x72 patches of 14 px), CLIP
# text encoder of 24 layers, 6-layer DETR encoder/decoder with 200 queries; transformers' defaults.
FULL_SIZE_SAM3 = dict(
    image_size=1008, patch_size=14, vision_hidden=1024, vision_layers=32, vision_heads=16, vision_intermediate=4736,
    window_size=24, pretrain_image_size=336,
    global_attention_layers=(7, 15, 23, 31), fpn_hidden_size=256, text_hidden=1024, text_layers=24,
    text_heads=16, text_projection=512, vocab_size=49408,
    pad_token_id=1, hidden_size=256, heads=8, geometry_layers=3, encoder_layers=6, decoder_layers=6,
    num_queries=200, intermediate_size=2048,
)


def sam3_tracker_config(*, image_size: int = 112, patch_size: int = 14, vision_hidden: int = 32,
                        vision_layers: int = 2, vision_heads: int = 4, vision_intermediate: int = 128,
                        window_size: int = 4, global_attention_layers: tuple[int, ...] = (1,),
                        pretrain_image_size: int | None = None, fpn_hidden_size: int = 32,
                        decoder_heads: int = 2, decoder_mlp_dim: int = 64):
    """A ``Sam3TrackerConfig`` (SAM2's prompt encoder and mask decoder on SAM 3's vision tower);
    tiny by default (112 px, 32x32 low-res masks). Backbone, FPN sizes and prompt encoder agree."""
    from transformers import Sam3TrackerConfig

    vision = sam3_config(
        image_size=image_size, patch_size=patch_size, vision_hidden=vision_hidden, vision_layers=vision_layers,
        vision_heads=vision_heads, vision_intermediate=vision_intermediate, window_size=window_size,
        global_attention_layers=global_attention_layers, pretrain_image_size=pretrain_image_size,
        fpn_hidden_size=fpn_hidden_size,
    ).vision_config
    return Sam3TrackerConfig(
        vision_config=vision,
        prompt_encoder_config=dict(hidden_size=fpn_hidden_size, image_size=image_size, patch_size=patch_size),
        mask_decoder_config=dict(hidden_size=fpn_hidden_size, mlp_dim=decoder_mlp_dim,
                                 num_attention_heads=decoder_heads, iou_head_hidden_dim=fpn_hidden_size),
    )


def build_sam3_tracker_checkpoint(save_dir: str | Path, *, seed: int = 0, **sizes) -> Path:
    """Save a random SAM 3 tracker checkpoint + processor to ``save_dir`` and return the path.
    ``sizes``: ``sam3_tracker_config`` keywords."""
    from transformers import Sam3TrackerModel, Sam3TrackerProcessor

    config = sam3_tracker_config(**sizes)
    prompt = config.prompt_encoder_config
    processor = Sam3TrackerProcessor(image_processor=_image_processor(prompt.image_size, prompt.patch_size))
    return save_random_checkpoint(save_dir, Sam3TrackerModel, config, processor, seed=seed)


def build_sam3_video_checkpoint(save_dir: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny random ``Sam3VideoModel`` checkpoint (``model_type`` sam3_video, the layout
    facebook/sam3 is published in: ``detector_model.*`` and ``tracker_model.*`` sharing one vision
    backbone) + processor; both the SAM 3 detector and the SAM 3 tracker segmenter load from it."""
    from transformers import Sam3Processor, Sam3TrackerVideoConfig, Sam3VideoConfig, Sam3VideoModel

    tokenizer, n_tokens = clip_tokenizer(TEXT_TOKENS)
    detector = sam3_config(vocab_size=n_tokens)
    tracker = sam3_tracker_config()
    backbone = detector.vision_config.backbone_config
    config = Sam3VideoConfig(
        detector_config=detector,
        tracker_config=Sam3TrackerVideoConfig(vision_config=tracker.vision_config,
                                              prompt_encoder_config=tracker.prompt_encoder_config.to_dict(),
                                              mask_decoder_config=tracker.mask_decoder_config.to_dict(),
                                              image_size=backbone.image_size),
        low_res_mask_size=4 * backbone.image_size // backbone.patch_size,
    )
    processor = Sam3Processor(image_processor=_image_processor(backbone.image_size, backbone.patch_size),
                              tokenizer=tokenizer)
    return save_random_checkpoint(save_dir, Sam3VideoModel, config, processor, seed=seed)
