"""Build SAM2 *video* checkpoints (``Sam2VideoModel``) with random weights: tiny for tests, full size
for benchmarks.

The video model is the image model plus a memory encoder and memory attention. Besides the sizes
``sam2_checkpoint`` keeps in step (processor, backbone and prompt encoder), the memory parts must
match the neck's width (``fpn_hidden_size``) and the rope feature grid must be the image size / 16.
"""

from __future__ import annotations

from pathlib import Path

from autolabel.testing.checkpoints import save_random_checkpoint
from autolabel.testing.sam2_checkpoint import FULL_SIZE_SAM2, sam2_config

# transformers builds the memory attention's cross-attention with 64 key/value channels whatever the
# config says, so the memory encoder must emit 64 (as every released model does); object pointers are
# split into 64-wide tokens, and that path only runs when the neck is wider than 64: the tiny model's
# neck is 128 wide, the released ones' 256.
MEMORY_CHANNELS = 64


def sam2_video_config(*, memory_layers: int = 1, memory_ffn: int = 64,
                      fuser_intermediate: int = 64, num_maskmem: int = 7, **sizes):
    """A ``Sam2VideoConfig`` on the image model of ``sam2_config(**sizes)`` (tiny by default)."""
    from transformers import Sam2VideoConfig

    image = sam2_config(**{"fpn_hidden_size": 2 * MEMORY_CHANNELS, **sizes})
    image_size = image.prompt_encoder_config.image_size
    width = image.vision_config.fpn_hidden_size
    return Sam2VideoConfig(
        vision_config=image.vision_config.to_dict(),
        prompt_encoder_config=image.prompt_encoder_config.to_dict(),
        mask_decoder_config=image.mask_decoder_config.to_dict(),
        image_size=image_size,
        num_maskmem=num_maskmem,
        memory_attention_hidden_size=width,
        memory_attention_num_layers=memory_layers,
        memory_attention_feed_forward_hidden_size=memory_ffn,
        memory_attention_rope_feat_sizes=[image_size // 16] * 2,
        memory_encoder_hidden_size=width,
        memory_encoder_output_channels=MEMORY_CHANNELS,
        mask_downsampler_embed_dim=width,
        memory_fuser_embed_dim=width,
        memory_fuser_intermediate_dim=fuser_intermediate,
    )


def sam2_video_processor(image_size: int):
    from transformers import Sam2ImageProcessor, Sam2VideoProcessor, Sam2VideoVideoProcessor

    square = {"height": image_size, "width": image_size}
    quarter = {"height": image_size // 4, "width": image_size // 4}
    return Sam2VideoProcessor(image_processor=Sam2ImageProcessor(size=square, mask_size=quarter),
                              video_processor=Sam2VideoVideoProcessor(size=square))


def build_sam2_video_checkpoint(save_dir: str | Path, *, seed: int = 0, objects_present: bool = True,
                                **sizes) -> Path:
    """Save a random ``Sam2VideoModel`` + processor to ``save_dir``; ``sizes``: ``sam2_video_config``
    keywords (``FULL_SIZE_SAM2_VIDEO[name]`` for the released architectures). ``objects_present``:
    bias the object-score head so every object counts as visible; random weights otherwise score
    about 0 and every mask comes back empty, which tests nothing."""
    from transformers import Sam2VideoModel

    config = sam2_video_config(**sizes)
    return save_random_checkpoint(save_dir, Sam2VideoModel, config, sam2_video_processor(config.image_size),
                                  seed=seed, adjust=bias_objects_present if objects_present else None)


def bias_objects_present(model) -> None:
    """Make every object score as visible: random weights score about 0 and every mask would come
    back empty, which tests nothing."""
    model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(10.0)


# The released video models' memory parts (sam2.1_hiera_*.yaml): 4 memory-attention layers of width
# 256 with a 2048 feed-forward, a fuser of 1024; the image side as FULL_SIZE_SAM2.
FULL_SIZE_SAM2_VIDEO = {
    name: dict(sizes, memory_layers=4, memory_ffn=2048, fuser_intermediate=1024)
    for name, sizes in FULL_SIZE_SAM2.items()
}
