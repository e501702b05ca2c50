"""Build OWLv2 checkpoints with random weights: a tiny one for tests, full-size ones for benchmarks."""

from __future__ import annotations

import string
from pathlib import Path

from autolabel.testing.checkpoints import save_random_checkpoint


def clip_tokenizer(max_length: int = 16) -> tuple:
    """``(tokenizer, vocabulary size)``: a character-level CLIP tokenizer of ``max_length`` tokens,
    pad ``!`` at id 0 and end-of-text as the highest id, which is what OWLv2 expects (a query whose
    first token is 0 is treated as padding); OWL-ViT, OmDet-Turbo and SAM 3 checkpoints use it too."""
    from transformers import CLIPTokenizer

    symbols = ["!"] + list(string.ascii_lowercase + string.digits + "-'.,")
    vocab: dict[str, int] = {}
    for sym in symbols:
        vocab.setdefault(sym, len(vocab))
    for sym in symbols[1:]:
        vocab.setdefault(sym + "</w>", len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[], pad_token="!", model_max_length=max_length)
    return tok, len(vocab)


def owl_config(config_class, *, image_size: int = 64, patch_size: int = 16, vision_hidden: int = 32,
               vision_layers: int = 2, vision_heads: int = 2, text_hidden: int = 32, text_layers: int = 2,
               text_heads: int = 2, projection_dim: int = 32, vocab_size: int):
    """An ``Owlv2Config`` or ``OwlViTConfig`` (the two generations share the layout) with 16-token queries."""
    return config_class(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=text_hidden, intermediate_size=text_hidden * 4,
            num_hidden_layers=text_layers, num_attention_heads=text_heads, max_position_embeddings=16,
            pad_token_id=0, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
        ),
        vision_config=dict(
            hidden_size=vision_hidden, intermediate_size=vision_hidden * 4, num_hidden_layers=vision_layers,
            num_attention_heads=vision_heads, image_size=image_size, patch_size=patch_size,
        ),
        projection_dim=projection_dim,
    )


def shrink_box_head(model) -> None:
    """Random box heads saturate the sigmoid into zero-width boxes; small last-layer weights keep
    boxes near their patch (as a trained model's are), so geometry tests see real boxes."""
    model.box_head.dense2.weight.mul_(0.02)
    model.box_head.dense2.bias.zero_()


def build_owlv2_checkpoint(save_dir: str | Path, *, seed: int = 0, **sizes) -> Path:
    """Save a random OWLv2 checkpoint + processor to ``save_dir`` and return the path. ``sizes``:
    ``owl_config`` keywords; tiny by default (64 px, 4x4 patches); ``FULL_SIZE_OWLV2`` holds the
    released architectures' sizes."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    tokenizer, vocab_size = clip_tokenizer()
    config = owl_config(Owlv2Config, vocab_size=vocab_size, **sizes)
    side = config.vision_config.image_size
    image_processor = Owlv2ImageProcessor(size={"height": side, "width": side})
    processor = Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)
    return save_random_checkpoint(save_dir, Owlv2ForObjectDetection, config, processor, seed=seed,
                                  adjust=shrink_box_head)


# Sizes of the released architectures (google/owlv2-base-patch16*, google/owlv2-large-patch14*).
FULL_SIZE_OWLV2 = {
    "base-patch16": dict(image_size=960, patch_size=16, vision_hidden=768, vision_layers=12, vision_heads=12,
                         text_hidden=512, text_layers=12, text_heads=8, projection_dim=512),
    "large-patch14": dict(image_size=1008, patch_size=14, vision_hidden=1024, vision_layers=24, vision_heads=16,
                          text_hidden=768, text_layers=12, text_heads=12, projection_dim=768),
}
