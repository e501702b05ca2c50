"""Build SAM2 checkpoints with random weights: a tiny one for tests, full-size ones for benchmarks.

Three sizes must agree or box prompts land in the wrong place: the processor's resize size, the
backbone's ``image_size`` and the prompt encoder's ``image_size`` (boxes are normalised by the
latter). The mask decoder emits low-res masks at ``4 * image_size / 16`` per side (256 at 1024 px).
"""

from __future__ import annotations

from pathlib import Path

from autolabel.testing.checkpoints import save_random_checkpoint


def sam2_config(
    *,
    image_size: int = 128,
    hidden_size: int = 16,
    heads: int = 1,
    blocks_per_stage: tuple[int, ...] = (1, 1, 2, 1),
    global_attention_blocks: tuple[int, ...] = (3,),
    window_size_per_stage: tuple[int, ...] = (4, 4, 4, 2),
    window_positional_embedding_background_size: tuple[int, int] = (4, 4),
    fpn_hidden_size: int = 32,
    decoder_heads: int = 2,
    decoder_mlp_dim: int = 64,
):
    """A ``Sam2Config`` whose backbone, prompt encoder and processor sizes agree; tiny by default (128
    px, four hiera stages of width 16..128, 32x32 low-res masks). Widths and heads double per stage,
    as in the released models. A global-attention block must not be the first block of a pooling
    stage (transformers divides its window size, 0, by the query stride)."""
    from transformers import Sam2Config, Sam2HieraDetConfig

    n_stages = len(blocks_per_stage)
    embed_dims = [hidden_size * 2**i for i in range(n_stages)]
    patch_stride = 4  # the patch embedding's stride; each later stage halves the feature map
    feature_sizes = [[image_size // (patch_stride * 2**i)] * 2 for i in range(3)]
    return Sam2Config(
        vision_config=dict(
            backbone_config=Sam2HieraDetConfig(
                hidden_size=hidden_size,
                num_attention_heads=heads,
                image_size=[image_size, image_size],
                blocks_per_stage=list(blocks_per_stage),
                embed_dim_per_stage=embed_dims,
                num_attention_heads_per_stage=[heads * 2**i for i in range(n_stages)],
                window_size_per_stage=list(window_size_per_stage),
                global_attention_blocks=list(global_attention_blocks),
                window_positional_embedding_background_size=list(window_positional_embedding_background_size),
            ),
            backbone_channel_list=embed_dims[::-1],
            backbone_feature_sizes=feature_sizes,
            fpn_hidden_size=fpn_hidden_size,
        ),
        prompt_encoder_config=dict(hidden_size=fpn_hidden_size, image_size=image_size, patch_size=16),
        mask_decoder_config=dict(
            hidden_size=fpn_hidden_size,
            mlp_dim=decoder_mlp_dim,
            num_attention_heads=decoder_heads,
            iou_head_hidden_dim=fpn_hidden_size,
        ),
    )


def sam2_processor(image_size: int):
    """SAM2's processor for a model of ``image_size`` (also EdgeTAM's): the stretch to that square,
    low-res masks of a quarter of it."""
    from transformers import Sam2ImageProcessor, Sam2Processor

    quarter = image_size // 4
    image_processor = Sam2ImageProcessor(size={"height": image_size, "width": image_size},
                                         mask_size={"height": quarter, "width": quarter})
    return Sam2Processor(image_processor=image_processor)


def build_sam2_checkpoint(save_dir: str | Path, *, seed: int = 0, **sizes) -> Path:
    """Save a random SAM2 checkpoint + processor to ``save_dir`` and return the path. ``sizes``:
    ``sam2_config`` keywords (``FULL_SIZE_SAM2[name]`` for the released architectures)."""
    from transformers import Sam2Model

    config = sam2_config(**sizes)
    processor = sam2_processor(config.prompt_encoder_config.image_size)
    return save_random_checkpoint(save_dir, Sam2Model, config, processor, seed=seed)


# Sizes of the released architectures (facebook/sam2.1-hiera-tiny, facebook/sam2.1-hiera-large), from
# the original sam2_hiera_{t,l}.yaml: trunk embed_dim / num_heads / stages / global_att_blocks /
# window_spec / window_pos_embed_bkg_spatial_size. Neck and decoder (256 wide, 8 heads, mlp 2048) are
# the same for all sizes. Tiny equals transformers' Sam2Config defaults.
FULL_SIZE_SAM2 = {
    "hiera-tiny": dict(
        image_size=1024, hidden_size=96, heads=1, blocks_per_stage=(1, 2, 7, 2),
        global_attention_blocks=(5, 7, 9), window_size_per_stage=(8, 4, 14, 7),
        window_positional_embedding_background_size=(7, 7),
        fpn_hidden_size=256, decoder_heads=8, decoder_mlp_dim=2048,
    ),
    "hiera-large": dict(
        image_size=1024, hidden_size=144, heads=2, blocks_per_stage=(2, 6, 36, 4),
        global_attention_blocks=(23, 33, 43), window_size_per_stage=(8, 4, 16, 8),
        window_positional_embedding_background_size=(7, 7),
        fpn_hidden_size=256, decoder_heads=8, decoder_mlp_dim=2048,
    ),
}
