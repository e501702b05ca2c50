"""SAM v1 and SAM-HQ box-prompted masks (``SamModel``, ``SamHQModel``): ``embed()`` once per image,
``predict()`` per box set.

Geometry differs from SAM2's: the processor resizes the long side to ``longest_edge`` (1024) keeping
the aspect ratio, so the image fills ``reshaped`` = (round(h * s), round(w * s)) of the square, and
pads bottom/right with zeros to ``pad_size``. Boxes scale by the per-axis ratios ``reshaped /
original``. ``post_process_masks`` upsamples the low-res logits (256) to the padded square, cuts
``reshaped`` out of it and upsamples that to the original size. We do the same per mask, the second
(large) upsampling only where the mask can be positive (``models.masks``), so masks equal the recipe's
without full-frame floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from autolabel.errors import ModelLoadError
from autolabel.geometry import Size
from autolabel.models.interpolation import BilinearAxis
from autolabel.models.loaded import LoadedSegmenter, check_batch
from autolabel.models.loading import load_pretrained
from autolabel.models.masks import upsampled_rle
from autolabel.models.preprocess import DraftPreprocessor, StockPreprocessor, reshaped_size, sam_pixel_values

FAMILIES = {"sam": ("SamModel", "SamProcessor"), "sam_hq": ("SamHQModel", "SamHQProcessor")}


@dataclass(frozen=True)
class SamEmbedding:
    """Encoder output for one image: ``image_embeddings`` ``(1, C, h, w)`` on the segmenter's device,
    SAM-HQ's ``intermediate_embeddings`` (``(1, h, w, C)`` each; empty for SAM v1), and ``size``,
    the original image's size."""

    image_embeddings: torch.Tensor | None
    intermediate_embeddings: tuple[torch.Tensor, ...]
    size: Size


class SamSegmenter(LoadedSegmenter):
    """SAM v1 / SAM-HQ behind the ``models.base.Segmenter`` protocol. Holds no per-image state."""

    family = "SAM v1/SAM-HQ"

    def __init__(self, model, processor, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 exact: bool = False):
        _check_sizes_agree(model, processor)
        super().__init__(model, processor, name, device, dtype, exact)
        self.is_hq = model.config.model_type == "sam_hq"
        ip = processor.image_processor
        self.longest_edge = int(ip.size["longest_edge"])
        self.pad_size = (int(ip.pad_size["height"]), int(ip.pad_size["width"]))

    @classmethod
    def checkpoint_classes(cls, name_or_path: str) -> tuple:
        """SAM v1 or SAM-HQ, by the checkpoint's ``model_type`` (sam or sam_hq)."""
        import transformers
        from transformers import AutoConfig

        model_type = load_pretrained(AutoConfig, name_or_path, "the SAM config").model_type
        if model_type not in FAMILIES:
            raise ModelLoadError(f"{name_or_path!r} is a {model_type!r} checkpoint, not SAM v1 or SAM-HQ "
                                 f"(model_type {' or '.join(FAMILIES)})")
        model_name, processor_name = FAMILIES[model_type]
        return getattr(transformers, model_name), getattr(transformers, processor_name)

    @classmethod
    def make_preprocessor(cls, image_processor, exact: bool):
        """JPEGs draft-decoded to at least the resize's long side, then the processor's operations in
        torch (``sam_pixel_values``; the original size decides the reshaped size); the processor
        itself when ``exact`` or for settings the torch version does not reproduce."""
        ip = image_processor
        standard = (ip.do_resize and ip.do_rescale and ip.do_normalize and ip.do_pad
                    and not getattr(ip, "do_center_crop", None))
        if exact or not standard:
            return StockPreprocessor(ip)
        return DraftPreprocessor(partial(sam_pixel_values, ip), min_long=int(ip.size["longest_edge"]))

    # -- encoder ------------------------------------------------------------------------------------

    def embed(self, pixel_values: torch.Tensor, sizes: list[Size]) -> list[SamEmbedding]:
        """``(B, 3, P, P)`` model inputs of images of original ``sizes`` -> one embedding each."""
        check_batch(pixel_values, sizes)
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            out = self.model.get_image_embeddings(pixel_values)
        embeddings, intermediate = out if self.is_hq else (out, ())
        return [
            SamEmbedding(embeddings[i : i + 1], tuple(level[i : i + 1] for level in intermediate),
                         Size(*map(int, size)))
            for i, size in enumerate(sizes)
        ]

    # -- decoder ------------------------------------------------------------------------------------

    def encode_masks(self, logits: torch.Tensor, size: Size) -> list[dict]:
        """``(N, h, w)`` low-res logits -> N full-resolution COCO RLEs as ``post_process_masks``
        computes them (padded square, cut to the reshaped image, original size, ``> 0``)."""
        if len(logits) == 0:
            return []
        width, height = size
        rh, rw = reshaped_size(Size(width, height), self.longest_edge)
        rows, cols = BilinearAxis.build(rh, height), BilinearAxis.build(rw, width)
        rles = []
        for mask in logits:
            # The padded-square step, one mask at a time (4 MB at 1024 px): it is cheap, and only
            # the second upsampling reaches the original's (possibly huge) size.
            square = F.interpolate(mask[None, None], self.pad_size, mode="bilinear", align_corners=False)
            rles.append(upsampled_rle(square[0, 0, :rh, :rw].contiguous(), rows, cols))
        return rles

    def scale_points(self, points: np.ndarray, size: Size) -> np.ndarray:
        """``(..., 2)`` x, y in original pixels -> the model's frame, as ``SamProcessor`` scales
        boxes and points (float64)."""
        width, height = size
        rh, rw = reshaped_size(size, self.longest_edge)
        scaled = np.array(points, dtype=float)
        scaled[..., 0] = scaled[..., 0] * (rw / width)
        scaled[..., 1] = scaled[..., 1] * (rh / height)
        return scaled

    def scale_boxes(self, boxes: np.ndarray, size: Size) -> np.ndarray:
        """Boxes in original pixels -> the model's frame, as ``SamProcessor`` scales them (float64)."""
        return self.scale_points(boxes.reshape(-1, 2, 2), size).reshape(-1, 4)

    def _decode(self, embedding: SamEmbedding, boxes: np.ndarray, points: np.ndarray | None = None) -> torch.Tensor:
        prompts = {"input_boxes": torch.from_numpy(self.scale_boxes(boxes, embedding.size))[None]}
        if points is not None:
            prompts["input_points"] = torch.from_numpy(self.scale_points(points[..., :2], embedding.size))[None]
            prompts["input_labels"] = torch.from_numpy(points[..., 2].astype(np.int64))[None]
        prompts = {name: value.to(self.device) for name, value in prompts.items()}
        extra = {"intermediate_embeddings": list(embedding.intermediate_embeddings)} if self.is_hq else {}
        with torch.inference_mode():
            outputs = self.model(image_embeddings=embedding.image_embeddings, multimask_output=False, **prompts,
                                 **extra)
        # pred_masks: (1 image, n boxes, 1 mask, h, w); upsampled in float32 on the CPU.
        return outputs.pred_masks[0, :, 0].to(device="cpu", dtype=torch.float32)


def _check_sizes_agree(model, processor) -> None:
    """Boxes are scaled to the processor's resize and normalised by the prompt encoder's size, and
    masks are cut from the padded square: a checkpoint where these differ puts masks in the wrong place."""
    ip = processor.image_processor
    sizes = {
        "processor longest_edge": (ip.size["longest_edge"],) * 2,
        "processor pad_size": (ip.pad_size["height"], ip.pad_size["width"]),
        "processor target_size": (processor.target_size,) * 2,
        "prompt encoder image_size": (model.config.prompt_encoder_config.image_size,) * 2,
    }
    if len(set(sizes.values())) != 1:
        raise ModelLoadError(f"inconsistent SAM checkpoint, these sizes must agree: {sizes}")
