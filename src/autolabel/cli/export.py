"""``autolabel export``: write a run's labels as a training-ready dataset."""

from __future__ import annotations

import click

from autolabel.cli import handle_errors

FORMATS = ["coco"]


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="coco", show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--image-size", default=None, help="Resize copies: N (longest side) or WxH (exact). Coordinates follow.")
@click.option("--masks", type=click.Choice(["polygon", "rle"]), default="polygon", show_default=True, help="Segmentation format for masks.")
@click.option("--zip", "as_zip", is_flag=True, help="Write one ZIP (OUT/dataset.zip) instead of loose files.")
@click.option("--max-pixels", type=int, default=None, help="Decompression-bomb guard when re-reading images.")
@handle_errors
def export(run_dir, fmt, out_dir, image_size, masks, as_zip, max_pixels):
    """Export the labels of RUN_DIR (rejected ones excluded) to --out.

    \b
    Examples:
      autolabel export runs/street --out export/
      autolabel export runs/street --format coco --out export/ --image-size 640 --zip
      autolabel export runs/street-seg --out export/ --image-size 1024x768 --masks rle
    """
    from tqdm import tqdm

    from autolabel.export.coco import export_coco
    from autolabel.settings import load_settings
    from autolabel.store import open_store

    settings = load_settings(max_image_pixels=max_pixels)
    with open_store(run_dir, create=False) as store:
        total = store.counts()["done"]
        with tqdm(total=total, unit="img", desc="exporting", dynamic_ncols=True) as bar:
            summary = export_coco(store, out_dir, image_size=image_size, masks=masks,
                                  zip_name="dataset.zip" if as_zip else None,
                                  max_pixels=settings.max_image_pixels, on_progress=bar.update)
    click.echo(f"wrote {summary.path}: {summary.images} images, {summary.annotations} annotations")
    for name, count in sorted(summary.per_class.items()):
        click.echo(f"  {name}: {count}")
