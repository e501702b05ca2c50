"""How to fine-tune: ``TrainConfig`` and the loss weights, the one source of the training defaults.

Kept free of torch so the command line can read its defaults without loading it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from autolabel.errors import ConfigError
from autolabel.finetune.data import AugmentConfig

MODES = ("full", "heads")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEFAULT_LR = {"full": 2e-5, "heads": 1e-4}
TEXT_LR_DIVISOR = 100
MAX_WARMUP_STEPS = 100
# Options that change how fast or how visibly a run goes, not what it learns: a resumed run may change them.
RUNTIME_FIELDS = ("val_every", "save_every", "workers", "keep_state", "precision", "gradient_checkpointing")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms and of the matching costs (the same for both, as DETR), and the
    sigmoid focal loss parameters (OWL-ViT uses alpha 0.3, gamma 2)."""

    class_weight: float = 2.0
    l1_weight: float = 5.0
    giou_weight: float = 2.0
    focal_alpha: float = 0.3
    focal_gamma: float = 2.0


@dataclass(frozen=True)
class TrainConfig:
    """How to fine-tune. ``None`` fields take a default that depends on the mode (see ``resolved``).

    mode: ``full`` trains the towers and heads on freshly augmented images every step; ``heads``
        (cheap mode) trains only the class and box heads on cached image features.
    lr: learning rate of the vision tower and the heads (default ``DEFAULT_LR`` of the mode);
    text_lr: of the text tower (default lr / ``TEXT_LR_DIVISOR``; 0 freezes it, as does ``freeze_text``).
    warmup_steps: linear warm-up, then cosine decay to ``min_lr_ratio * lr`` (default steps // 10,
        at most ``MAX_WARMUP_STEPS``).
    grad_accum: micro-batches of ``batch_size`` per optimizer step.
    num_negatives: negative queries per image: absent dataset classes first, then names from
        ``negative_vocabulary`` (default: a built-in list of common objects; () for none).
    max_side: decode images with this long side at most before augmenting (default twice the model
        input size, so zoom-in crops still have detail).
    cache_views: cheap mode: views cached per image (the image, its mirror, then random crops).
    val_every / save_every: steps between validations (keep-best) and resumable checkpoints.
    ensemble_alpha: the output is alpha * fine-tuned + (1 - alpha) * starting weights (WiSE-FT);
        None keeps the fine-tuned weights as they are.
    precision: ``auto`` (bf16 autocast on CUDA where supported, else fp16; fp32 elsewhere), fp32, bf16, fp16.
    """

    steps: int = 400
    mode: str = "full"
    batch_size: int = 4
    grad_accum: int = 1
    lr: float | None = None
    text_lr: float | None = None
    weight_decay: float = 1e-4
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    freeze_vision: bool = False
    freeze_text: bool = False
    num_negatives: int = 16
    negative_vocabulary: tuple[str, ...] | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_side: int | None = None
    cache_views: int = 2
    val_every: int = 100
    save_every: int = 100
    ensemble_alpha: float | None = None
    loss: LossWeights = field(default_factory=LossWeights)
    seed: int = 0
    precision: str = "auto"
    gradient_checkpointing: bool = False
    workers: int = 2
    keep_state: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("steps", "batch_size", "grad_accum", "cache_views", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("val_every", "save_every", "num_negatives", "weight_decay", "max_grad_norm", "lr", "text_lr",
                     "warmup_steps"):
            value = getattr(self, name)
            if value is not None and value < 0:  # None: the mode's default
                raise ConfigError(f"{name} must not be negative, got {value}")
        if self.lr == 0:
            raise ConfigError("lr must be positive")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.ensemble_alpha is not None and not 0.0 < self.ensemble_alpha <= 1.0:
            raise ConfigError(f"ensemble_alpha must be in (0, 1], got {self.ensemble_alpha}")
        if self.max_side is not None and self.max_side < 16:
            raise ConfigError(f"max_side must be at least 16, got {self.max_side}")

    def resolved(self) -> "TrainConfig":
        """The config with mode-dependent defaults filled in."""
        lr = self.lr if self.lr is not None else DEFAULT_LR[self.mode]
        text_lr = self.text_lr if self.text_lr is not None else lr / TEXT_LR_DIVISOR
        if self.mode == "heads" or self.freeze_text:
            text_lr = 0.0
        warmup = self.warmup_steps if self.warmup_steps is not None else min(MAX_WARMUP_STEPS, self.steps // 10)
        vocab = tuple(self.negative_vocabulary) if self.negative_vocabulary is not None else None
        return replace(self, lr=lr, text_lr=text_lr, warmup_steps=warmup, negative_vocabulary=vocab)

    def trains(self) -> set[str]:
        """The parameter groups this config trains."""
        cfg = self.resolved()
        groups = {"heads"}
        if cfg.mode == "full" and not cfg.freeze_vision:
            groups.add("vision")
        if cfg.text_lr > 0:  # 0 in cheap mode
            groups.add("text")
        return groups

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def learning_settings(self) -> dict:
        """The resolved settings that decide what a run learns (all but ``RUNTIME_FIELDS``)."""
        return {k: v for k, v in self.resolved().to_dict().items() if k not in RUNTIME_FIELDS}
