"""What the engine needs from a model family: a preprocessor, a detector, a segmenter.

Two levels, as in segment-anything's predictor: an expensive, prompt-independent pass per image
(``encode_images`` / ``embed``) and cheap calls on its result (``detect`` / ``predict``), so a cached
image can be re-prompted without the backbone. Sizes are ``(width, height)`` of the original,
EXIF-oriented image; boxes are ``xyxy`` pixels of that frame, masks COCO RLEs at that size.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from autolabel.detections import Detections
from autolabel.geometry import Size


@runtime_checkable
class Preprocessor(Protocol):
    """Decoded pixels -> one image's model input; chosen when the model is loaded (exact or fast)."""

    on_device: bool  # False: runs on the CPU, in the decode workers

    def decode_side(self, size: Size) -> int | None:
        """The long side to decode an image of ``size`` at; None: full size."""

    def __call__(self, pixels: torch.Tensor, size: Size, device: str | torch.device = "cpu") -> torch.Tensor:
        """``(h, w, 3)`` uint8 pixels (the original, or a reduced copy with its aspect ratio) of an
        image whose original size is ``size`` -> its ``(3, S, S)`` float32 model input on ``device``."""


@runtime_checkable
class Detector(Protocol):
    """Open-vocabulary detection, split at the prompt boundary."""

    name: str  # the checkpoint it was loaded from (hub id or folder): recorded with a run
    device: str
    preprocessor: Preprocessor
    yields_masks: bool  # postprocess gives masks too, so segment mode needs no segmenter
    compiled: bool

    def compile_vision(self, **options) -> None:
        """``torch.compile`` the prompt-independent vision part (opt-in, once)."""

    def encode_text(self, queries: tuple[str, ...] | list[str]) -> Any:
        """Encode prompts once (cached per prompt list)."""

    def encode_images(self, pixel_values: torch.Tensor) -> Any:
        """``(B, 3, S, S)`` model inputs -> features of B images (prompt independent where the family
        allows). May return before the device has finished (asynchronous on a GPU)."""

    def score(self, features: Any, text: Any) -> Any:
        """Raw per-candidate scores of every image for these prompts (queued on the device).
        Detectors that make masks also take ``masks: bool = True`` (False: boxes and scores only)."""

    def postprocess(self, scores: Any, sizes: list[Size], ontology, config) -> list[Detections]:
        """Raw scores -> final ``Detections`` per image (thresholds, boxes in original pixels, NMS)."""

    def detect(self, features: Any, text: Any, sizes: list[Size], ontology, config) -> list[Detections]:
        """``postprocess(score(features, text), ...)``: one call for cached features."""


@runtime_checkable
class Segmenter(Protocol):
    """Box-prompted masks: ``embed`` once per image, ``predict`` per set of boxes. ``points``, where
    given, refine them: per box a list of ``(x, y, label)`` clicks in the image's pixels (label 1:
    part of the object, 0: not part of it; an empty list: the box alone)."""

    name: str
    device: str
    preprocessor: Preprocessor

    def embed(self, pixel_values: torch.Tensor, sizes: list[Size]) -> list[Any]:
        """``(B, 3, S, S)`` model inputs of images of ``sizes`` -> one embedding each."""

    def predict_logits(self, embedding: Any, boxes_xyxy: np.ndarray, points=None) -> torch.Tensor:
        """The device half of ``predict``: low-resolution mask logits on the CPU."""

    def encode_masks(self, logits: torch.Tensor, size: Size) -> list[dict]:
        """The CPU half of ``predict``: logits -> full-resolution COCO RLEs (thread-safe)."""

    def predict(self, embedding: Any, boxes_xyxy: np.ndarray, points=None) -> list[dict]:
        """One COCO RLE per box, in box order."""


def model_inputs(preprocessor: Preprocessor, images, sizes: list[Size] | None = None,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """RGB PIL images or ``(h, w, 3)`` uint8 arrays -> ``(B, 3, S, S)`` float32 model inputs on
    ``device``. ``sizes``: each one's original size when it is a reduced copy."""
    from autolabel.models.preprocess import as_hwc_uint8

    pixels = [as_hwc_uint8(image) for image in images]
    sizes = sizes or [Size(int(p.shape[1]), int(p.shape[0])) for p in pixels]
    if len(sizes) != len(pixels):
        raise ValueError(f"got {len(pixels)} images but {len(sizes)} sizes")
    with torch.inference_mode():
        return torch.stack([preprocessor(p, Size(*size), device) for p, size in zip(pixels, sizes)])
