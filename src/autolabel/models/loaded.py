"""What every model family's class shares: the transformers model on its device in its dtype, the
one load path (``models.loading`` in a ``models.precision`` plan), the preprocessor chosen from the
image processor alone, and opt-in compilation.

A family class sets ``family`` (its name in errors) and ``attention`` (None: the plan's), and
implements ``checkpoint_classes`` (which transformers classes load a checkpoint) and
``make_preprocessor`` (the ``models.base.Preprocessor`` its image processor gets); detectors and
segmenters add the calls of their protocol that every family makes the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from autolabel.detections import Detections
from autolabel.geometry import Size
from autolabel.models.loading import load_checkpoint, load_pretrained
from autolabel.models.masks import check_boxes
from autolabel.models.prompts import PromptCache


class LoadedModel:
    """Base of the family classes (detectors and segmenters). Holds no per-image state."""

    family = "model"
    attention: str | dict | None = None

    def __init__(self, model, processor, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 exact: bool = False):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = processor
        self.name = str(name)
        self.device = device
        self.dtype = dtype
        self.preprocessor = self.make_preprocessor(processor.image_processor, exact)
        self.compiled = False

    @classmethod
    def checkpoint_classes(cls, name_or_path: str) -> tuple:
        """``(model class, processor class)`` that load ``name_or_path``."""
        raise NotImplementedError

    @classmethod
    def make_preprocessor(cls, image_processor, exact: bool):
        """The preprocessor for this image processor: ``exact`` asks for the stock one."""
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str = "cpu", precision: str = "fp32", exact: bool = False):
        """Load a checkpoint on ``device`` in ``precision`` (``models.precision``: fp32, bf16, fp16,
        int8 or auto)."""
        from autolabel.models.precision import resolve_precision

        plan = resolve_precision(precision, device)
        model_class, processor_class = cls.checkpoint_classes(name_or_path)
        model, processor = load_checkpoint(model_class, processor_class, name_or_path, cls.family, plan,
                                           cls.attention)
        return cls(model, processor, name_or_path, device, plan.dtype, exact)

    @classmethod
    def load_preprocessor(cls, name_or_path: str, exact: bool = False):
        """The preprocessor a loaded model of ``name_or_path`` gets, from its processor alone (no weights)."""
        _, processor_class = cls.checkpoint_classes(name_or_path)
        processor = load_pretrained(processor_class, name_or_path, f"the {cls.family} processor")
        return cls.make_preprocessor(processor.image_processor, exact)

    def _compile(self, owner, attribute: str, dynamic: bool, **options) -> None:
        """``torch.compile`` ``owner.attribute`` in place, once."""
        if not self.compiled:
            setattr(owner, attribute, torch.compile(getattr(owner, attribute), dynamic=dynamic, **options))
            self.compiled = True


class LoadedDetector(LoadedModel):
    """A ``models.base.Detector``'s shared calls: ``encode_text`` through a per-prompt-list LRU
    cache of the family's ``_encode_text(queries)``, and ``detect``."""

    yields_masks = False

    def __init__(self, model, processor, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 exact: bool = False):
        super().__init__(model, processor, name, device, dtype, exact)
        self._text_cache = PromptCache(self._encode_text)

    def encode_text(self, queries: list[str] | tuple[str, ...]):
        """Encode prompts once; later calls with the same prompt list hit a small LRU cache."""
        return self._text_cache(queries)

    def _encode_text(self, queries: tuple[str, ...]):
        raise NotImplementedError

    def detect(self, features, text, sizes: list[Size], ontology, config) -> list[Detections]:
        return self.postprocess(self.score(features, text), sizes, ontology, config)


class LoadedSegmenter(LoadedModel):
    """A ``models.base.Segmenter``'s shared calls: box and point checks and chunked decoding around
    the family's ``_decode(embedding, boxes, points)``, and ``predict``."""

    # The decoder copies the image embeddings once per box (~30 MB per box at 1024 px, float32), so
    # many boxes are decoded in chunks of this many.
    max_boxes_per_call = 64

    def predict(self, embedding, boxes_xyxy: np.ndarray, points=None) -> list[dict]:
        """N full-resolution COCO RLEs, in box order, for ``(N, 4)`` ``xyxy`` boxes in the image's
        pixels; the single best mask per box (``multimask_output=False``). ``points``: per box, the
        ``(x, y, label)`` clicks that refine its mask (``models.base.Segmenter``)."""
        return self.encode_masks(self.predict_logits(embedding, boxes_xyxy, points), embedding.size)

    def predict_logits(self, embedding, boxes_xyxy: np.ndarray, points=None) -> torch.Tensor:
        """The decoder half of ``predict``: ``(N, h, w)`` float32 low-res mask logits on the CPU, in
        box order; ``(0, 0, 0)`` for no boxes."""
        boxes = check_boxes(boxes_xyxy)
        clicks = check_points(points, len(boxes))
        if len(boxes) == 0:
            return torch.zeros((0, 0, 0))
        # Boxes are decoded with the others that have as many clicks (none: the box alone), so the
        # decoder never sees padding clicks; a box's mask can vary in the last bits with its batch.
        groups: dict[int, list[int]] = {}
        for i, box_clicks in enumerate(clicks):
            groups.setdefault(len(box_clicks), []).append(i)
        decoded = []
        for count, members in groups.items():
            for start in range(0, len(members), self.max_boxes_per_call):
                chunk = members[start : start + self.max_boxes_per_call]
                prompt = np.stack([clicks[i] for i in chunk]) if count else None
                decoded.append((chunk, self._decode(embedding, boxes[chunk], prompt)))
        if len(decoded) == 1:
            return decoded[0][1]
        logits = torch.empty((len(boxes), *decoded[0][1].shape[1:]), dtype=torch.float32)
        for chunk, chunk_logits in decoded:
            logits[chunk] = chunk_logits
        return logits

    def _decode(self, embedding, boxes: np.ndarray, points: np.ndarray | None = None) -> torch.Tensor:
        """Low-res mask logits ``(n, h, w)`` float32 on the CPU for ``(n, 4)`` boxes in original
        pixels; ``points``: None, or ``(n, k, 3)`` clicks ``x, y, label`` (k >= 1) for each box."""
        raise NotImplementedError

    def encode_masks(self, logits: torch.Tensor, size: Size) -> list[dict]:
        raise NotImplementedError


def check_points(points, n_boxes: int) -> list[np.ndarray]:
    """Point prompts of ``n_boxes`` boxes as one ``(k, 3)`` float64 array of ``x, y, label`` per box
    (``(0, 3)``: the box alone; all of them for ``points=None``); ValueError for another number of
    boxes, other shapes, non-finite coordinates or labels other than 0 and 1."""
    if points is None:
        return [np.zeros((0, 3))] * n_boxes
    if len(points) != n_boxes:
        raise ValueError(f"got points for {len(points)} boxes but {n_boxes} boxes")
    checked = []
    for box_points in points:
        array = np.asarray(box_points, dtype=np.float64)
        array = array.reshape(0, 3) if array.size == 0 else array
        if array.ndim != 2 or array.shape[1] != 3:
            raise ValueError(f"each box's points must be (x, y, label) triples, got shape {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError("points contain NaN or infinite values")
        if not np.isin(array[:, 2], (0, 1)).all():
            raise ValueError("point labels must be 1 (part of the object) or 0 (not part of it)")
        checked.append(array)
    return checked


def check_batch(pixel_values: torch.Tensor, sizes: list) -> None:
    """One original size per image of the batch."""
    if len(sizes) != pixel_values.shape[0]:
        raise ValueError(f"got {pixel_values.shape[0]} images but {len(sizes)} sizes")
