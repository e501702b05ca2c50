"""Build EdgeTAM checkpoints with random weights: a tiny one for tests, full size for timing.

EdgeTAM is SAM2's image API on a timm RepViT backbone (``timm`` must be installed); its processor is
SAM2's (stretch to the square). Processor size, prompt encoder ``image_size`` and the backbone's
feature sizes (strides 4, 8, 16) must agree.
"""

from __future__ import annotations

from pathlib import Path

from autolabel.testing.checkpoints import save_random_checkpoint
from autolabel.testing.sam2_checkpoint import sam2_processor


def edgetam_config(
    *,
    image_size: int = 128,
    backbone_channels: tuple[int, ...] = (12, 24, 48, 96),
    fpn_hidden_size: int = 32,
    decoder_heads: int = 2,
    decoder_mlp_dim: int = 64,
):
    """An ``EdgeTamConfig`` whose backbone, prompt encoder and processor sizes agree; tiny by default
    (128 px, RepViT of widths 12..96, 32x32 low-res masks). Full size: 1024 px, widths 48..384, FPN
    256 (transformers' defaults, ``FULL_SIZE_EDGETAM``)."""
    from transformers import EdgeTamConfig, EdgeTamVisionConfig, TimmWrapperConfig

    backbone = TimmWrapperConfig(
        architecture="repvit_m1",
        model_args={"in_chans": 3, "features_only": True, "out_indices": (0, 1, 2, 3),
                    "embed_dim": list(backbone_channels)},
    )
    vision = EdgeTamVisionConfig(
        backbone_config=backbone,
        backbone_channel_list=list(backbone_channels)[::-1],
        backbone_feature_sizes=[[image_size // 4] * 2, [image_size // 8] * 2, [image_size // 16] * 2],
        fpn_hidden_size=fpn_hidden_size,
    )
    return EdgeTamConfig(
        vision_config=vision,
        prompt_encoder_config=dict(hidden_size=fpn_hidden_size, image_size=image_size, patch_size=16),
        mask_decoder_config=dict(hidden_size=fpn_hidden_size, mlp_dim=decoder_mlp_dim,
                                 num_attention_heads=decoder_heads, iou_head_hidden_dim=fpn_hidden_size),
    )


def build_edgetam_checkpoint(save_dir: str | Path, *, seed: int = 0, **sizes) -> Path:
    """Save a random EdgeTAM checkpoint + SAM2 processor to ``save_dir`` and return the path."""
    from transformers import EdgeTamModel

    config = edgetam_config(**sizes)
    processor = sam2_processor(config.prompt_encoder_config.image_size)
    return save_random_checkpoint(save_dir, EdgeTamModel, config, processor, seed=seed)


FULL_SIZE_EDGETAM = dict(image_size=1024, backbone_channels=(48, 96, 192, 384), fpn_hidden_size=256,
                         decoder_heads=8, decoder_mlp_dim=2048)
