"""``autolabel export``: write a run's labels as a training-ready dataset."""

from __future__ import annotations

import click

from autolabel.cli.errors import handle_errors
from autolabel.cli.output import echo_notes
from autolabel.export import FORMATS, MASK_FORMATS, ExportOptions

ZIP_NAME = "dataset.zip"
# Formats of video runs (`label --mode track`); coco and yolo mean their video forms there.
VIDEO_FORMATS = {"mot": "MOT Challenge gt.txt", "cvat-video": "CVAT for video 1.1 XML",
                 "coco-video": "COCO with videos, frame_index and track_id", "yolo-video": "YOLO per frame"}
VIDEO_ALIASES = {"coco": "coco-video", "yolo": "yolo-video"}


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice([*FORMATS, *VIDEO_FORMATS]), default=next(iter(FORMATS)),
              show_default=True,
              help="; ".join(f"{name}: {spec.description}" for name, spec in FORMATS.items()) + ". Video runs: "
                   + "; ".join(f"{name}: {text}" for name, text in VIDEO_FORMATS.items()) + ".")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--image-size", default=None, help="Resize copies: N (longest side) or WxH (exact stretch). Coordinates follow.")
@click.option("--letterbox", is_flag=True, help="With --image-size: fit inside N x N (or WxH) keeping the aspect ratio, pad with gray 114.")
@click.option("--split", "split", default=None, metavar="NAME=F,...", help="Split by image, e.g. train=0.8,val=0.2[,test=0.1].")
@click.option("--seed", type=int, default=ExportOptions.seed, show_default=True, help="Seed of the split.")
@click.option("--stratify", is_flag=True, help="Split each class in proportion (by the image's rarest class).")
@click.option("--drop-empty", is_flag=True, help="Leave out images without labels (default: keep them as negatives).")
@click.option("--masks", type=click.Choice(list(MASK_FORMATS)), default=ExportOptions.masks, show_default=True,
              help="; ".join(f"{name}: {text}" for name, text in MASK_FORMATS.items()) + ".")
@click.option("--thresholds", "--ontology", "thresholds_file", type=click.Path(exists=True, dir_okay=False),
              help="Ontology file with per-class thresholds (e.g. from `autolabel eval`): export only labels scoring above them.")
@click.option("--image-prefix", default=None, help="labelstudio: URL prefix of data.image (default /data/local-files/?d=).")
@click.option("--zip", "as_zip", is_flag=True, help=f"Write one ZIP (OUT/{ZIP_NAME}) instead of loose files.")
@click.option("--max-pixels", type=int, default=None, help="Decompression-bomb guard when re-reading images.")
@handle_errors
def export(run_dir, fmt, out_dir, image_size, letterbox, split, seed, stratify, drop_empty, masks, thresholds_file,
           image_prefix, as_zip, max_pixels):
    """Export the labels of RUN_DIR (rejected ones excluded) to --out.

    \b
    Examples:
      autolabel export runs/street --out export/
      autolabel export runs/street --format coco --out export/ --image-size 640 --zip
      autolabel export runs/street --format yolo --out yolo/ --split train=0.8,val=0.2 --seed 0 --image-size 640 --letterbox
      autolabel export runs/street --format voc --out voc/ --drop-empty
      autolabel export runs/street --format labelstudio --out ls/ --thresholds runs/street/eval/thresholds.yaml
      autolabel export runs/street-seg --out export/ --image-size 1024x768 --masks rle

    Images keep unique names (nested folders are flattened, clashing names get a hash) and
    manifest.json maps every exported file back to its source image.
    """
    from tqdm import tqdm

    from autolabel.errors import ConfigError
    from autolabel.export import export_dataset, format_options
    from autolabel.video.store import is_video_run

    if is_video_run(run_dir):
        from autolabel.cli.video import export_video

        fmt = VIDEO_ALIASES.get(fmt, fmt)
        if fmt not in VIDEO_FORMATS:
            raise ConfigError(f"{run_dir} is a video run: export it as {', '.join(VIDEO_FORMATS)}")
        export_video(run_dir, fmt, out_dir)
        return
    if fmt in VIDEO_FORMATS:
        raise ConfigError(f"--format {fmt} is for video runs (autolabel label --mode track)")
    from autolabel.ontology import Ontology
    from autolabel.settings import load_settings
    from autolabel.store import open_store

    settings = load_settings(max_image_pixels=max_pixels)
    classes = Ontology.from_file(thresholds_file).classes if thresholds_file else []
    options = ExportOptions.build(
        image_size=image_size, letterbox=letterbox, split=split, seed=seed, stratify=stratify, drop_empty=drop_empty,
        thresholds={c.name: c.threshold for c in classes if c.threshold is not None}, masks=masks,
        max_pixels=settings.max_image_pixels, zip_name=ZIP_NAME if as_zip else None, image_prefix=image_prefix)
    options = format_options(fmt, options)  # a bad combination fails before any work
    with open_store(run_dir, create=False) as store:
        total = store.counts()["done"]
        with tqdm(total=total, unit="img", desc="exporting", dynamic_ncols=True) as bar:
            summary = export_dataset(store, out_dir, fmt, options, on_progress=bar.update)
    click.echo(f"wrote {summary.path}: {summary.images} images ({summary.negatives} without labels), "
               f"{summary.annotations} annotations")
    if options.split is not None:
        click.echo("  splits: " + ", ".join(f"{name} {summary.per_split[name]}" for name in options.split.names))
    echo_notes((summary.dropped_empty, f"left out {summary.dropped_empty} images without labels (--drop-empty)"),
               (summary.stale_removed, f"removed {summary.stale_removed} files of the previous export into {out_dir}"),
               (summary.filtered, f"left out {summary.filtered} labels below their class threshold"))
    for name, count in sorted(summary.per_class.items()):
        click.echo(f"  {name}: {count}")
