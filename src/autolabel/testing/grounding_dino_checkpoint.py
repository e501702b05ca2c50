"""Build Grounding DINO / MM-Grounding-DINO checkpoints with random weights: tiny ones for tests,
the released sizes for timing."""

from __future__ import annotations

import string
from pathlib import Path

from autolabel.testing.checkpoints import save_random_checkpoint

# The model splits phrases at these BERT ids ([CLS], [SEP], ".", "?"): a tokenizer must use them.
_FIXED_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}
# Whole words for readable test prompts; anything else falls back to letter pieces.
_WORDS = ("a", "cat", "dog", "fish", "remote", "control", "person", "car", "red", "blue", "the", "of")


def _tokenizer():
    """A word-piece BERT tokenizer with BERT's ids for the special tokens and phrase delimiters."""
    from transformers import BertTokenizer

    vocab = dict(_FIXED_IDS)
    pieces = list(_WORDS) + ["##fish"]
    pieces += [c for c in string.ascii_lowercase + string.digits + ",'-"]
    pieces += ["##" + c for c in string.ascii_lowercase + string.digits]
    free = (i for i in range(1, 10_000) if i not in vocab.values())
    for piece in pieces:
        vocab.setdefault(piece, next(free))
    for i in range(max(vocab.values()) + 1):  # BERT vocabularies are dense
        if i not in vocab.values():
            vocab[f"[unused{i}]"] = i
    vocab = dict(sorted(vocab.items(), key=lambda item: item[1]))
    return BertTokenizer(vocab=vocab), len(vocab)


def build_grounding_dino_checkpoint(
    save_dir: str | Path,
    *,
    variant: str = "grounding-dino",
    shortest_edge: int = 64,
    longest_edge: int = 96,
    swin_dim: int = 8,
    swin_depths: tuple[int, ...] = (1, 1, 1, 1),
    swin_heads: tuple[int, ...] = (1, 1, 1, 1),
    text_hidden: int = 8,
    text_layers: int = 1,
    text_heads: int = 2,
    d_model: int = 32,
    layers: int = 2,
    heads: int = 2,
    ffn_dim: int = 32,
    num_queries: int = 20,
    points: int = 2,
    max_text_len: int = 256,
    seed: int = 0,
) -> Path:
    """Save a random checkpoint + processor of ``variant`` (``grounding-dino`` or
    ``mm-grounding-dino``, the class LLMDet checkpoints use) to ``save_dir``; returns the path.
    ``FULL_SIZE_GROUNDING_DINO`` holds the released tiny (Swin-T) architecture's sizes."""
    from transformers import (GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoImageProcessor,
                              GroundingDinoProcessor, MMGroundingDinoConfig, MMGroundingDinoForObjectDetection,
                              SwinConfig)

    families = {"grounding-dino": (GroundingDinoConfig, GroundingDinoForObjectDetection),
                "mm-grounding-dino": (MMGroundingDinoConfig, MMGroundingDinoForObjectDetection)}
    if variant not in families:
        raise ValueError(f"variant must be one of {', '.join(families)}, got {variant!r}")
    config_class, model_class = families[variant]
    tokenizer, vocab_size = _tokenizer()
    backbone = SwinConfig(window_size=7, embed_dim=swin_dim, depths=list(swin_depths), num_heads=list(swin_heads),
                          image_size=longest_edge, out_indices=[2, 3, 4])
    config = config_class(
        backbone_config=backbone,
        use_timm_backbone=False,
        text_config=dict(model_type="bert", vocab_size=vocab_size, hidden_size=text_hidden,
                         num_hidden_layers=text_layers, num_attention_heads=text_heads, intermediate_size=text_hidden * 4,
                         max_position_embeddings=max(max_text_len, 8)),
        d_model=d_model, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
        decoder_attention_heads=heads, encoder_ffn_dim=ffn_dim, decoder_ffn_dim=ffn_dim, num_queries=num_queries,
        encoder_n_points=points, decoder_n_points=points, max_text_len=max_text_len,
    )
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": shortest_edge,
                                                        "longest_edge": longest_edge})
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return save_random_checkpoint(save_dir, model_class, config, processor, seed=seed)


# IDEA-Research/grounding-dino-tiny: Swin-T backbone, 800/1333 px inputs, BERT-base text encoder, 900 queries,
# 4 sampling points per level and head in the deformable attention.
FULL_SIZE_GROUNDING_DINO = dict(shortest_edge=800, longest_edge=1333, swin_dim=96, swin_depths=(2, 2, 6, 2),
                                swin_heads=(3, 6, 12, 24), text_hidden=768, text_layers=12, text_heads=12, d_model=256, layers=6,
                                heads=8, ffn_dim=2048, num_queries=900, points=4)
