"""Fine-tune OWLv2 on reviewed labels: label -> review -> fine-tune -> relabel better.

- ``config``: ``TrainConfig`` and ``LossWeights``, the training defaults (no torch: the CLI reads them).
- ``data``: training examples from a run's store or a COCO file; box-preserving augmentation.
- ``plan``: what each step draws (a pure function of seed and step, so resume draws the same).
- ``loss``: Hungarian matching + sigmoid focal / L1 / GIoU loss (transformers has none for OWLv2).
- ``model``: the split-API forward passes with gradients; parameter groups; weight ensembling.
- ``optim``: AdamW groups, the learning-rate schedule, mixed precision.
- ``heads``: cheap mode, the class/box heads on cached image features.
- ``validate`` / ``metrics``: validation mAP through the inference path and pycocotools.
- ``checkpoint``: the output folder: resumable checkpoints, best weights, the finished result.
- ``train``: ``finetune``, the loop.

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
