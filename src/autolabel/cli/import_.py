"""``autolabel import``: load a COCO, YOLO, Pascal VOC or Label Studio dataset into a run folder as ground truth (human labels)."""

from __future__ import annotations

import click

from autolabel.cli.errors import handle_errors
from autolabel.cli.output import echo_notes
from autolabel.importers import IMPORT_FORMATS


@click.command("import")
@click.argument("source", type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder to create (or re-import into).")
@click.option("--format", "fmt", type=click.Choice(IMPORT_FORMATS), default=None,
              help="Dataset format (default: labelstudio for a .json list of tasks, coco for another .json, "
                   "voc for a folder with Annotations/ or .xml files, yolo for data.yaml or another folder).")
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder the images are in. COCO: file_name is relative to it (default: next to the JSON, or "
                   "its images/). VOC: <filename> (default: JPEGImages/ or beside the XML). Label Studio: "
                   "data.image's path or file name (default: the JSON's folder).")
@handle_errors
def import_(source, out_dir, fmt, images_dir):
    """Import the dataset SOURCE (COCO .json, YOLO data.yaml / its folder, Pascal VOC folder, or Label
    Studio JSON export) into the run folder --out.

    \b
    Examples:
      autolabel import annotations/instances_val.json --images val2017/ --out runs/gt
      autolabel import yolo-dataset/data.yaml --out runs/gt
      autolabel import VOC2012/ --out runs/gt                # Annotations/ + JPEGImages/
      autolabel import label-studio-export.json --images photos/ --out runs/gt
      autolabel eval runs/street --gt runs/gt
      autolabel export runs/gt --format voc --out voc/

    Labels become human labels (accepted, no score) on reviewed images, in the EXIF-oriented frame
    of each image. Crowd annotations are skipped; unreadable images are reported and skipped. Label
    Studio: each task's latest submitted annotation (tasks with only predictions are skipped).
    """
    from tqdm import tqdm

    from autolabel.importers import import_dataset

    bars: list = []  # the bar appears once the dataset is read, so a broken file prints one line only
    try:
        summary = import_dataset(
            source, out_dir, fmt=fmt, images_dir=images_dir,
            on_total=lambda n: bars.append(tqdm(total=n, unit="img", desc="importing", dynamic_ncols=True)),
            on_progress=lambda k: bars[0].update(k))
    finally:
        for bar in bars:
            bar.close()
    click.echo(f"imported {summary.images} images, {summary.labels} labels into {out_dir}"
               + (f"; {summary.failed} images failed" if summary.failed else ""))
    for name, count in sorted(summary.per_class.items()):
        click.echo(f"  {name}: {count}")
    echo_notes((summary.skipped_crowd, f"skipped {summary.skipped_crowd} crowd annotations "
                                       "(eval reads them from the COCO file itself)"),
               (summary.skipped_invalid, f"skipped {summary.skipped_invalid} annotations without a usable box or mask"),
               *((True, note) for note in summary.notes))
    for _, error in summary.failures:
        click.echo(f"  failed: {error}", err=True)
