"""Exporters: the store's labels written in the formats trainers load.

Everything here works in original oriented pixels until the last step, where ``package`` maps
coordinates to the exported image size. Exports are deterministic (stable ids and order, no
timestamps) and atomic (temp file + rename, or one ZIP renamed into place).

One loop (``items.run_export``) plans names and splits, encodes images and maps labels; each format
module (``coco``, ``yolo``, ``voc``, ``labelstudio``) only writes its files::

    from autolabel.export import ExportOptions, export_dataset
    options = ExportOptions.build(image_size="640", letterbox=True, split="train=0.8,val=0.2", seed=0)
    summary = export_dataset(store, "out/", "yolo", options)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from autolabel.errors import ConfigError
from autolabel.export.items import ExportOptions, ExportSummary

FORMATS = ("coco", "yolo", "voc", "labelstudio")

__all__ = ["FORMATS", "ExportOptions", "ExportSummary", "export_dataset"]


def export_dataset(store, out_dir: str | Path, fmt: str, options: ExportOptions | None = None, *,
                   masks: str = "polygon", image_prefix: str | None = None,
                   on_progress: Callable[[int], None] | None = None) -> ExportSummary:
    """Export a run in one of :data:`FORMATS`.

    ``masks`` (COCO only): ``polygon`` or ``rle``; drop masks in every format with
    ``ExportOptions(include_masks=False)``. ``image_prefix`` (Label Studio only): URL prefix of
    ``data.image``.
    """
    options = options or ExportOptions()
    if fmt == "coco":
        from autolabel.export.coco import export_coco

        return export_coco(store, out_dir, masks=masks, options=options, on_progress=on_progress)
    if fmt == "yolo":
        from autolabel.export.yolo import export_yolo

        return export_yolo(store, out_dir, options, on_progress=on_progress)
    if fmt == "voc":
        from autolabel.export.voc import export_voc

        return export_voc(store, out_dir, options, on_progress=on_progress)
    if fmt == "labelstudio":
        from autolabel.export.labelstudio import DEFAULT_IMAGE_PREFIX, export_labelstudio

        return export_labelstudio(store, out_dir, options, image_prefix=image_prefix or DEFAULT_IMAGE_PREFIX,
                                  on_progress=on_progress)
    raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
