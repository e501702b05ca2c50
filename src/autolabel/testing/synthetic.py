"""Synthetic runs for tests of exports, imports and evaluation: real image files + a store holding
labels we choose (no model). Coordinates are original oriented pixels, as everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from autolabel.detections import Detections
from autolabel.ontology import Ontology
from autolabel.store import ImageResult, Store, open_store


@dataclass
class Label:
    """A label to store: class name, ``xyxy``, score (None: a human label), optional boolean mask."""

    class_name: str
    xyxy: tuple[float, float, float, float]
    score: float | None = 0.9
    mask: np.ndarray | None = None

    @classmethod
    def from_mask(cls, class_name: str, mask: np.ndarray, score: float | None = 0.9) -> "Label":
        """A label whose box is the mask's tight box (pixel edges)."""
        ys, xs = np.nonzero(mask)
        return cls(class_name, (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)), score, mask)


@dataclass
class SyntheticImage:
    relpath: str  # under the images folder; the suffix picks the file format
    size: tuple[int, int]  # (width, height)
    labels: list[Label] = field(default_factory=list)


def write_image(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """A textured RGB image (gradient + noise) so that resizing and padding are visible."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    pixels = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), np.full_like(xx, 128)], axis=-1)
    pixels = np.clip(pixels + rng.integers(-20, 20, pixels.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **({"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}))
    return path


def make_run(run_dir: Path, image_dir: Path, classes: list[str], images: list[SyntheticImage],
             mode: str | None = None, threshold: float = 0.1) -> Store:
    """Write the images under ``image_dir`` and a store in ``run_dir`` holding their labels.

    Scored labels are stored as model labels (``write_results``), unscored ones as human labels.
    ``mode`` defaults to ``segment`` when any label has a mask. Returns the open store.
    """
    ontology = Ontology.from_prompts(classes)
    has_masks = any(label.mask is not None for im in images for label in im.labels)
    store = open_store(run_dir)
    store.bind_config({"model": "synthetic", "mode": mode or ("segment" if has_masks else "detect"),
                       "ontology": ontology.to_dict(), "detect": {"threshold": threshold}})
    from autolabel.geometry import mask_to_rle
    from autolabel.images import file_sha256

    results, humans = [], []
    for index, im in enumerate(images):
        path = write_image(image_dir / im.relpath, im.size, seed=index)
        model = [lab for lab in im.labels if lab.score is not None]
        masks = [mask_to_rle(lab.mask) for lab in model] if has_masks and all(l.mask is not None for l in model) else None
        dets = Detections(
            np.array([lab.xyxy for lab in model], dtype=np.float64).reshape(-1, 4),
            [lab.score for lab in model],
            [ontology.names.index(lab.class_name) for lab in model],
            [ontology.queries.index(lab.class_name) for lab in model],
            masks,
        )
        results.append(ImageResult(str(path.resolve()), file_sha256(path), im.size[0], im.size[1], dets))
        humans += [(str(path.resolve()), lab) for lab in im.labels if lab.score is None]
    store.write_results(results)
    ids = {record.path: record.id for record in store.images()}
    for path, lab in humans:
        store.add_detection(ids[path], lab.class_name, lab.xyxy, mask_to_rle(lab.mask) if lab.mask is not None else None)
    return store


def blob_mask(size: tuple[int, int], box: tuple[int, int, int, int], hole: bool = False,
              second: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A boolean ``(h, w)`` mask: an ellipse filling ``box`` (optionally with a hole), plus an optional
    rectangle ``second`` (a second part)."""
    w, h = size
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[:h, :w] + 0.5
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    r = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
    mask = r <= 1.0
    if hole:
        mask &= r > 0.2
    if second is not None:
        sx0, sy0, sx1, sy1 = second
        mask[sy0:sy1, sx0:sx1] = True
    return mask


# -- standard synthetic datasets and checks -----------------------------------------------------------

CLASSES = ["car", "person"]


def detection_images() -> list[SyntheticImage]:
    """Boxes with sub-pixel coordinates; clashing names; a nested folder; a negative; a low score."""
    return [
        SyntheticImage("siteA/photo.jpg", (160, 120), [Label("car", (10.25, 12.5, 90.75, 60.125), 0.91),
                                                       Label("person", (100.5, 20.0, 150.0, 110.0), 0.55)]),
        SyntheticImage("siteB/photo.jpg", (90, 140), [Label("person", (5.0, 5.0, 45.5, 130.25), 0.8)]),
        SyntheticImage("siteB/photo.png", (64, 48), [Label("car", (0.0, 0.0, 64.0, 48.0), 0.7),
                                                     Label("car", (30.0, 10.0, 40.0, 20.0), None)]),  # human label
        SyntheticImage("siteC/empty.jpg", (64, 64), []),
        SyntheticImage("siteC/deep/er/x.png", (50, 70), [Label("car", (3.3, 4.4, 33.3, 44.4), 0.2)]),
    ]


def segmentation_images() -> list[SyntheticImage]:
    """Masks: a ring (a hole) with a second part, plain blobs, a negative; boxes are the masks' boxes."""
    ring = blob_mask((160, 120), (10, 10, 90, 90), hole=True, second=(110, 80, 150, 110))
    return [
        SyntheticImage("siteA/photo.jpg", (160, 120), [Label.from_mask("car", ring, 0.9),
                                                       Label.from_mask("person", blob_mask((160, 120), (100, 5, 140, 60)), 0.6)]),
        SyntheticImage("siteB/photo.png", (90, 140), [Label.from_mask("person", blob_mask((90, 140), (5, 20, 60, 130)), 0.8)]),
        SyntheticImage("siteC/empty.jpg", (64, 64), []),
    ]


def stored_labels(store) -> dict[str, Detections]:
    """Source path -> its exported labels (not rejected), in the store's order."""
    return {record.path: store.labels(record.id) for record in store.images()}


def assert_boxes_close(actual, expected, size):
    """Boxes agree within 1e-6 of the image size (the precision the formats store)."""
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64).reshape(-1, 4),
                               np.asarray(expected, dtype=np.float64).reshape(-1, 4),
                               rtol=0, atol=1e-6 * max(size))
