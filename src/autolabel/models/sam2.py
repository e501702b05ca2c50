"""SAM2 box-prompted masks with a two-level API (as in segment-anything's predictor).

``embed()`` runs the image encoder once per image (the expensive part); ``predict()`` decodes masks
for any set of boxes on a cached embedding (cheap), so a UI can re-prompt without re-encoding.

Frames: boxes go in and masks come out in the original image's pixels (the EXIF-oriented frame).
The processor stretches every image to a square (1024 x 1024 for the released models) without
keeping the aspect ratio and scales the boxes per axis; the decoder emits low-res mask logits
(256 x 256 at 1024 px) in that stretched square.

Memory: ``processor.post_process_masks`` upsamples every mask to the full frame as float32 (100 masks
on a 12 MP image are ~5 GB). We upsample each mask only inside the one rectangle of the frame where
it can be positive and encode that rectangle straight to a full-frame COCO RLE, reproducing the
values ``F.interpolate(mode="bilinear", align_corners=False)`` computes there (see
``_BilinearAxis``), so the masks equal the recipe's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from autolabel.errors import ModelLoadError
from autolabel.geometry import region_to_rle
from autolabel.models.loading import load_pretrained
from autolabel.models.preprocess import as_hwc_uint8, sam2_pixel_values

# Upsampling works on this many region pixels at a time, bounding its float32 temporaries (~20 MB).
_STRIP_PIXELS = 1 << 20


@dataclass(frozen=True)
class ImageEmbedding:
    """Encoder output for one image: all ``predict()`` needs to decode masks for any boxes.

    ``features``: the model's image embeddings for this image, high resolution first, each
    ``(1, C_l, h_l, w_l)`` on the segmenter's device and dtype (for 1024 px: 256x256, 128x128, 64x64).
    ``original_size``: ``(height, width)`` of the image in pixels.
    """

    features: tuple[torch.Tensor, ...]
    original_size: tuple[int, int]


class Sam2Segmenter:
    """Box-prompted masks. Two-level API like segment-anything: embed() once per image (expensive),
    predict() per box set (cheap), so a UI can re-prompt without re-encoding."""

    def __init__(self, model, processor, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 max_boxes_per_call: int = 64):
        """``max_boxes_per_call`` bounds one decoder call: the decoder copies the image embeddings
        once per box (~30 MB per box at 1024 px, float32), so many boxes are decoded in chunks."""
        if max_boxes_per_call < 1:
            raise ValueError(f"max_boxes_per_call must be >= 1, got {max_boxes_per_call}")
        _check_sizes_agree(model, processor)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = processor
        self.device = device
        self.dtype = dtype
        self.max_boxes_per_call = max_boxes_per_call

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                        max_boxes_per_call: int = 64) -> "Sam2Segmenter":
        """Load a checkpoint (hub id such as ``facebook/sam2.1-hiera-large`` or a local directory;
        safetensors only). Raises ``ModelLoadError``."""
        from transformers import Sam2Model, Sam2Processor

        processor = load_pretrained(Sam2Processor, name_or_path, "the SAM2 processor")
        model = load_pretrained(Sam2Model, name_or_path, "the SAM2 model", dtype=dtype)
        return cls(model, processor, device, dtype, max_boxes_per_call)

    @property
    def image_size(self) -> int:
        """Side of the square the encoder sees (1024 for the released models)."""
        return int(self.model.config.prompt_encoder_config.image_size)

    # -- encoder ------------------------------------------------------------------------------------

    def embed(self, images: list, original_sizes: list[tuple[int, int]] | None = None) -> list[ImageEmbedding]:
        """Encode RGB PIL images (already EXIF-oriented) in one encoder batch; one embedding each.

        ``original_sizes``: ``(width, height)`` per image when the images are reduced versions of
        larger originals (draft-decoded): masks then come out at the original size. None: the
        images are the originals.
        """
        images = list(images)
        if not images:
            return []
        _check_images(images)
        if original_sizes is not None and len(original_sizes) != len(images):
            raise ValueError(f"got {len(images)} images but {len(original_sizes)} original sizes")
        sizes = original_sizes or [image.size for image in images]
        with torch.inference_mode():
            pixel_values = torch.stack([self.pixel_values(as_hwc_uint8(image)) for image in images])
        return self.embed_pixels(pixel_values, [(h, w) for w, h in sizes])

    def pixel_values(self, pixels: torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
        """One image's ``(3, S, S)`` float32 encoder input from ``(h, w, 3)`` uint8 pixels, computed on
        ``device`` (default: the model's) with the processor's own operations (bit-exact on the same
        pixels on the CPU). Holds no model state: decode workers call it while the model runs."""
        device = self.device if device is None else device
        ip = self.processor.image_processor
        if not (ip.do_resize and ip.do_rescale and ip.do_normalize and not getattr(ip, "do_pad", None)):
            from PIL import Image  # settings we do not reproduce: the processor itself

            values = ip(images=[Image.fromarray(pixels.cpu().numpy())], return_tensors="pt")["pixel_values"][0]
            return values.to(device=device, dtype=torch.float32)
        return sam2_pixel_values(pixels, ip, device)

    def embed_pixels(self, pixel_values: torch.Tensor, original_sizes: list[tuple[int, int]]) -> list[ImageEmbedding]:
        """Encode ``(B, 3, S, S)`` pixel values in one encoder batch. ``original_sizes``: ``(height,
        width)`` of each original image (the frame masks come back in)."""
        if len(original_sizes) != pixel_values.shape[0]:
            raise ValueError(f"got {pixel_values.shape[0]} images but {len(original_sizes)} original sizes")
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            levels = self.model.get_image_embeddings(pixel_values)
        return [
            ImageEmbedding(tuple(level[i : i + 1] for level in levels), (int(h), int(w)))
            for i, (h, w) in enumerate(original_sizes)
        ]

    # -- decoder ------------------------------------------------------------------------------------

    def predict(self, embedding: ImageEmbedding, boxes_xyxy: np.ndarray) -> list[dict]:
        """Masks for ``boxes_xyxy`` (``(N, 4)`` float ``x0, y0, x1, y1`` in the image's pixels).

        Returns N COCO RLEs (``{"size": [H, W], "counts": str}``) at the image's full resolution, in
        box order; ``[]`` when N = 0. All boxes go through the decoder together, in chunks of
        ``max_boxes_per_call``; the single best mask per box (``multimask_output=False``).
        """
        return self.encode_masks(self.predict_logits(embedding, boxes_xyxy), embedding.original_size)

    def predict_logits(self, embedding: ImageEmbedding, boxes_xyxy: np.ndarray) -> torch.Tensor:
        """The decoder half of ``predict``: ``(N, h, w)`` float32 low-res mask logits on the CPU
        (256 x 256 for the released models), in box order; ``(0, 0, 0)`` for no boxes. Turn them
        into RLEs with ``encode_masks`` (pure CPU work, so it can run in another thread)."""
        boxes = _check_boxes(boxes_xyxy)
        if len(boxes) == 0:
            return torch.zeros((0, 0, 0))
        chunks = [
            self._decode(embedding, boxes[start : start + self.max_boxes_per_call])
            for start in range(0, len(boxes), self.max_boxes_per_call)
        ]
        return torch.cat(chunks) if len(chunks) > 1 else chunks[0]

    @staticmethod
    def encode_masks(logits: torch.Tensor, original_size: tuple[int, int]) -> list[dict]:
        """``(N, h, w)`` low-res logits -> N full-resolution COCO RLEs for an image of
        ``original_size`` ``(height, width)``; masks are upsampled only where they can be positive."""
        if len(logits) == 0:
            return []
        height, width = original_size
        # Interpolation weights depend only on the sizes: computed once per call.
        axes = (_BilinearAxis.build(logits.shape[-2], height), _BilinearAxis.build(logits.shape[-1], width))
        return [_logits_to_rle(mask_logits, *axes) for mask_logits in logits]

    def segment(self, images: list, boxes: list[np.ndarray]) -> list[list[dict]]:
        """``embed`` + ``predict``: for each image, one RLE per box (see ``predict``)."""
        images = list(images)
        if len(images) != len(boxes):
            raise ValueError(f"got {len(images)} images but {len(boxes)} box arrays")
        embeddings = self.embed(images)
        return [self.predict(embedding, image_boxes) for embedding, image_boxes in zip(embeddings, boxes)]

    def _decode(self, embedding: ImageEmbedding, boxes: np.ndarray) -> torch.Tensor:
        """Low-res mask logits ``(n, h, w)`` float32 on the CPU for ``(n, 4)`` boxes in original pixels."""
        height, width = embedding.original_size
        # The processor's own box scaling (per axis, original pixels -> the stretched square).
        prompt = self.processor(
            original_sizes=[[height, width]], input_boxes=[boxes.tolist()], return_tensors="pt"
        )["input_boxes"].to(self.device)
        with torch.inference_mode():
            outputs = self.model(
                image_embeddings=list(embedding.features), input_boxes=prompt, multimask_output=False
            )
        # pred_masks: (1 image, n boxes, 1 mask, h, w). Upsampling runs in float32 on the CPU: the
        # result must not depend on the device, and the RLE is built on the CPU anyway.
        return outputs.pred_masks[0, :, 0].to(device="cpu", dtype=torch.float32)


# -- exact, region-limited upsampling -------------------------------------------------------------


class _BilinearAxis(NamedTuple):
    """Per output pixel along one axis: the two source cells and their weights, as ATen computes
    them for ``F.interpolate(mode="bilinear", align_corners=False)`` with an output size.

    ``index0``, ``index1``: ``(out,)`` int64 source cells; ``weight0``, ``weight1``: ``(out,)`` float32.
    """

    index0: torch.Tensor
    index1: torch.Tensor
    weight0: torch.Tensor
    weight1: torch.Tensor

    @classmethod
    def build(cls, in_size: int, out_size: int) -> "_BilinearAxis":
        scale = torch.tensor(in_size, dtype=torch.float32) / out_size  # ATen: float32 in / out
        centres = torch.arange(out_size, dtype=torch.float32) + 0.5
        # source = scale * (dst + 0.5) - 0.5 with one rounding, as the compiled kernel does (see
        # _fma); rounding the product first moves weights by ~1e-6, enough to flip the odd pixel.
        source = _fma(centres, scale, torch.full_like(centres, -0.5)).clamp_min(0)
        index0 = source.floor().to(torch.int64).clamp_max(in_size - 1)
        index1 = (index0 + 1).clamp_max(in_size - 1)
        weight1 = (source - index0).clamp(0, 1)
        return cls(index0, index1, 1 - weight1, weight1)

    def hits(self, source_hit: torch.Tensor) -> tuple[int, int] | None:
        """``[start, stop)`` of the output pixels that read any source cell where ``source_hit``
        (``(in,)`` bool) is true; None if there are none."""
        reads = torch.nonzero(source_hit[self.index0] | source_hit[self.index1]).flatten()
        if len(reads) == 0:
            return None
        return int(reads[0]), int(reads[-1]) + 1

    def crop(self, start: int, stop: int) -> "_BilinearAxis":
        return _BilinearAxis(*(t[start:stop] for t in self))


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a * b + c`` (float32, broadcasting). ``torch.addcmul`` fuses the multiply-add where the CPU
    has FMA, as the compiler does in ATen's interpolation kernel, so the two round alike."""
    return torch.addcmul(c, a, b)


def _logits_to_rle(logits: torch.Tensor, rows: _BilinearAxis, cols: _BilinearAxis) -> dict:
    """Full-frame COCO RLE of ``upsample(logits) > 0`` without a full-frame float mask.

    ``logits``: ``(h, w)`` float32 low-res mask logits (CPU). ``rows``/``cols``: weights from ``h``/``w``
    to the frame's ``H``/``W``. A bilinear value is a convex combination of the (up to) four cells
    it reads, so it can only be positive where it reads a positive cell: outside the rectangle of
    such pixels the mask is exactly empty and never computed. Inside, values are computed in ATen's
    operation order (columns, then rows, each ``fma(v0, w0, v1 * w1)``).
    """
    height, width = len(rows.index0), len(cols.index0)
    positive = logits > 0
    row_span = rows.hits(positive.any(dim=1))
    col_span = cols.hits(positive.any(dim=0))
    if row_span is None or col_span is None:
        return region_to_rle(np.zeros((0, 0), dtype=bool), 0, 0, height, width)
    (y0, y1), (x0, x1) = row_span, col_span
    rows, cols = rows.crop(y0, y1), cols.crop(x0, x1)
    # Interpolate along x for every low-res row once: (h, x1 - x0), small (h is 256 at most).
    along_x = _fma(logits[:, cols.index0], cols.weight0, logits[:, cols.index1] * cols.weight1)
    region = np.empty((y1 - y0, x1 - x0), dtype=bool)
    strip = max(1, _STRIP_PIXELS // (x1 - x0))
    for s in range(0, y1 - y0, strip):
        r = rows.crop(s, s + strip)
        values = _fma(along_x[r.index0], r.weight0[:, None], along_x[r.index1] * r.weight1[:, None])
        region[s : s + strip] = (values > 0).numpy()
    return region_to_rle(region, x0, y0, height, width)


# -- input checks ---------------------------------------------------------------------------------


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


def _check_images(images: list) -> None:
    from PIL import Image

    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise ValueError(f"images[{i}] must be a PIL.Image.Image, got {type(image).__name__}")


def _check_boxes(boxes_xyxy) -> np.ndarray:
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes_xyxy must have shape (N, 4), got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes_xyxy contains NaN or infinite values")
    return boxes
