"""The save step every random-weight checkpoint builder shares."""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def save_random_checkpoint(save_dir: str | Path, model_class, config, processor, *, seed: int = 0,
                           adjust: Callable | None = None) -> Path:
    """``model_class(config)`` with weights drawn from ``seed`` (then ``adjust(model)`` under
    ``no_grad``), saved as safetensors with ``processor`` in ``save_dir``; returns the path."""
    import torch

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    if adjust is not None:
        with torch.no_grad():
            adjust(model)
    model.save_pretrained(save_dir, safe_serialization=True)
    processor.save_pretrained(save_dir)
    return save_dir
