"""Fine-tune OWLv2 on reviewed labels: label -> review -> fine-tune -> relabel better.

Names are imported lazily, so importing a submodule (the CLI reads ``config``) does not load torch.
"""

from __future__ import annotations

_LAZY = {
    "AugmentConfig": "autolabel.finetune.data",
    "Dataset": "autolabel.finetune.data",
    "Example": "autolabel.finetune.data",
    "load_examples": "autolabel.finetune.data",
    "LossWeights": "autolabel.finetune.config",
    "TrainConfig": "autolabel.finetune.config",
    "FinetuneResult": "autolabel.finetune.train",
    "finetune": "autolabel.finetune.train",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'autolabel.finetune' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
