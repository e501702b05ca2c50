"""How the weights are updated: AdamW parameter groups, the learning-rate schedule, mixed precision."""

from __future__ import annotations

import contextlib
import math

import torch

from autolabel.errors import ConfigError
from autolabel.finetune.config import TrainConfig


def lr_factor(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based): linear warm-up
    over ``warmup`` steps, then half a cosine down to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(groups: dict[str, list[tuple[str, torch.nn.Parameter]]], config: TrainConfig,
                    device: str) -> torch.optim.Optimizer:
    """AdamW over the trained parameter groups (``model.set_trainable``'s output); ``config`` resolved."""
    param_groups = []
    for group, items in groups.items():
        if not items:
            continue
        lr = config.text_lr if group == "text" else config.lr
        # No weight decay on biases and norms (1-D tensors), as usual for transformers.
        decay = [p for n, p in items if p.ndim > 1]
        no_decay = [p for n, p in items if p.ndim <= 1]
        for params, wd, suffix in ((decay, config.weight_decay, ""), (no_decay, 0.0, "-no-decay")):
            if params:
                param_groups.append({"params": params, "lr": lr, "weight_decay": wd, "name": group + suffix})
    if not param_groups:
        raise ConfigError("nothing to train: every part of the model is frozen")
    return torch.optim.AdamW(param_groups, lr=config.lr, fused=device.startswith("cuda"))


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up then cosine decay (``lr_factor``), stepped once per optimizer step; ``config`` resolved."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.steps, config.warmup_steps, config.min_lr_ratio))


def resolve_precision(wanted: str, device: str) -> str:
    """``auto`` -> bf16 on CUDA where supported, else fp16; fp32 off CUDA. Half precision needs CUDA."""
    cuda = device.startswith("cuda")
    if wanted == "auto":
        if not cuda:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if wanted != "fp32" and not cuda:
        raise ConfigError(f"precision {wanted} needs a CUDA device (training on {device}); use fp32")
    return wanted


def autocast(precision: str):
    """The autocast context of a resolved precision (none for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def grad_scaler(precision: str) -> torch.amp.GradScaler:
    """Loss scaling, needed by fp16 only (a disabled scaler passes everything through)."""
    return torch.amp.GradScaler("cuda", enabled=precision == "fp16")
