"""Build EdgeTAM *video* checkpoints (``EdgeTamVideoModel``) with random weights for tests.

The video model is ``edgetam_checkpoint``'s image model plus SAM2's memory encoder and memory
attention, with a perceiver that resamples the memories to a few latents. As for SAM2 video
(``sam2_video_checkpoint``), the memory encoder emits 64 channels and the neck must be wider than
that; the rope grids are the image size / 16 (queries) and / 32 (keys, the resampled memories).
"""

from __future__ import annotations

from pathlib import Path

from autolabel.testing.checkpoints import save_random_checkpoint
from autolabel.testing.edgetam_checkpoint import edgetam_config
from autolabel.testing.sam2_video_checkpoint import MEMORY_CHANNELS, bias_objects_present, sam2_video_processor


def edgetam_video_config(*, image_size: int = 128, latents: int = 16, memory_ffn: int = 64,
                         fuser_intermediate: int = 64):
    """A tiny ``EdgeTamVideoConfig`` (128 px, a neck of 128)."""
    from transformers import EdgeTamVideoConfig

    image = edgetam_config(image_size=image_size, fpn_hidden_size=2 * MEMORY_CHANNELS)
    width = image.vision_config.fpn_hidden_size
    return EdgeTamVideoConfig(
        vision_config=image.vision_config.to_dict(), prompt_encoder_config=image.prompt_encoder_config.to_dict(),
        mask_decoder_config=image.mask_decoder_config.to_dict(), image_size=image_size,
        memory_attention_hidden_size=width, memory_attention_num_layers=1, memory_attention_mlp_hidden_size=memory_ffn,
        memory_attention_rope_feat_sizes=[image_size // 16] * 2, memory_attention_rope_k_sizes=[image_size // 32] * 2,
        perceiver_resampler_num_latents=latents, perceiver_resampler_num_latents_2d=latents,
        perceiver_resampler_num_layers=1, perceiver_resampler_mlp_intermediate_size=memory_ffn,
        memory_encoder_hidden_size=width, memory_encoder_output_channels=MEMORY_CHANNELS,
        mask_downsampler_embed_dim=width, memory_fuser_embed_dim=width, memory_fuser_intermediate_dim=fuser_intermediate,
    )


def build_edgetam_video_checkpoint(save_dir: str | Path, *, seed: int = 0, **sizes) -> Path:
    """Save a random ``EdgeTamVideoModel`` + SAM2 video processor to ``save_dir``; every object
    scores as visible (``sam2_video_checkpoint.bias_objects_present``)."""
    from transformers import EdgeTamVideoModel

    config = edgetam_video_config(**sizes)
    return save_random_checkpoint(save_dir, EdgeTamVideoModel, config, sam2_video_processor(config.image_size),
                                  seed=seed, adjust=bias_objects_present)
