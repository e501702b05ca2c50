"""Ground truth and predictions as in-memory label sets (``Detections`` per image, in original
oriented pixels, ``class_ids`` indexing the set's ``classes``), and pairing their images.

Ground truth comes from a COCO file, a YOLO dataset or a run folder (its reviewed images);
predictions from a run's store, where a label without a score (a human one) scores 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from autolabel.detections import Detections
from autolabel.errors import ConfigError
from autolabel.review_queue import run_thresholds
from autolabel.store import DB_NAME, Store, open_store


@dataclass
class LabelImage:
    """One image's labels; ``crowd``: ground-truth crowd regions (predictions on them are ignored)."""

    path: str
    width: int
    height: int
    sha256: str | None
    labels: Detections
    crowd: Detections = field(default_factory=Detections.empty)

    def for_classes(self, new_ids: np.ndarray) -> "LabelImage":
        """Class ids mapped through ``new_ids`` (old id -> new id, -1: dropped)."""

        def mapped(det: Detections) -> Detections:
            ids = new_ids[det.class_ids] if len(det) else det.class_ids
            kept = det[ids >= 0]
            return replace(kept, class_ids=ids[ids >= 0])

        return replace(self, labels=mapped(self.labels), crowd=mapped(self.crowd))


@dataclass
class LabelSet:
    """Labelled images of one side of an evaluation, with its class names (in order)."""

    classes: list[str]
    images: list[LabelImage]
    description: str
    threshold_floor: dict[str, float] = field(default_factory=dict)  # predictions: the run's thresholds

    def for_classes(self, classes: list[str]) -> "LabelSet":
        """The same labels with class ids indexing ``classes``; labels of other classes dropped."""
        new_ids = np.array([classes.index(n) if n in classes else -1 for n in self.classes], dtype=np.int64)
        return replace(self, classes=list(classes), images=[im.for_classes(new_ids) for im in self.images])


def from_store(store: Store, *, ground_truth: bool, model_only: bool = False) -> LabelSet:
    """Labels of a run. As ground truth: the reviewed images (an imported run marks all of them),
    every label not rejected. As predictions: every labelled image; a human label scores 1.0, or
    with ``model_only`` what the model predicted before review (``Store.model_predictions``)."""
    ontology = store.ontology
    images = []
    for record in store.images("done"):
        if ground_truth and not record.reviewed:
            continue
        labels = store.model_predictions(record.id) if model_only else store.labels(record.id)
        if not ground_truth:
            labels = replace(labels, scores=np.where(labels.has_score, labels.scores, 1.0))
        images.append(LabelImage(record.path, record.width, record.height, record.sha256, labels))
    if ground_truth and not images:
        raise ConfigError(f"{store.run_dir} has no reviewed images to use as ground truth "
                          "(import a dataset with `autolabel import`, or review images in the UI)")
    return LabelSet(ontology.names, images, str(store.run_dir), run_thresholds(store))


def from_path(source: str | Path, images_dir: str | Path | None = None, fmt: str | None = None) -> LabelSet:
    """Ground truth from a run folder, a COCO ``.json``, a YOLO ``data.yaml`` (or its folder), a Pascal
    VOC folder or a Label Studio JSON export (``importers.load_dataset``)."""
    source = Path(source)
    if source.is_dir() and (source / DB_NAME).exists():
        with open_store(source, create=False) as store:
            return from_store(store, ground_truth=True)
    from autolabel.importers import load_dataset

    dataset = load_dataset(source, fmt, images_dir)
    images = [LabelImage(im.path, im.width, im.height, im.sha256, im.labels, im.crowd)
              for im in dataset.images if not im.error]
    if not images:
        raise ConfigError(f"no readable images in {source}")
    return LabelSet(dataset.classes, images, str(source))


def pair_images(gt: LabelSet, pred: LabelSet) -> tuple[list[tuple[LabelImage, LabelImage]], list[str]]:
    """``(ground truth, prediction)`` pairs by absolute path, then by content (SHA-256) for files
    that moved; and the ground-truth paths the run does not have."""
    by_path = {im.path: im for im in pred.images}
    by_hash: dict[str, LabelImage | None] = {}
    for im in pred.images:
        if im.sha256:
            by_hash[im.sha256] = None if im.sha256 in by_hash else im  # ambiguous duplicates: no pairing
    pairs, missing = [], []
    for g in gt.images:
        p = by_path.get(g.path) or by_path.get(str(Path(g.path).resolve()))
        if p is None and g.sha256:
            p = by_hash.get(g.sha256)
        if p is None:
            missing.append(g.path)
            continue
        if (p.width, p.height) != (g.width, g.height):
            raise ConfigError(f"{g.path}: ground truth is {g.width}x{g.height} but the run's image is "
                              f"{p.width}x{p.height}")
        pairs.append((g, p))
    return pairs, missing
