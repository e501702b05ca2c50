"""The Export tab's engine: which formats exist, and one export of a run into a ZIP.

The format list comes from one place, the export package: ``autolabel.export.FORMATS`` with
``export_dataset(store, out_dir, fmt, ExportOptions, masks=...)``. (A package without that
registry exports COCO only, through ``export_coco``.)
"""

from __future__ import annotations

from pathlib import Path

from autolabel.errors import ConfigError

MASK_FORMATS = ("polygon", "rle")


def export_formats() -> tuple[str, ...]:
    """Names of the export formats, in the export package's order (COCO first)."""
    import autolabel.export as package

    formats = getattr(package, "FORMATS", None)
    if formats and hasattr(package, "export_dataset"):
        return tuple(formats)
    return ("coco",)


def run_export(store, fmt: str, out_dir: Path, *, image_size: str | None = None, masks: str = "polygon",
               zip_name: str | None = None, max_pixels: int = 178_956_970):
    """Export ``store`` in format ``fmt`` (one ZIP ``out_dir/zip_name`` when given); returns the
    exporter's summary (``path``, ``images``, ``annotations``, ``per_class``)."""
    import autolabel.export as package

    formats = export_formats()
    if fmt not in formats:
        raise ConfigError(f"unknown export format {fmt!r}; available: {', '.join(formats)}")
    if masks not in MASK_FORMATS:
        raise ConfigError(f"mask format must be one of {', '.join(MASK_FORMATS)}, got {masks!r}")
    size = (image_size or "").strip() or None
    if hasattr(package, "export_dataset"):
        options = package.ExportOptions.build(image_size=size, zip_name=zip_name, max_pixels=max_pixels)
        return package.export_dataset(store, out_dir, fmt, options, masks=masks)
    from autolabel.export.coco import export_coco

    return export_coco(store, out_dir, image_size=size, masks=masks, zip_name=zip_name, max_pixels=max_pixels)


def summary_rows(summary) -> list[list]:
    """``[[class, annotations], ...]`` of an export summary."""
    return [[name, int(count)] for name, count in sorted(getattr(summary, "per_class", {}).items())]


# -- evaluation (optional: shown when ``autolabel.evaluation`` is installed) -----------------------


def evaluation_available() -> bool:
    try:
        from autolabel.evaluation import evaluate_run  # noqa: F401
    except ImportError:
        return False
    return True


def evaluate_against(store, gt_store) -> tuple[list[str], list[list], str]:
    """Evaluate run ``store`` against the reviewed images of run ``gt_store`` (e.g. a dataset
    imported with ``autolabel import``). Returns table headers, rows (one per class, then ``all``)
    and a one-line summary."""
    from autolabel.evaluation import evaluate_run

    result = evaluate_run(store, gt_store)
    rows = result.table_rows()
    headers = [k for k in rows[0] if k not in ("P thr", "R at P")]
    table = [[row[k] for k in headers] for row in rows]
    text = (f"{result.images} images compared; box mAP@[.5:.95] {result.map:.3f}, AP50 {result.ap50:.3f}"
            f" (precision/recall at IoU {result.iou:g})")
    return headers, table, text
