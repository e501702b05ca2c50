"""The one inference path: images + ontology + config -> Detections (and masks).

``detect_batch`` and ``segment_batch`` are plain functions of (model handles, images, ontology,
config) so a distributed engine can run them in remote workers; no model lives in a module global.
``Labeler`` is the convenience object the CLI, the UI and the Python API share.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from autolabel.detections import Detections
from autolabel.errors import ConfigError
from autolabel.ontology import Ontology

log = logging.getLogger(__name__)

MODES = ("detect", "segment")


@dataclass(frozen=True)
class DetectConfig:
    """Post-processing of raw OWLv2 outputs.

    threshold: global score threshold; a class's own threshold in the ontology overrides it.
    nms_iou: per-class NMS IoU; ``None`` disables NMS (OWLv2's post-processing does none).
    agnostic_nms_iou: optional second NMS pass across classes (one box per object).
    min_area_frac / max_area_frac: keep boxes whose area is within these fractions of the image area.
    """

    threshold: float = 0.1
    nms_iou: float | None = 0.5
    agnostic_nms_iou: float | None = None
    min_area_frac: float = 0.0
    max_area_frac: float = 1.0

    def __post_init__(self) -> None:
        for name in ("threshold", "min_area_frac", "max_area_frac"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        for name in ("nms_iou", "agnostic_nms_iou"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {value}")
        if self.min_area_frac > self.max_area_frac:
            raise ConfigError("min_area_frac is larger than max_area_frac")

    def to_dict(self) -> dict:
        return asdict(self)


def postprocess(
    logits: np.ndarray,
    pred_boxes: np.ndarray,
    width: int,
    height: int,
    ontology: Ontology,
    config: DetectConfig,
) -> Detections:
    """Raw outputs of one image -> final Detections in original (oriented) pixels.

    logits: (P, Q) float32 per patch and query; pred_boxes: (P, 4) normalised cxcywh in the padded
    square. Score = sigmoid(max over queries), as transformers' post-processing does; the best query
    decides the class. Boxes are clipped to the image; boxes lying wholly in the padding are dropped.
    """
    from autolabel.geometry import batched_nms, clip_boxes, nms
    from autolabel.models.owlv2 import boxes_to_pixels

    best_query = logits.argmax(axis=1)
    best_logit = np.take_along_axis(logits, best_query[:, None], axis=1)[:, 0]
    scores = 1.0 / (1.0 + np.exp(-best_logit.astype(np.float64)))
    class_ids = ontology.query_class_ids[best_query]
    keep = scores > ontology.thresholds(config.threshold)[class_ids]

    boxes = clip_boxes(boxes_to_pixels(pred_boxes[keep], width, height), width, height)
    dets = Detections(boxes, scores[keep], class_ids[keep], best_query[keep])
    # Clipping collapses boxes that lay wholly in the padding (or outside) to zero area.
    area = dets.area
    image_area = float(width * height)
    dets = dets[(area > 0) & (area >= config.min_area_frac * image_area) & (area <= config.max_area_frac * image_area)]

    order = np.argsort(-dets.scores, kind="stable")
    dets = dets[order]
    if config.nms_iou is not None and len(dets):
        dets = dets[batched_nms(dets.xyxy, dets.scores, dets.class_ids, config.nms_iou)]
    if config.agnostic_nms_iou is not None and len(dets):
        dets = dets[nms(dets.xyxy, dets.scores, config.agnostic_nms_iou)]
    return dets


def detect_batch(detector, images, sizes, ontology: Ontology, config: DetectConfig) -> list[Detections]:
    """Detect in a batch of images with one text encoding.

    images: RGB PIL images, EXIF-oriented (possibly shrunk, keeping aspect ratio);
    sizes: the (width, height) of each image's original oriented frame, which boxes are returned in.
    """
    if not images:
        return []
    text = detector.encode_text(ontology.queries)
    features = detector.encode_images(detector.preprocess(images))
    logits = detector.class_logits(features, text).cpu().numpy()
    pred_boxes = features.pred_boxes.cpu().numpy()
    return [
        postprocess(logits[i], pred_boxes[i], w, h, ontology, config) for i, (w, h) in enumerate(sizes)
    ]


def segment_batch(segmenter, images, detections: list[Detections]) -> list[Detections]:
    """Add one COCO RLE mask per box (SAM2: one embedding per image, all its boxes in one call).

    Images must be at full original resolution: masks come back in that frame.
    """
    masks = segmenter.segment(list(images), [d.xyxy for d in detections])
    out = []
    for dets, rles in zip(detections, masks):
        out.append(Detections(dets.xyxy, dets.scores, dets.class_ids, dets.prompt_ids, list(rles)))
    return out


@dataclass
class Labeler:
    """Images + ontology -> Detections, with models loaded on first use.

    >>> labeler = Labeler(Ontology.from_prompts(["car=car,van", "person"]), model="google/owlv2-base-patch16")
    >>> dets = labeler.label_images([pil_image])[0]
    """

    ontology: Ontology
    model: str
    sam_model: str | None = None
    mode: str = "detect"
    config: DetectConfig = field(default_factory=DetectConfig)
    device: str = "auto"
    dtype: str = "auto"
    _detector: object = field(default=None, init=False, repr=False)
    _segmenter: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "segment" and not self.sam_model:
            raise ConfigError("segment mode needs a SAM2 model (--sam-model)")

    @property
    def detector(self):
        if self._detector is None:
            from autolabel.models.owlv2 import Owlv2Detector
            from autolabel.settings import resolve_device, resolve_dtype

            device = resolve_device(self.device)
            self._detector = Owlv2Detector.from_pretrained(self.model, device, resolve_dtype(self.dtype, device))
        return self._detector

    @property
    def segmenter(self):
        """SAM2, loaded only in segment mode."""
        if self._segmenter is None:
            from autolabel.models.sam2 import Sam2Segmenter
            from autolabel.settings import resolve_device, resolve_dtype

            device = resolve_device(self.device)
            self._segmenter = Sam2Segmenter.from_pretrained(self.sam_model, device, resolve_dtype(self.dtype, device))
        return self._segmenter

    def run_config(self) -> dict:
        """What identifies a run's output: a store refuses to mix results of different configs."""
        return {
            "model": self.model,
            "sam_model": self.sam_model if self.mode == "segment" else None,
            "mode": self.mode,
            "ontology": self.ontology.to_dict(),
            "detect": self.config.to_dict(),
        }

    def label_images(self, images, sizes=None) -> list[Detections]:
        """Label RGB PIL images (already oriented). ``sizes`` defaults to each image's own size."""
        images = list(images)
        sizes = sizes or [im.size for im in images]
        dets = detect_batch(self.detector, images, sizes, self.ontology, self.config)
        if self.mode == "segment":
            dets = segment_batch(self.segmenter, images, dets)
        return dets
