"""Load existing datasets (COCO, YOLO, Pascal VOC, Label Studio) and store them as ground-truth runs.

An imported run is an ordinary run folder (config ``{"mode": "import", "format", "source",
"ontology", "masks"}``) whose labels are human labels (accepted, no score) on reviewed images: it can
be reviewed, exported to another format, or used as ground truth by ``autolabel eval``::

    from autolabel.importers import import_dataset
    summary = import_dataset("coco/instances_val.json", "runs/gt")
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from autolabel.errors import ConfigError
from autolabel.importers.dataset import Dataset, DatasetImage, ImportFormatError

IMPORT_FORMATS = ("coco", "yolo", "voc", "labelstudio")
_BATCH = 256

__all__ = ["IMPORT_FORMATS", "Dataset", "DatasetImage", "ImportFormatError", "ImportSummary",
           "detect_format", "import_dataset", "load_dataset"]


def _json_holds_a_list(path: Path) -> bool:
    """Whether the JSON document's top level is a list (Label Studio tasks), from its first character:
    a COCO file can be large, and its reader parses it once."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            head = fh.read(4096).lstrip()
    except (OSError, ValueError):
        return False  # the COCO reader reports it
    return head.startswith("[")


def detect_format(source: str | Path) -> str:
    """``labelstudio`` for a ``.json`` list of tasks, ``coco`` for another ``.json``, ``yolo`` for a
    ``.yaml``/``.yml`` file; a folder is ``voc`` when it holds ``Annotations/`` (or ``.xml`` files but
    no ``data.yaml``), else ``yolo``."""
    path = Path(source)
    if path.suffix.lower() == ".json":
        return "labelstudio" if _json_holds_a_list(path) else "coco"
    if path.suffix.lower() in (".yaml", ".yml"):
        return "yolo"
    if path.is_dir():
        from autolabel.importers.voc import ANNOTATION_DIR

        has_yaml = any(path.glob("*.yaml")) or any(path.glob("*.yml"))
        if (path / ANNOTATION_DIR).is_dir() or (not has_yaml and any(path.glob("*.xml"))):
            return "voc"
        return "yolo"
    raise ConfigError(f"cannot tell the format of {source}: give a COCO or Label Studio .json, a YOLO data.yaml "
                      "(or its folder), a VOC folder, or --format")


def load_dataset(source: str | Path, fmt: str | None = None, images_dir: str | Path | None = None) -> Dataset:
    """Read a dataset into memory (labels in oriented pixels). ``images_dir``: where the images are,
    for the formats that name images by file name (all but YOLO)."""
    fmt = fmt or detect_format(source)
    if fmt == "coco":
        from autolabel.importers.coco import load_coco

        return load_coco(source, images_dir)
    if fmt == "voc":
        from autolabel.importers.voc import load_voc

        return load_voc(source, images_dir)
    if fmt == "labelstudio":
        from autolabel.importers.labelstudio import load_labelstudio

        return load_labelstudio(source, images_dir)
    if fmt == "yolo":
        if images_dir is not None:
            raise ConfigError("--images is for COCO, VOC and Label Studio; a YOLO dataset's data.yaml names "
                              "its image folders")
        from autolabel.importers.yolo import load_yolo

        return load_yolo(source)
    raise ConfigError(f"unknown import format {fmt!r}; choose one of {', '.join(IMPORT_FORMATS)}")


@dataclass
class ImportSummary:
    run_dir: Path
    images: int = 0
    failed: int = 0
    labels: int = 0
    per_class: Counter = field(default_factory=Counter)
    skipped_crowd: int = 0
    skipped_invalid: int = 0
    notes: list[str] = field(default_factory=list)  # the reader's remarks (what it kept or left out)
    failures: list[tuple[str, str]] = field(default_factory=list)


def import_dataset(source: str | Path, run_dir: str | Path, *, fmt: str | None = None,
                   images_dir: str | Path | None = None,
                   on_progress: Callable[[int], None] | None = None,
                   on_total: Callable[[int], None] | None = None) -> ImportSummary:
    """Load a dataset and store it in ``run_dir`` as a ground-truth run; re-importing replaces each
    image's human labels, unreadable images are stored as failed. ``on_total(n)`` is called once the
    dataset is read, ``on_progress(k)`` per stored batch."""
    from autolabel.ontology import Ontology
    from autolabel.store import ImageResult, open_store

    dataset = load_dataset(source, fmt, images_dir)
    summary = ImportSummary(Path(run_dir), skipped_crowd=dataset.crowd, skipped_invalid=dataset.skipped_invalid,
                            notes=list(dataset.notes))
    if on_total:
        on_total(len(dataset.images))
    with open_store(run_dir) as store:
        ontology = Ontology.from_classes([{"name": name} for name in dataset.classes])
        store.bind_config({"mode": "import", "format": dataset.format, "source": dataset.source,
                           "ontology": ontology.to_dict(), "masks": dataset.has_masks})
        for start in range(0, len(dataset.images), _BATCH):
            batch = []
            for image in dataset.images[start : start + _BATCH]:
                if image.error:
                    summary.failed += 1
                    summary.failures.append((image.path, image.error))
                    batch.append(ImageResult(image.path, error=image.error))
                    continue
                summary.images += 1
                summary.labels += len(image.labels)
                summary.per_class.update(dataset.classes[i] for i in image.labels.class_ids)
                batch.append(ImageResult(image.path, image.sha256, image.width, image.height, image.labels))
            store.write_human_labels(batch)  # the store's classes are the dataset's, in order
            if on_progress:
                on_progress(len(batch))
    return summary

