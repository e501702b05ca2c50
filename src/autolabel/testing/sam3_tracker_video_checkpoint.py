"""Build SAM 3 tracker *video* checkpoints (``Sam3TrackerVideoModel``) with random weights for tests.

SAM2's video model on SAM 3's vision tower (``sam3_checkpoint.sam3_tracker_config``): the memory
parts as in ``sam2_video_checkpoint`` (64 memory channels, a neck wider than that), the rope grid of
the memory attention is the patch grid (image size / patch size).
"""

from __future__ import annotations

from pathlib import Path

from autolabel.testing.checkpoints import save_random_checkpoint
from autolabel.testing.sam2_video_checkpoint import MEMORY_CHANNELS, bias_objects_present


def sam3_tracker_video_config(*, image_size: int = 112, patch_size: int = 14, memory_ffn: int = 64,
                              fuser_intermediate: int = 64):
    """A tiny ``Sam3TrackerVideoConfig`` (112 px, patches of 14, a neck of 128)."""
    from transformers import Sam3TrackerVideoConfig

    from autolabel.testing.sam3_checkpoint import sam3_tracker_config

    image = sam3_tracker_config(image_size=image_size, patch_size=patch_size, fpn_hidden_size=2 * MEMORY_CHANNELS)
    width = 2 * MEMORY_CHANNELS
    return Sam3TrackerVideoConfig(
        vision_config=image.vision_config.to_dict(), prompt_encoder_config=image.prompt_encoder_config.to_dict(),
        mask_decoder_config=image.mask_decoder_config.to_dict(), image_size=image_size,
        memory_attention_hidden_size=width, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=memory_ffn,
        memory_attention_rope_feat_sizes=[image_size // patch_size] * 2,
        memory_encoder_hidden_size=width, memory_encoder_output_channels=MEMORY_CHANNELS,
        mask_downsampler_embed_dim=width, memory_fuser_embed_dim=width, memory_fuser_intermediate_dim=fuser_intermediate,
    )


def build_sam3_tracker_video_checkpoint(save_dir: str | Path, *, seed: int = 0, **sizes) -> Path:
    """Save a random ``Sam3TrackerVideoModel`` + processor to ``save_dir``; every object scores as
    visible (``sam2_video_checkpoint.bias_objects_present``)."""
    from transformers import Sam2VideoVideoProcessor, Sam3TrackerVideoModel, Sam3TrackerVideoProcessor

    from autolabel.testing.sam3_checkpoint import _image_processor

    config = sam3_tracker_video_config(**sizes)
    square = {"height": config.image_size, "width": config.image_size}
    processor = Sam3TrackerVideoProcessor(
        image_processor=_image_processor(config.image_size, config.prompt_encoder_config.patch_size),
        video_processor=Sam2VideoVideoProcessor(size=square))  # frames come one by one: never used
    return save_random_checkpoint(save_dir, Sam3TrackerVideoModel, config, processor, seed=seed,
                                  adjust=bias_objects_present)
