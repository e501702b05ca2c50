"""SAM2 box-prompted masks with a two-level API (as in segment-anything's predictor).

``embed()`` runs the image encoder once per image (the expensive part); ``predict()`` decodes masks
for any set of boxes on a cached embedding (cheap), so a UI can re-prompt without re-encoding.
Model inputs come from ``Sam2Segmenter.preprocessor``, chosen when the model is loaded.

Frames: boxes go in and masks come out in the original image's pixels (the EXIF-oriented frame).
The processor stretches every image to a square (1024 x 1024 for the released models) without
keeping the aspect ratio and scales the boxes per axis; the decoder emits low-res mask logits
(256 x 256 at 1024 px) in that stretched square.

Memory: ``processor.post_process_masks`` upsamples every mask to the full frame as float32 (100 masks
on a 12 MP image are ~5 GB). We upsample each mask only inside the one rectangle of the frame where
it can be positive and encode that rectangle straight to a full-frame COCO RLE, reproducing the
values ``F.interpolate(mode="bilinear", align_corners=False)`` computes there (see
``BilinearAxis``), so the masks equal the recipe's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from autolabel.errors import ModelLoadError
from autolabel.geometry import Size, region_to_rle
from autolabel.models.interpolation import BilinearAxis, fma
from autolabel.models.loading import load_pretrained
from autolabel.models.preprocess import draft_side, sam2_pixel_values

# Upsampling works on this many region pixels at a time, bounding its float32 temporaries (~20 MB).
_STRIP_PIXELS = 1 << 20


@dataclass(frozen=True)
class ImageEmbedding:
    """Encoder output for one image: all ``predict()`` needs to decode masks for any boxes.

    ``features``: the model's image embeddings for this image, high resolution first, each
    ``(1, C_l, h_l, w_l)`` on the segmenter's device and dtype (for 1024 px: 256x256, 128x128, 64x64).
    ``size``: the original image's size (the frame boxes and masks are in).
    """

    features: tuple[torch.Tensor, ...]
    size: Size


class Sam2Preprocessor:
    """SAM2 encoder input (see ``models.base.Preprocessor``).

    Exact: full decode and the stock ``Sam2ImageProcessor``. Fast: JPEGs draft-decoded to at least
    the model's input size on both sides (SAM2 stretches each axis to the square), then the
    processor's own operations in torch (``sam2_pixel_values``, bit-exact on the same pixels on the
    CPU), on the model's device when it has one.
    """

    def __init__(self, image_processor, exact: bool):
        ip = image_processor
        standard = ip.do_resize and ip.do_rescale and ip.do_normalize and not getattr(ip, "do_pad", None)
        self.image_processor = ip
        self.exact = exact or not standard  # settings we do not reproduce: the processor itself
        self.on_device = not self.exact
        self.size = int(ip.size["height"])

    def decode_side(self, size: Size) -> int | None:
        if self.exact:
            return None
        return draft_side(*size, min_long=self.size, min_short=self.size)

    def __call__(self, pixels: torch.Tensor, size: Size, device="cpu") -> torch.Tensor:
        if not self.exact:
            return sam2_pixel_values(pixels, self.image_processor, device)
        values = self.image_processor(images=[pixels.cpu().numpy()], return_tensors="pt")["pixel_values"][0]
        return values.to(device=device, dtype=torch.float32)


class Sam2Segmenter:
    """Box-prompted masks (``models.base.Segmenter``): ``embed()`` once per image (expensive),
    ``predict()`` per box set (cheap), so a UI can re-prompt without re-encoding."""

    def __init__(self, model, processor, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 exact: bool = False, max_boxes_per_call: int = 64):
        """``max_boxes_per_call`` bounds one decoder call: the decoder copies the image embeddings
        once per box (~30 MB per box at 1024 px, float32), so many boxes are decoded in chunks."""
        if max_boxes_per_call < 1:
            raise ValueError(f"max_boxes_per_call must be >= 1, got {max_boxes_per_call}")
        _check_sizes_agree(model, processor)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = processor
        self.name = str(name)
        self.device = device
        self.dtype = dtype
        self.max_boxes_per_call = max_boxes_per_call
        self.preprocessor = Sam2Preprocessor(processor.image_processor, exact)

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                        exact: bool = False, max_boxes_per_call: int = 64) -> "Sam2Segmenter":
        """Load a checkpoint (hub id such as ``facebook/sam2.1-hiera-large`` or a local directory;
        safetensors only). Raises ``ModelLoadError``."""
        from transformers import Sam2Model, Sam2Processor

        processor = load_pretrained(Sam2Processor, name_or_path, "the SAM2 processor")
        model = load_pretrained(Sam2Model, name_or_path, "the SAM2 model", dtype=dtype)
        return cls(model, processor, name_or_path, device, dtype, exact, max_boxes_per_call)

    @property
    def image_size(self) -> int:
        """Side of the square the encoder sees (1024 for the released models)."""
        return int(self.model.config.prompt_encoder_config.image_size)

    # -- encoder ------------------------------------------------------------------------------------

    def embed(self, pixel_values: torch.Tensor, sizes: list[Size]) -> list[ImageEmbedding]:
        """Encode ``(B, 3, S, S)`` model inputs (from ``preprocessor``) in one encoder batch; one
        embedding per image, for images of original ``sizes``."""
        if len(sizes) != pixel_values.shape[0]:
            raise ValueError(f"got {pixel_values.shape[0]} images but {len(sizes)} sizes")
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            levels = self.model.get_image_embeddings(pixel_values)
        return [ImageEmbedding(tuple(level[i : i + 1] for level in levels), Size(*map(int, size)))
                for i, size in enumerate(sizes)]

    # -- decoder ------------------------------------------------------------------------------------

    def predict(self, embedding: ImageEmbedding, boxes_xyxy: np.ndarray) -> list[dict]:
        """Masks for ``boxes_xyxy`` (``(N, 4)`` float ``x0, y0, x1, y1`` in the image's pixels).

        Returns N COCO RLEs (``{"size": [H, W], "counts": str}``) at the image's full resolution, in
        box order; ``[]`` when N = 0. All boxes go through the decoder together, in chunks of
        ``max_boxes_per_call``; the single best mask per box (``multimask_output=False``).
        """
        return self.encode_masks(self.predict_logits(embedding, boxes_xyxy), embedding.size)

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
    def encode_masks(logits: torch.Tensor, size: Size) -> list[dict]:
        """``(N, h, w)`` low-res logits -> N full-resolution COCO RLEs for an image of ``size``;
        masks are upsampled only where they can be positive."""
        if len(logits) == 0:
            return []
        width, height = size
        # Interpolation weights depend only on the sizes: computed once per call.
        axes = (BilinearAxis.build(logits.shape[-2], height), BilinearAxis.build(logits.shape[-1], width))
        return [_logits_to_rle(mask_logits, *axes) for mask_logits in logits]

    def _decode(self, embedding: ImageEmbedding, boxes: np.ndarray) -> torch.Tensor:
        """Low-res mask logits ``(n, h, w)`` float32 on the CPU for ``(n, 4)`` boxes in original pixels."""
        width, height = embedding.size
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


def _logits_to_rle(logits: torch.Tensor, rows: BilinearAxis, cols: BilinearAxis) -> dict:
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
    along_x = fma(logits[:, cols.index0], cols.weight0, logits[:, cols.index1] * cols.weight1)
    region = np.empty((y1 - y0, x1 - x0), dtype=bool)
    strip = max(1, _STRIP_PIXELS // (x1 - x0))
    for s in range(0, y1 - y0, strip):
        r = rows.crop(s, s + strip)
        values = fma(along_x[r.index0], r.weight0[:, None], along_x[r.index1] * r.weight1[:, None])
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


def _check_boxes(boxes_xyxy) -> np.ndarray:
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes_xyxy must have shape (N, 4), got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes_xyxy contains NaN or infinite values")
    return boxes
