"""EdgeTAM box-prompted masks: SAM2's image API (stretch to the square, boxes scaled per axis, one
embedding per image, low-res logits upsampled per axis) on a small RepViT backbone (timm), so all
but loading is ``Sam2Segmenter``'s, including the region-limited mask upsampling."""

from __future__ import annotations

from autolabel.errors import ModelLoadError
from autolabel.models.sam2 import Sam2Segmenter


class EdgeTamSegmenter(Sam2Segmenter):
    """``EdgeTamModel`` (``model_type`` edgetam, its processor SAM2's) behind the ``models.base.Segmenter`` protocol."""

    family = "EdgeTAM"

    @classmethod
    def checkpoint_classes(cls, name_or_path: str) -> tuple:
        import importlib.util

        from transformers import EdgeTamModel, Sam2Processor

        if importlib.util.find_spec("timm") is None:
            raise ModelLoadError("EdgeTAM's backbone needs the timm package: pip install timm")
        return EdgeTamModel, Sam2Processor
