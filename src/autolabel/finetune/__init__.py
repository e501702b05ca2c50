"""Fine-tune OWLv2 on reviewed labels: label -> review -> fine-tune -> relabel better.

- ``data``: training examples from a run's store or a COCO file; box-preserving augmentation.
- ``loss``: Hungarian matching + sigmoid focal / L1 / GIoU loss (transformers has none for OWLv2).
- ``model``: the split-API forward passes with gradients; parameter groups.
- ``heads``: cheap mode, the class/box heads on cached image features.
- ``train``: ``TrainConfig`` and ``finetune`` (the loop, validation mAP, keep-best, resume, ensembling).
- ``metrics``: COCO mAP through pycocotools for the periodic validation.
"""

from autolabel.finetune.data import AugmentConfig, Dataset, Example, load_examples
from autolabel.finetune.loss import LossWeights
from autolabel.finetune.train import FinetuneResult, TrainConfig, finetune

__all__ = ["AugmentConfig", "Dataset", "Example", "FinetuneResult", "LossWeights", "TrainConfig", "finetune",
           "load_examples"]
