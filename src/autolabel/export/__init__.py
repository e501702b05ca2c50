"""Exporters: the store's labels written in the formats trainers load.

One loop (``items.run_export``) plans names and splits, encodes images and maps labels into the
exported pixels; each format in :data:`FORMATS` only writes its files::

    from autolabel.export import ExportOptions, export_dataset
    options = ExportOptions.build(image_size="640", letterbox=True, split="train=0.8,val=0.2", seed=0)
    summary = export_dataset(store, "out/", "yolo", options)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autolabel.errors import ConfigError
from autolabel.export.coco import CocoWriter
from autolabel.export.items import ExportOptions, ExportSummary, FormatWriter, run_export
from autolabel.export.labelstudio import LabelStudioWriter
from autolabel.export.masks import MASK_FORMATS
from autolabel.export.voc import VocWriter
from autolabel.export.yolo import YoloWriter


@dataclass(frozen=True)
class ExportFormat:
    """A format: its writer (built per export from the store and options) and what it accepts."""

    writer: Callable[..., FormatWriter]
    description: str
    mask_formats: tuple[str, ...] = ("polygon", "none")  # the ExportOptions.masks values it writes
    image_format: str | None = None  # the image encoding it needs (None: any)
    image_prefix: bool = False  # whether it takes ExportOptions.image_prefix


FORMATS: dict[str, ExportFormat] = {
    "coco": ExportFormat(CocoWriter, "COCO JSON per split", ("polygon", "rle", "none")),
    "yolo": ExportFormat(YoloWriter, "Ultralytics YOLO"),
    "voc": ExportFormat(VocWriter, "Pascal VOC XML per image", image_format="jpeg"),
    "labelstudio": ExportFormat(LabelStudioWriter, "Label Studio tasks (annotations and predictions)", image_prefix=True),
}

__all__ = ["FORMATS", "MASK_FORMATS", "ExportFormat", "ExportOptions", "ExportSummary", "export_dataset",
           "format_options"]


def format_options(fmt: str, options: ExportOptions) -> ExportOptions:
    """``options`` checked against format ``fmt`` (a key of :data:`FORMATS`) and adjusted to it
    (e.g. VOC's JPEG images); raises ``ConfigError`` for an unknown format or an option it does not take."""
    spec = FORMATS.get(fmt)
    if spec is None:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if options.masks not in spec.mask_formats:
        raise ConfigError(f"masks {options.masks!r} is not for {fmt}; use {' or '.join(spec.mask_formats)}")
    if options.image_prefix is not None and not spec.image_prefix:
        raise ConfigError(f"an image prefix is for {', '.join(n for n, f in FORMATS.items() if f.image_prefix)}")
    return dataclasses.replace(options, image_format=spec.image_format) if spec.image_format else options


def export_dataset(store, out_dir: str | Path, fmt: str, options: ExportOptions | None = None, *,
                   on_progress: Callable[[int], None] | None = None) -> ExportSummary:
    """Export a run in format ``fmt`` (a key of :data:`FORMATS`) under ``out_dir``; ``on_progress(k)``
    is called after every chunk of ``k`` images."""
    options = format_options(fmt, options or ExportOptions())
    return run_export(store, out_dir, options, FORMATS[fmt].writer(store, options), format_name=fmt,
                      on_progress=on_progress)
