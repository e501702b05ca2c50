"""Build OmDet-Turbo checkpoints with random weights: tiny ones for tests, the released size for timing."""

from __future__ import annotations

from pathlib import Path

from autolabel.testing.checkpoints import save_random_checkpoint
from autolabel.testing.owlv2_checkpoint import clip_tokenizer

TEXT_TOKENS = 77  # the processor pads and truncates every class and task to this many tokens


def build_omdet_checkpoint(
    save_dir: str | Path,
    *,
    image_size: int = 64,
    swin_dim: int = 8,
    swin_depths: tuple[int, ...] = (1, 1, 1, 1),
    swin_heads: tuple[int, ...] = (1, 1, 1, 1),
    text_hidden: int = 16,
    text_layers: int = 1,
    text_heads: int = 2,
    hidden: int = 8,
    heads: int = 2,
    ffn_dim: int = 32,
    embed_dim: int = 16,
    layers: int = 2,
    num_queries: int = 20,
    seed: int = 0,
) -> Path:
    """Save a random OmDet-Turbo checkpoint + processor to ``save_dir`` and return the path.
    ``FULL_SIZE_OMDET`` holds the released Swin-T architecture's sizes."""
    from transformers import DetrImageProcessor, OmDetTurboConfig, OmDetTurboForObjectDetection, OmDetTurboProcessor

    tokenizer, vocab_size = clip_tokenizer(TEXT_TOKENS)
    swin_channels = [swin_dim * 2 ** i for i in (1, 2, 3)]
    config = OmDetTurboConfig(
        text_config=dict(model_type="clip_text_model", vocab_size=vocab_size, hidden_size=text_hidden,
                         num_hidden_layers=text_layers, num_attention_heads=text_heads,
                         intermediate_size=text_hidden * 4, max_position_embeddings=TEXT_TOKENS,
                         pad_token_id=0, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1),
        backbone_config=dict(model_type="swin", embed_dim=swin_dim, depths=list(swin_depths),
                             num_heads=list(swin_heads), window_size=7, image_size=image_size, out_indices=(2, 3, 4)),
        use_timm_backbone=False,
        apply_layernorm_after_vision_backbone=False,  # True expects timm's channels-last maps
        image_size=image_size,
        encoder_in_channels=swin_channels,
        num_queries=num_queries,
        encoder_layers=1,
        encoder_attention_heads=heads,
        decoder_num_heads=heads,
        decoder_num_layers=layers,
        encoder_dim_feedforward=ffn_dim,
        task_encoder_hidden_dim=ffn_dim,
        decoder_dim_feedforward=ffn_dim,
        class_embed_dim=embed_dim,
        text_projection_in_dim=text_hidden,
        text_projection_out_dim=embed_dim,
        encoder_hidden_dim=hidden,
        decoder_hidden_dim=hidden,
        vision_features_channels=[hidden] * 3,
    )
    image_processor = DetrImageProcessor(size={"height": image_size, "width": image_size}, do_pad=False)
    processor = OmDetTurboProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return save_random_checkpoint(save_dir, OmDetTurboForObjectDetection, config, processor, seed=seed)


# omlab/omdet-turbo-swin-tiny-hf: Swin-T backbone at 640 px, CLIP B/32 text tower, 900 queries.
FULL_SIZE_OMDET = dict(image_size=640, swin_dim=96, swin_depths=(2, 2, 6, 2), swin_heads=(3, 6, 12, 24),
                       text_hidden=512, text_layers=12, text_heads=8, hidden=256, heads=8, ffn_dim=2048,
                       embed_dim=512, layers=6, num_queries=900)
