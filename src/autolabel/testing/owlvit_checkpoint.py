"""Build OWL-ViT (v1) checkpoints with random weights: a tiny one for tests, full-size ones for timing."""

from __future__ import annotations

from pathlib import Path

from autolabel.testing.checkpoints import save_random_checkpoint
from autolabel.testing.owlv2_checkpoint import clip_tokenizer, owl_config, shrink_box_head


def build_owlvit_checkpoint(save_dir: str | Path, *, seed: int = 0, **sizes) -> Path:
    """Save a random OWL-ViT checkpoint + processor to ``save_dir`` and return the path. ``sizes``:
    ``owl_config`` keywords; tiny by default (64 px, 4x4 patches); ``FULL_SIZE_OWLVIT`` holds the
    released architectures' sizes. The processor is the released one's (bicubic stretch, a centre
    crop of the same size)."""
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    tokenizer, vocab_size = clip_tokenizer()
    config = owl_config(OwlViTConfig, vocab_size=vocab_size, **sizes)
    side = config.vision_config.image_size
    square = {"height": side, "width": side}
    image_processor = OwlViTImageProcessor(size=square, crop_size=square, do_center_crop=True)
    processor = OwlViTProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return save_random_checkpoint(save_dir, OwlViTForObjectDetection, config, processor, seed=seed,
                                  adjust=shrink_box_head)


# Sizes of the released architectures (google/owlvit-base-patch32, -base-patch16, -large-patch14).
FULL_SIZE_OWLVIT = {
    "base-patch32": dict(image_size=768, patch_size=32, vision_hidden=768, vision_layers=12, vision_heads=12,
                         text_hidden=512, text_layers=12, text_heads=8, projection_dim=512),
    "base-patch16": dict(image_size=768, patch_size=16, vision_hidden=768, vision_layers=12, vision_heads=12,
                         text_hidden=512, text_layers=12, text_heads=8, projection_dim=512),
    "large-patch14": dict(image_size=840, patch_size=14, vision_hidden=1024, vision_layers=24, vision_heads=16,
                          text_hidden=768, text_layers=12, text_heads=12, projection_dim=768),
}
