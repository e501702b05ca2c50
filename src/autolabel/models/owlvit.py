"""OWL-ViT (v1) open-vocabulary detection: OWLv2's split API and post-processing, with v1's input.

The two generations share the heads, the split calls (``image_embedder``, ``box_predictor``,
``class_predictor``, text features once per prompt set) and the 16-token queries, so
``OwlVitDetector`` is an ``Owlv2Detector`` with two differences:
- the processor stretches the image to the model's square (bicubic, antialiased) instead of padding
  it, so the fast path is a draft decode plus that same resize in torch (``OwlVitPixelValues``);
- boxes are normalised to the stretched square, so they map back per axis (x by the width, y by the
  height) where OWLv2's scale both axes by the longer side.
"""

from __future__ import annotations

import math

import torch

from autolabel.geometry import Size
from autolabel.models.owlv2 import Owlv2Detector
from autolabel.models.postprocess import BoxScores
from autolabel.models.preprocess import DraftPreprocessor, StockPreprocessor, resize_normalize


class OwlVitPixelValues:
    """``OwlViTImageProcessor`` (torchvision backend) in torch: the same resize and fused
    normalisation calls, so the same pixels give the same values; on a JPEG draft-decoded to at
    least the model's side on both axes (each axis is resized to the square) the values move about
    as much as re-saving the JPEG does. Build with ``from_processor``: None for settings it does not
    reproduce. ``size`` is not needed: the stretch forgets the aspect ratio (boxes map back in
    ``postprocess``)."""

    def __init__(self, size: int, interpolation, mean, std):
        self.size = int(size)
        self.interpolation = interpolation
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    @classmethod
    def from_processor(cls, image_processor) -> "OwlVitPixelValues | None":
        from transformers.image_utils import pil_torch_interpolation_mapping

        ip = image_processor
        size, crop = getattr(ip, "size", None), getattr(ip, "crop_size", None)
        square = size is not None and size.height is not None and size.height == size.width
        side = size.height if square else None
        crop_is_noop = not getattr(ip, "do_center_crop", False) or (
            crop is not None and crop.height == crop.width == side)
        standard = (
            type(ip).__name__ == "OwlViTImageProcessor"  # the PIL backend resizes with Pillow's kernels
            and getattr(ip, "do_resize", False) and getattr(ip, "do_rescale", False)
            and getattr(ip, "do_normalize", False) and not getattr(ip, "do_pad", False)
            and math.isclose(float(getattr(ip, "rescale_factor", 0.0)), 1 / 255)
            and square and crop_is_noop and ip.resample in pil_torch_interpolation_mapping
        )
        if not standard:
            return None
        return cls(side, pil_torch_interpolation_mapping[ip.resample], ip.image_mean, ip.image_std)

    def __call__(self, pixels: torch.Tensor, size: Size | None = None, device="cpu") -> torch.Tensor:
        """``(h, w, 3)`` uint8 pixels -> ``(3, S, S)`` float32 on ``device``."""
        return resize_normalize(pixels, [self.size, self.size], self.interpolation, self.mean, self.std, 1 / 255,
                                device)[0]


class OwlVitDetector(Owlv2Detector):
    """OWL-ViT behind the ``models.base.Detector`` protocol (see the module docstring)."""

    family = "OWL-ViT"

    @classmethod
    def checkpoint_classes(cls, name_or_path: str) -> tuple:
        from transformers import AutoProcessor, OwlViTForObjectDetection

        return OwlViTForObjectDetection, AutoProcessor

    @classmethod
    def make_preprocessor(cls, image_processor, exact: bool):
        """A draft decode to at least the model's side on both axes, then ``OwlVitPixelValues``; the
        stock processor when ``exact`` or for settings it does not reproduce (OWLv2's pad-to-square
        preprocessing never fits v1)."""
        fast = None if exact else OwlVitPixelValues.from_processor(image_processor)
        if fast is None:
            return StockPreprocessor(image_processor)
        return DraftPreprocessor(fast, min_long=fast.size, min_short=fast.size)

    def postprocess(self, scores: BoxScores, sizes: list[Size], ontology, config):
        """As OWLv2's, after moving each image's boxes from the stretched square into OWLv2's frame
        (normalised by the longer side)."""
        n = len(sizes)
        factors = torch.tensor([[w / max(w, h), h / max(w, h)] * 2 for w, h in sizes], dtype=torch.float32)
        boxes = scores.pred_boxes[:n].float().cpu() * factors[:, None, :]
        return super().postprocess(BoxScores(scores.logits[:n], boxes), sizes, ontology, config)
