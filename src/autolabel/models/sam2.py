"""SAM2 box-prompted masks: ``embed()`` once per image (expensive), ``predict()`` per box set (cheap).

Boxes (and any clicks refining them) go in and masks come out in the original image's pixels. The
processor stretches every image to a square (1024 px for the released models) and scales boxes and
clicks per axis; the decoder emits low-res mask logits (256 px) in that square, upsampled only where
they can be positive (``models.masks``), so the masks equal ``post_process_masks``' without its
full-frame float32 masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from autolabel.errors import ModelLoadError
from autolabel.geometry import Size
from autolabel.models.loaded import LoadedSegmenter, check_batch
from autolabel.models.masks import encode_upsampled
from autolabel.models.preprocess import stretch_preprocessor


@dataclass(frozen=True)
class ImageEmbedding:
    """Encoder output for one image: ``features``, the image embeddings, high resolution first, each
    ``(1, C, h, w)`` on the segmenter's device; ``size``: the original image's size."""

    features: tuple[torch.Tensor, ...]
    size: Size


class Sam2Segmenter(LoadedSegmenter):
    """SAM2 behind the ``models.base.Segmenter`` protocol. Holds no per-image state."""

    family = "SAM2"

    def __init__(self, model, processor, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 exact: bool = False):
        _check_sizes_agree(model, processor)
        super().__init__(model, processor, name, device, dtype, exact)

    @classmethod
    def checkpoint_classes(cls, name_or_path: str) -> tuple:
        from transformers import Sam2Model, Sam2Processor

        return Sam2Model, Sam2Processor

    make_preprocessor = staticmethod(stretch_preprocessor)

    @property
    def image_size(self) -> int:
        """Side of the square the encoder sees (1024 for the released models)."""
        return int(self.model.config.prompt_encoder_config.image_size)

    # -- encoder ------------------------------------------------------------------------------------

    def embed(self, pixel_values: torch.Tensor, sizes: list[Size]) -> list[ImageEmbedding]:
        """``(B, 3, S, S)`` model inputs of images of original ``sizes`` -> one embedding each."""
        check_batch(pixel_values, sizes)
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            levels = self.model.get_image_embeddings(pixel_values)
        return [ImageEmbedding(tuple(level[i : i + 1] for level in levels), Size(*map(int, size)))
                for i, size in enumerate(sizes)]

    # -- decoder ------------------------------------------------------------------------------------

    @staticmethod
    def encode_masks(logits: torch.Tensor, size: Size) -> list[dict]:
        """``(N, h, w)`` low-res logits -> N full-resolution COCO RLEs for an image of ``size``;
        masks are upsampled only where they can be positive."""
        return encode_upsampled(logits, size)

    def _decode(self, embedding: ImageEmbedding, boxes: np.ndarray, points: np.ndarray | None = None) -> torch.Tensor:
        width, height = embedding.size
        # The processor's own scaling of boxes and clicks (per axis, original pixels -> the stretched square).
        prompts = {"input_boxes": [boxes.tolist()]}
        if points is not None:
            prompts.update(input_points=[points[..., :2].tolist()], input_labels=[points[..., 2].astype(int).tolist()])
        encoded = self.processor(original_sizes=[[height, width]], return_tensors="pt", **prompts)
        prompts = {name: encoded[name].to(self.device) for name in prompts}
        with torch.inference_mode():
            outputs = self.model(image_embeddings=list(embedding.features), multimask_output=False, **prompts)
        # pred_masks: (1 image, n boxes, 1 mask, h, w). Upsampling runs in float32 on the CPU: the
        # result must not depend on the device, and the RLE is built on the CPU anyway.
        return outputs.pred_masks[0, :, 0].to(device="cpu", dtype=torch.float32)


def _check_sizes_agree(model, processor) -> None:
    """Boxes are scaled to the processor's size and normalised by the prompt encoder's: a checkpoint
    where they differ would put every box in the wrong place."""
    sizes = {
        "processor size": tuple(processor.image_processor.size[k] for k in ("height", "width")),
        "processor target_size": (processor.target_size,) * 2,
        "prompt encoder image_size": (model.config.prompt_encoder_config.image_size,) * 2,
    }
    if len(set(sizes.values())) != 1:
        raise ModelLoadError(f"inconsistent SAM2 checkpoint, these sizes must agree: {sizes}")
