"""Build SAM v1 / SAM-HQ checkpoints with random weights: a tiny one for tests, full size for timing.

The processor's ``longest_edge`` and ``pad_size``, the vision ``image_size`` and the prompt encoder's
``image_size`` must agree (boxes are scaled to the first and normalised by the last). The mask
decoder emits low-res masks at ``4 * image_size / patch_size`` per side (256 at 1024 px).
"""

from __future__ import annotations

from pathlib import Path

from autolabel.testing.checkpoints import save_random_checkpoint


def sam_config(
    *,
    hq: bool = False,
    image_size: int = 128,
    patch_size: int = 16,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    window_size: int = 4,
    global_attention_layers: tuple[int, ...] = (1,),
    output_channels: int = 32,
    decoder_heads: int = 2,
    decoder_mlp_dim: int = 64,
):
    """A ``SamConfig`` (``SamHQConfig`` with ``hq``); tiny by default (128 px, 8x8 patches, 32x32 masks)."""
    from transformers import SamConfig, SamHQConfig

    vision = dict(
        hidden_size=hidden_size,
        output_channels=output_channels,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
        window_size=window_size,
        global_attn_indexes=list(global_attention_layers),
        num_pos_feats=output_channels // 2,
        mlp_dim=hidden_size * 4,
    )
    prompt = dict(hidden_size=output_channels, image_size=image_size, patch_size=patch_size)
    decoder = dict(hidden_size=output_channels, mlp_dim=decoder_mlp_dim, num_attention_heads=decoder_heads,
                   iou_head_hidden_dim=output_channels)
    if hq:
        decoder["vit_dim"] = hidden_size
    config_class = SamHQConfig if hq else SamConfig
    return config_class(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def build_sam_checkpoint(save_dir: str | Path, *, seed: int = 0, **sizes) -> Path:
    """Save a random SAM v1 (or, with ``hq=True``, SAM-HQ) checkpoint + processor to ``save_dir`` and
    return the path. ``sizes``: ``sam_config`` keywords (``FULL_SIZE_SAM`` for released sizes)."""
    from transformers import SamHQModel, SamHQProcessor, SamImageProcessor, SamModel, SamProcessor

    config = sam_config(**sizes)
    hq = config.model_type == "sam_hq"
    image_size = config.prompt_encoder_config.image_size
    mask_side = 4 * image_size // config.prompt_encoder_config.patch_size
    image_processor = SamImageProcessor(
        size={"longest_edge": image_size},
        pad_size={"height": image_size, "width": image_size},
        mask_size={"longest_edge": mask_side},
        mask_pad_size={"height": mask_side, "width": mask_side},
    )
    processor = (SamHQProcessor if hq else SamProcessor)(image_processor=image_processor)
    return save_random_checkpoint(save_dir, SamHQModel if hq else SamModel, config, processor, seed=seed)


# Sizes of the released ViT-B image encoders (facebook/sam-vit-base, syscv-community/sam-hq-vit-base);
# prompt encoder and decoder (256 wide, 8 heads, mlp 2048) are the same for every size.
FULL_SIZE_SAM = {
    "vit-base": dict(
        image_size=1024, patch_size=16, hidden_size=768, layers=12, heads=12, window_size=14,
        global_attention_layers=(2, 5, 8, 11), output_channels=256, decoder_heads=8, decoder_mlp_dim=2048,
    ),
    "vit-huge": dict(
        image_size=1024, patch_size=16, hidden_size=1280, layers=32, heads=16, window_size=14,
        global_attention_layers=(7, 15, 23, 31), output_channels=256, decoder_heads=8, decoder_mlp_dim=2048,
    ),
}
