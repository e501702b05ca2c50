"""The one loop every format shares: store -> images with transformed labels -> a format writer.

``run_export`` plans the export (which images, their names and splits), then streams
:class:`ExportItem` objects in the store's path order: the encoded image (resized, letterboxed,
orientation baked in) and its labels already in the exported image's pixels. A format only decides
where files go and how labels are written; scaling, masks, thresholds, negatives, splits, the
manifest and atomicity are implemented once, here. The index files are written after every image and
label file, then ``manifest.json``; a ZIP appears only when complete.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np

from autolabel.detections import Detections
from autolabel.errors import ConfigError
from autolabel.export.masks import DEFAULT_MASK_FORMAT, MASK_FORMATS, fit_mask_to_box
from autolabel.export.package import ImageSize, ImageTransform, encode_image, export_names, json_bytes, open_sink
from autolabel.export.split import SplitSpec, assign_splits
from autolabel.images import DEFAULT_MAX_PIXELS
from autolabel.ontology import Ontology
from autolabel.store import ImageRecord, Store

MANIFEST_FILE = "manifest.json"
_CHUNK = 32


@dataclass(frozen=True)
class ExportOptions:
    """What every format accepts.

    thresholds: ``{class name: t}``; a model label is exported when its score is above ``t``, human
    labels (no score) always, and classes not named keep every label. image_format: None (JPEG stays
    JPEG, anything else becomes PNG) or ``"jpeg"``. image_prefix: Label Studio's ``data.image`` prefix.
    """

    image_size: ImageSize | None = None  # None: original size
    split: SplitSpec | None = None  # None: one unsplit set
    seed: int = 0
    stratify: bool = False  # split each class in proportion
    drop_empty: bool = False  # leave out images without labels (default: keep them as negatives)
    thresholds: Mapping[str, float] = field(default_factory=dict)
    masks: str = DEFAULT_MASK_FORMAT  # a key of masks.MASK_FORMATS
    image_format: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS  # decompression-bomb guard when re-reading images
    zip_name: str | None = None  # write one ZIP out_dir/zip_name instead of loose files
    image_prefix: str | None = None
    # The manifest's source paths: relative to this folder (a file outside it: its name only), so a
    # shared export does not reveal the server's folders; None keeps absolute paths.
    source_root: Path | None = None

    def __post_init__(self) -> None:
        if self.masks not in MASK_FORMATS:
            raise ConfigError(f"masks must be one of {', '.join(MASK_FORMATS)}, got {self.masks!r}")
        if self.stratify and self.split is None:
            raise ConfigError("stratify needs a split")

    @property
    def include_masks(self) -> bool:
        return self.masks != "none"

    @classmethod
    def build(cls, *, image_size=None, letterbox: bool = False, split=None, **kwargs) -> "ExportOptions":
        """Options from user-level values (``image_size="640"``, ``split="train=0.8,val=0.2"``)."""
        size = image_size if isinstance(image_size, ImageSize) else ImageSize.parse(image_size, letterbox=letterbox)
        return cls(image_size=size, split=SplitSpec.parse(split), **kwargs)


@dataclass(eq=False)
class ExportLabel:
    """One label, in the exported image's pixels (pixel ``i`` spans ``[i, i + 1)``)."""

    class_index: int  # in the run's ontology order (COCO category id is + 1)
    class_name: str
    score: float | None  # None: a label without a score (a human label)
    xyxy: tuple[float, ...]  # clipped to the image content
    rle: dict | None  # the mask on the exported canvas; None: a box-only label
    reviewed: bool = False  # a person drew, changed or accepted it

    @cached_property
    def polygons(self) -> list[list[float]]:
        """The mask as COCO polygons in exported pixels (every part, holes cut in); [] without one."""
        if self.rle is None:
            return []
        from autolabel.geometry import mask_to_polygons, rle_to_mask

        return mask_to_polygons(rle_to_mask(self.rle))


@dataclass(frozen=True)
class ExportItem:
    """One exported image: where it goes, its bytes, its labels (exported pixels)."""

    image_id: int  # 1-based, in export order, unique across splits
    record: ImageRecord
    name: str  # unique file name (stems unique ignoring case)
    split: str | None
    transform: ImageTransform
    data: bytes
    labels: list[ExportLabel]

    @property
    def width(self) -> int:
        return self.transform.width

    @property
    def height(self) -> int:
        return self.transform.height

    @property
    def stem(self) -> str:
        return Path(self.name).stem


@dataclass
class ExportPlan:
    """Images to export, in order, with their names and splits."""

    ontology: Ontology
    records: list[ImageRecord]
    names: dict[str, str]  # source path -> file name
    splits: dict[str, str | None]  # source path -> split (None: unsplit)
    split_names: list[str | None]
    dropped_empty: int = 0


@dataclass
class ExportSummary:
    path: Path
    images: int = 0
    annotations: int = 0
    per_class: Counter = field(default_factory=Counter)
    per_split: Counter = field(default_factory=Counter)
    negatives: int = 0
    dropped_empty: int = 0
    filtered: int = 0  # labels left out by per-class thresholds
    stale_removed: int = 0  # files of a previous export into the same folder, removed


class FormatWriter(Protocol):
    """What a format implements; ``run_export`` does the rest. ``index_name``: the file (or
    folder) inside the export that the summary points at."""

    index_name: str

    def image_path(self, item: ExportItem) -> str:
        """Where the image file goes, relative to the export root."""

    def add(self, item: ExportItem, sink) -> list[str]:
        """Write (or collect) the item's labels; return the per-image files written (for the manifest)."""

    def finish(self, plan: ExportPlan, sink) -> list[str]:
        """Write the index files (called last); return their paths."""


def class_thresholds(thresholds: Mapping[str, float], ontology: Ontology) -> np.ndarray:
    """(C,) per-class minimum scores in ontology order, NaN for a class without one."""
    unknown = sorted(set(thresholds) - set(ontology.names))
    if unknown:
        raise ConfigError(f"thresholds name classes the run does not have: {', '.join(unknown)}; "
                          f"the run's classes are {', '.join(ontology.names)}")
    for name, value in thresholds.items():
        if not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"threshold of class {name!r} must be in [0, 1], got {value}")
    return np.array([float(thresholds.get(name, np.nan)) for name in ontology.names], dtype=np.float64)


def kept_labels(store: Store, image_id: int, thresholds: np.ndarray) -> tuple[Detections, int]:
    """Labels of one image that are exported (not rejected, above their class threshold; labels
    without a score always), and how many were left out by thresholds."""
    labels = store.labels(image_id)
    threshold = thresholds[labels.class_ids]
    below = labels.has_score & ~np.isnan(threshold) & ~(labels.scores > threshold)
    return labels[~below], int(below.sum())


def plan_export(store: Store, options: ExportOptions) -> ExportPlan:
    """Choose the images (all done ones; without negatives if ``drop_empty``), names and splits."""
    ontology = store.ontology
    thresholds = class_thresholds(options.thresholds, ontology)
    records = list(store.images("done"))
    classes: dict[str, frozenset[str]] = {}
    if options.drop_empty or (options.split is not None and options.stratify):
        for record in records:
            labels, _ = kept_labels(store, record.id, thresholds)
            classes[record.path] = frozenset(ontology.names[c] for c in labels.class_ids)
    total = len(records)
    if options.drop_empty:
        records = [r for r in records if classes[r.path]]
    names = export_names([r.path for r in records], ".jpg" if options.image_format == "jpeg" else None)
    if options.split is None:
        splits: dict[str, str | None] = {r.path: None for r in records}
        split_names: list[str | None] = [None]
    else:
        # Split keys are the default export names (relative paths): the same in every format.
        keys = export_names([r.path for r in records]) if options.image_format else names
        by_key = assign_splits([keys[r.path] for r in records], options.split, options.seed,
                               {keys[p]: c for p, c in classes.items() if p in keys} if options.stratify else None)
        splits = {r.path: by_key[keys[r.path]] for r in records}
        split_names = list(options.split.names)
    return ExportPlan(ontology, records, names, splits, split_names, total - len(records))


def export_labels(dets: Detections, transform: ImageTransform, ontology: Ontology, segmentation_run: bool,
                  include_masks: bool) -> list[ExportLabel]:
    """One image's labels (original pixels) -> labels in the exported image's pixels, with the box/mask
    rule of segmentation runs applied (see ``masks``)."""
    from autolabel.geometry import box_to_rle, rle_area

    labels = []
    masks = dets.masks or [None] * len(dets)
    for i in range(len(dets)):
        xyxy, rle = dets.xyxy[i], masks[i] if include_masks else None
        if segmentation_run and rle is not None:
            xyxy, rle = fit_mask_to_box(xyxy, rle)
        box = transform.boxes(xyxy)[0]
        if include_masks and (rle is not None or segmentation_run):
            rle = transform.rle(rle) if rle is not None else None
            if rle is None or rle_area(rle) == 0:
                # Segmentation datasets need a mask on every label: a human box or an empty SAM2
                # mask gets the box's own pixels.
                rle = box_to_rle(box, transform.height, transform.width)
        class_id = int(dets.class_ids[i])
        score = float(dets.scores[i]) if dets.has_score[i] else None
        reviewed = bool(dets.sources[i] == "human" or dets.reviews[i] == "accepted")
        labels.append(ExportLabel(class_id, ontology.names[class_id], score, tuple(float(v) for v in box), rle,
                                  reviewed))
    return labels


def iter_items(store: Store, plan: ExportPlan, options: ExportOptions, *,
               on_progress: Callable[[int], None] | None = None,
               counters: ExportSummary | None = None) -> Iterator[ExportItem]:
    """Stream the plan's images with their labels mapped into exported pixels (store path order)."""
    thresholds = class_thresholds(options.thresholds, plan.ontology)
    segmentation_run = (store.config or {}).get("mode") == "segment"
    size = options.image_size
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="export") as pool:
        for start in range(0, len(plan.records), _CHUNK):
            chunk = plan.records[start : start + _CHUNK]
            transforms = [size.transform(r.width, r.height) if size else ImageTransform.identity(r.width, r.height)
                          for r in chunk]
            encoded = pool.map(lambda rt: encode_image(rt[0].path, rt[1], (rt[0].width, rt[0].height),
                                                       options.max_pixels, options.image_format),
                               zip(chunk, transforms))
            for offset, (record, transform, data) in enumerate(zip(chunk, transforms, encoded)):
                dets, filtered = kept_labels(store, record.id, thresholds)
                if counters is not None:
                    counters.filtered += filtered
                labels = export_labels(dets, transform, plan.ontology, segmentation_run, options.include_masks)
                yield ExportItem(start + offset + 1, record, plan.names[record.path], plan.splits[record.path],
                                 transform, data, labels)
            if on_progress:
                on_progress(len(chunk))


def _source(path: str, options: ExportOptions) -> str:
    if options.source_root is None:
        return path
    root, source = Path(options.source_root).resolve(), Path(path).resolve()
    return source.relative_to(root).as_posix() if source.is_relative_to(root) else source.name


def manifest_bytes(format_name: str, entries: list[dict], index_files: list[str]) -> bytes:
    """``manifest.json``: ``{"format", "index": [files], "images": [...]}``, one image per line; an image
    maps its exported files back to the source (exported pixels = original * ``scale`` + ``offset``)."""
    lines = ",\n".join(json_bytes(entry).decode("utf-8") for entry in entries)
    head = f'{{"format":{json_bytes(format_name).decode()},"index":{json_bytes(index_files).decode()},'
    return (head + f'"images":[\n{lines}\n]}}\n').encode("utf-8")


def _previous_files(out_dir: Path) -> set[str]:
    """Files a previous export into ``out_dir`` wrote, from its manifest (empty when there is none)."""
    try:
        manifest = json.loads((out_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        files = {e["image"] for e in manifest["images"]} | {f for e in manifest["images"] for f in e["labels"]}
        return files | set(manifest.get("index", []))
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _remove_stale(out_dir: Path, stale: set[str]) -> int:
    """Delete files of a previous export that this one did not write (so e.g. an image cannot sit in
    two splits), and folders left empty. Only paths inside ``out_dir`` are touched."""
    root = out_dir.resolve()
    removed = 0
    for rel in sorted(stale):
        path = (root / rel).resolve()
        if root in path.parents and path.is_file():
            path.unlink()
            removed += 1
            parent = path.parent
            while parent != root and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
    return removed


def run_export(store: Store, out_dir: str | Path, options: ExportOptions, writer: FormatWriter, *,
               format_name: str, on_progress: Callable[[int], None] | None = None) -> ExportSummary:
    """Export the store through ``writer`` (atomic, see the module docstring); the summary points at the
    writer's ``index_name`` or the ZIP. Files a previous export into ``out_dir`` listed in its manifest
    and this one did not write are then removed."""
    out_dir = Path(out_dir)
    plan = plan_export(store, options)
    summary = ExportSummary(path=out_dir / (options.zip_name or writer.index_name), dropped_empty=plan.dropped_empty)
    previous = set() if options.zip_name else _previous_files(out_dir)
    manifest: list[dict] = []
    written: set[str] = {MANIFEST_FILE}
    sink = open_sink(out_dir, options.zip_name)
    try:
        for item in iter_items(store, plan, options, on_progress=on_progress, counters=summary):
            image_path = writer.image_path(item)
            sink.write(image_path, item.data)
            label_files = writer.add(item, sink)
            written.update([image_path, *label_files])
            summary.images += 1
            summary.annotations += len(item.labels)
            summary.per_class.update(label.class_name for label in item.labels)
            summary.per_split[item.split or "all"] += 1
            summary.negatives += not item.labels
            entry = {"image": image_path, "labels": label_files, "source": _source(item.record.path, options),
                     "sha256": item.record.sha256, **item.transform.to_dict()}
            if item.split is not None:
                entry["split"] = item.split
            manifest.append(entry)
        index_files = writer.finish(plan, sink)
        written.update(index_files)
        sink.write(MANIFEST_FILE, manifest_bytes(format_name, manifest, index_files))
        sink.close()
    except BaseException:
        sink.abort()
        raise
    if previous:
        summary.stale_removed = _remove_stale(out_dir, previous - written)
    return summary
