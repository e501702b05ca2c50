"""The Export tab's engine: one export of a run (``autolabel.export``'s formats and
``export_dataset``), and its evaluation against a ground-truth run."""

from __future__ import annotations

from pathlib import Path

from autolabel.export import FORMATS, MASK_FORMATS, ExportOptions, export_dataset


def run_export(store, fmt: str, out_dir: Path, *, image_size: str | None = None, masks: str = ExportOptions.masks,
               zip_name: str | None = None, max_pixels: int = ExportOptions.max_pixels):
    """Export ``store`` in format ``fmt`` (one ZIP ``out_dir/zip_name`` when given); returns the
    exporter's summary (``path``, ``images``, ``annotations``, ``per_class``). ``masks`` is the
    Masks choice of the tab: a format that cannot write it (``rle`` outside COCO) gets the default."""
    spec = FORMATS.get(fmt)
    if spec is not None and masks in MASK_FORMATS and masks not in spec.mask_formats:
        masks = ExportOptions.masks
    size = (image_size or "").strip() or None
    options = ExportOptions.build(image_size=size, masks=masks, zip_name=zip_name, max_pixels=max_pixels,
                                  source_root=store.run_dir)
    return export_dataset(store, out_dir, fmt, options)


def evaluation_available() -> bool:  # the Export tab shows evaluation only when it is installed
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
