"""Training examples for fine-tuning: where they come from, and augmentation that keeps boxes right.

An ``Example`` is one image: its path, oriented original ``Size`` and labels (``Detections`` whose
class ids index the dataset's ontology), from a run's store or a COCO file. Augmentation (flip,
zoom-in crop) moves the boxes with the pixels; the box target is the inference box transform run
backwards (``boxes_to_target``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from autolabel.detections import Detections
from autolabel.errors import ConfigError
from autolabel.geometry import Size
from autolabel.ontology import Ontology

log = logging.getLogger(__name__)

LABEL_POLICIES = ("auto", "reviewed", "all")

# Generic object names used as sampled negative queries next to the dataset's own absent classes, so
# the class head keeps telling text queries apart instead of learning "any query = my objects".
# Names equal to a dataset class or prompt are never used as negatives.
NEGATIVE_VOCABULARY: tuple[str, ...] = (
    "airplane", "apple", "backpack", "ball", "banana", "bed", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "bowl", "box", "bridge", "broccoli", "building", "bus", "butterfly", "cake", "camera", "candle", "car",
    "carrot", "cat", "chair", "clock", "cloud", "computer", "couch", "cow", "cup", "curtain", "desk", "dog",
    "door", "elephant", "fence", "fire hydrant", "flag", "flower", "fork", "frisbee", "giraffe", "guitar", "hat",
    "helmet", "horse", "house", "jacket", "keyboard", "kite", "knife", "ladder", "lamp", "laptop", "leaf",
    "microwave", "mirror", "motorcycle", "mountain", "mouse", "mug", "orange", "oven", "painting", "parking meter",
    "pen", "person", "phone", "pillow", "pizza", "plant", "plate", "potted plant", "refrigerator", "remote",
    "road", "rock", "sandwich", "scissors", "sheep", "shoe", "sign", "sink", "skateboard", "ski", "sofa", "spoon",
    "stop sign", "suitcase", "surfboard", "table", "teddy bear", "tennis racket", "tie", "toilet", "toothbrush",
    "towel", "traffic light", "train", "tree", "truck", "umbrella", "vase", "wall", "watch", "window",
    "wine glass", "zebra",
)


@dataclass(frozen=True)
class Example:
    """One training image: its labels in the oriented original frame of ``size``."""

    path: str
    size: Size
    labels: Detections


@dataclass(frozen=True)
class Dataset:
    """Examples plus the ontology (class order and the prompts each class is trained with)."""

    examples: tuple[Example, ...]
    ontology: Ontology
    description: str = ""

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def num_boxes(self) -> int:
        return sum(len(e.labels) for e in self.examples)

    def fingerprint(self) -> str:
        """Hash of everything that defines the training data (paths, sizes, boxes, classes, prompts)."""
        import hashlib

        names = self.ontology.names
        digest = hashlib.sha256(json.dumps(self.ontology.to_dict(), sort_keys=True).encode())
        for ex in self.examples:
            classes = "|".join(names[c] for c in ex.labels.class_ids)
            digest.update(f"{ex.path}|{ex.size.width}|{ex.size.height}|{classes}".encode())
            digest.update(np.round(ex.labels.xyxy.astype(np.float64), 3).tobytes())
        return digest.hexdigest()[:16]


def load_examples(source: str | Path, *, labels: str = "auto", min_score: float = 0.3,
                  images_dir: str | Path | None = None, ontology: Ontology | None = None) -> Dataset:
    """A run folder (has ``autolabel.db``) or a COCO JSON file -> Dataset."""
    from autolabel.store import DB_NAME

    source = Path(source)
    if source.is_dir():
        if not (source / DB_NAME).exists():
            raise ConfigError(f"{source} is a folder but not a run folder (no {DB_NAME}); give a run or a COCO .json")
        return load_store_examples(source, labels=labels, min_score=min_score)
    if source.is_file():
        return load_coco_examples(source, images_dir=images_dir, ontology=ontology)
    raise ConfigError(f"training data not found: {source} (give a run folder or a COCO .json file)")


def load_store_examples(run_dir: str | Path, *, labels: str = "auto", min_score: float = 0.3) -> Dataset:
    """Examples from a run's store. ``labels``: ``reviewed`` (the reviewed images, every label not
    rejected), ``all`` (every labelled image; on unreviewed ones only human, accepted and model labels
    scoring ``min_score`` or more) or ``auto`` (``reviewed`` if the run has reviewed images)."""
    from autolabel.store import open_store

    if labels not in LABEL_POLICIES:
        raise ConfigError(f"labels must be one of {', '.join(LABEL_POLICIES)}, got {labels!r}")
    if not 0.0 <= min_score <= 1.0:
        raise ConfigError(f"min_score must be in [0, 1], got {min_score}")
    with open_store(run_dir, create=False) as store:
        ontology = store.ontology
        records = list(store.images("done"))
        n_reviewed = sum(r.reviewed for r in records)
        policy = labels
        if policy == "auto":
            policy = "reviewed" if n_reviewed else "all"
        if policy == "reviewed" and not n_reviewed:
            raise ConfigError(f"{run_dir} has no reviewed images; review some in the UI or use --labels all")
        examples = []
        for record in records:
            if policy == "reviewed" and not record.reviewed:
                continue
            det = store.labels(record.id)
            trusted = record.reviewed | (det.sources == "human") | (det.reviews == "accepted")
            keep = trusted | (det.has_score & (det.scores >= min_score))  # NaN: no score
            examples.append(Example(record.path, Size(int(record.width), int(record.height)), det[keep]))
    if not examples:
        raise ConfigError(f"{run_dir} has no labelled images to train on")
    missing = [e.path for e in examples if not Path(e.path).is_file()]
    if missing:
        raise ConfigError(f"{len(missing)} training image(s) no longer exist, e.g. {missing[0]}")
    what = "reviewed images" if policy == "reviewed" else f"images (model labels with score >= {min_score})"
    return Dataset(tuple(examples), ontology, f"{len(examples)} {what} from {run_dir}")


def load_coco_examples(json_path: str | Path, *, images_dir: str | Path | None = None,
                       ontology: Ontology | None = None) -> Dataset:
    """Examples from a COCO file, read by ``importers.coco.load_coco`` (images without boxes are
    negatives; crowd regions are not trained on). ``ontology`` sets the classes' prompts (default:
    each category's name); categories it does not name are left out."""
    from autolabel.evaluation.sources import LabelImage, LabelSet
    from autolabel.importers.coco import load_coco

    coco = load_coco(json_path, images_dir, hash_files=False)
    failed = [image.error for image in coco.images if image.error]
    if failed:
        raise ConfigError(f"{json_path}: {len(failed)} image(s) cannot be used, e.g. {failed[0]}; "
                          "pass the image folder (--images) or fix the file")
    if ontology is None:
        ontology = Ontology.from_classes(coco.classes)
    skipped = sorted(set(coco.classes) - set(ontology.names))
    if skipped:
        log.warning("%s: categories not in the ontology are left out: %s", json_path, ", ".join(skipped))
    images = [LabelImage(im.path, im.width, im.height, None, im.labels) for im in coco.images]
    ours = LabelSet(coco.classes, images, str(json_path)).for_classes(ontology.names)
    examples = [Example(im.path, Size(im.width, im.height), im.labels) for im in ours.images]
    if not examples:
        raise ConfigError(f"{json_path} lists no images")
    return Dataset(tuple(examples), ontology, f"{len(examples)} images from {json_path}")


def negative_pool(ontology: Ontology, vocabulary: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Vocabulary names usable as negatives: those that are no class name or prompt of the ontology."""
    vocabulary = NEGATIVE_VOCABULARY if vocabulary is None else vocabulary
    taken = {n.lower() for n in ontology.names} | {q.lower() for q in ontology.queries}
    return tuple(v for v in dict.fromkeys(" ".join(v.split()) for v in vocabulary) if v and v.lower() not in taken)


def sample_queries(rng: np.random.Generator, present: set[int], ontology: Ontology, num_negatives: int,
                   pool: tuple[str, ...]) -> tuple[list[str], dict[int, int]]:
    """The query list of one training image and the query index of each present class id.

    Positives: one prompt (drawn among the class's prompts) per class present in the image.
    Negatives: up to ``num_negatives`` names, first the ontology's classes absent from the image
    (verified negatives), then names drawn from ``pool``.
    """
    queries: list[str] = []
    index: dict[int, int] = {}
    absent = []
    for k, cls in enumerate(ontology.classes):
        prompt = cls.prompts[int(rng.integers(len(cls.prompts)))]
        if k in present:
            index[k] = len(queries)
            queries.append(prompt)
        else:
            absent.append(prompt)
    n_absent = min(len(absent), num_negatives)
    if n_absent < len(absent):
        absent = [absent[i] for i in sorted(rng.choice(len(absent), n_absent, replace=False))]
    queries += absent
    n_vocab = min(num_negatives - n_absent, len(pool))
    if n_vocab > 0:
        queries += [pool[i] for i in rng.choice(len(pool), n_vocab, replace=False)]
    return queries, index


@dataclass(frozen=True)
class AugmentConfig:
    """hflip: probability of a horizontal flip; crop: probability of a random zoom-in crop keeping
    ``min_scale``..1 of each side; a box cut by the crop is kept (clipped) while at least
    ``min_visible`` of its area stays in view, else dropped."""

    hflip: float = 0.5
    crop: float = 0.5
    min_scale: float = 0.5
    min_visible: float = 0.4

    def __post_init__(self) -> None:
        for name in ("hflip", "crop", "min_visible"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augmentation {name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.min_scale <= 1.0:
            raise ConfigError(f"augmentation min_scale must be in (0, 1], got {self.min_scale}")

    @classmethod
    def none(cls) -> "AugmentConfig":
        return cls(hflip=0.0, crop=0.0)


@dataclass(frozen=True)
class AugmentParams:
    """One draw: flip or not, and the crop (or None) as fractions ``(x0, y0, x1, y1)`` of the image,
    so it can be drawn before decoding."""

    flip: bool = False
    crop: tuple[float, float, float, float] | None = None


def sample_augment(rng: np.random.Generator, config: AugmentConfig) -> AugmentParams:
    flip = bool(rng.random() < config.hflip)
    crop = None
    if rng.random() < config.crop:
        sw, sh = rng.uniform(config.min_scale, 1.0, size=2)
        x0, y0 = rng.uniform(0.0, 1.0 - sw), rng.uniform(0.0, 1.0 - sh)
        crop = (float(x0), float(y0), float(x0 + sw), float(y0 + sh))
    return AugmentParams(flip, crop)


def apply_augment(image, boxes: np.ndarray, params: AugmentParams, min_visible: float = 0.4):
    """Crop, then flip, a PIL image and its (N, 4) ``xyxy`` pixel boxes together -> (image, boxes,
    kept), ``kept`` indexing the input boxes still in view."""
    from PIL import Image

    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    kept = np.arange(len(boxes))
    if params.crop is not None:
        w, h = image.size
        fx0, fy0, fx1, fy1 = params.crop
        x0, y0 = int(round(fx0 * w)), int(round(fy0 * h))
        x1, y1 = max(x0 + 1, int(round(fx1 * w))), max(y0 + 1, int(round(fy1 * h)))
        image = image.crop((x0, y0, x1, y1))
        area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
        boxes = boxes - np.array([x0, y0, x0, y0], dtype=np.float32)
        boxes = np.clip(boxes, 0, [x1 - x0, y1 - y0, x1 - x0, y1 - y0]).astype(np.float32)
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        keep = (bw >= 1) & (bh >= 1) & (bw * bh >= min_visible * np.maximum(area, 1e-6))
        boxes, kept = boxes[keep], kept[keep]
    if params.flip:
        w = image.size[0]
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1).astype(np.float32)
    return image, boxes.reshape(-1, 4), kept


def boxes_to_target(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 4) ``xyxy`` pixels -> ``cx, cy, w, h`` / max(width, height): the processor pads bottom/right
    to a square. The inverse of ``models.owlv2.boxes_to_pixels``."""
    side = float(max(width, height))
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]],
                    axis=1).astype(np.float32) / side


class Augmented(NamedTuple):
    """An augmented image, its ``target`` boxes (``boxes_to_target``), which of the example's boxes
    they are, and the (width, height) the view has at the original resolution."""

    image: object
    target: np.ndarray
    kept: np.ndarray
    original_size: tuple[int, int]


def load_augmented(example: Example, params: AugmentParams, *, max_side: int | None,
                   min_visible: float = 0.4) -> Augmented:
    """Decode an example (EXIF-oriented, long side at most ``max_side``) and augment it with its boxes."""
    from autolabel.images import load_image

    loaded = load_image(example.path, max_side=max_side)
    # The decoded frame is the original scaled by (image size / original size) on each axis.
    sx, sy = loaded.image.size[0] / example.size.width, loaded.image.size[1] / example.size.height
    boxes = example.labels.xyxy.astype(np.float32) * np.array([sx, sy, sx, sy], dtype=np.float32)
    image, boxes, kept = apply_augment(loaded.image, boxes, params, min_visible)
    original = (max(1, round(image.size[0] / sx)), max(1, round(image.size[1] / sy)))
    return Augmented(image, boxes_to_target(boxes, *image.size), kept, original)
