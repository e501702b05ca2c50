"""``autolabel compare``: label hand-labelled ground truth with several models, evaluate each, and
report the best overall and per class."""

from __future__ import annotations

import click

from autolabel.cli.errors import handle_errors
from autolabel.compare.run import DEFAULT_COMPARE_THRESHOLD
from autolabel.evaluation.evaluate import DEFAULT_IOU
from autolabel.models.precision import PRECISIONS


@click.command("compare")
@click.argument("gt", type=click.Path(exists=True))
@click.option("--model", "models", multiple=True, required=True,
              help="A detector checkpoint (hub id or folder) of any family in `autolabel models`. Repeatable.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the report and one run per model (re-use it to resume).")
@click.option("--gt-images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Where the ground truth's images are (COCO, VOC, Label Studio; YOLO names its own).")
@click.option("--prompt", "prompts", multiple=True,
              help='Prompts of a ground-truth class: "car=car,automobile" (default: each class prompted by its name).')
@click.option("--ontology", "ontology_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML/JSON ontology instead of --prompt (classes matched to the ground truth by name).")
@click.option("--sam-model", default=None, help="Segmenter checkpoint: every model labels in segment mode with it.")
@click.option("--threshold", type=float, default=DEFAULT_COMPARE_THRESHOLD, show_default=True,
              help="Labelling score threshold (low: calibration picks each class's threshold above it).")
@click.option("--iou", type=float, default=DEFAULT_IOU, show_default=True, help="IoU for F1 and thresholds.")
@click.option("--target-precision", type=float, default=None,
              help="Also find each class's lowest threshold reaching this precision (in comparison.json).")
@click.option("--batch-size", type=int, default=None, help="Images per forward pass.")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N or mps [env AUTOLABEL_DEVICE].")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None, help="Model precision [env AUTOLABEL_PRECISION].")
@click.option("--exact", is_flag=True, help="Full decodes and the stock processors (see `autolabel label --help`).")
@click.option("--workers", type=int, default=None, help="Decode/preprocess threads.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@handle_errors
def compare(gt, models, out_dir, gt_images, prompts, ontology_file, sam_model, threshold, iou, target_precision,
            batch_size, device, precision, exact, workers, quiet):
    """Compare detectors on the ground truth GT (a COCO .json with --gt-images, a YOLO data.yaml,
    or a run folder from `autolabel import`).

    \b
    Examples:
      autolabel compare gt/instances.json --gt-images gt/images --out compare/ \\
          --model google/owlv2-large-patch14-finetuned --model google/owlvit-base-patch32
      autolabel compare runs/gt --model ./my-finetuned-owlv2 --model google/owlv2-base-patch16-ensemble --out cmp/

    Each model labels the images into its own run under OUT/runs (resumable), is evaluated with
    calibrated per-class thresholds, and OUT/report.md and report.html compare AP, AP50, F1 at the
    calibrated threshold, speed and precision/recall curves. OUT/best_ontology.yaml holds the best
    model's thresholds for `autolabel label --ontology`.
    """
    from tqdm import tqdm

    from autolabel.compare import compare_models, write_comparison
    from autolabel.errors import ConfigError
    from autolabel.ontology import Ontology
    from autolabel.pipeline import DetectConfig
    from autolabel.settings import load_settings

    if prompts and ontology_file:
        raise ConfigError("give --prompt or --ontology, not both")
    ontology = Ontology.from_file(ontology_file) if ontology_file else Ontology.from_prompts(prompts) if prompts else None
    settings = load_settings(device=device, precision=precision, batch_size=batch_size)
    bars: list = []

    def on_model(index: int, model: str) -> None:
        for bar in bars:
            bar.close()
        bars.clear()
        click.echo(f"[{index + 1}/{len(models)}] {model}")

    def on_total(total: int) -> None:
        bars.append(tqdm(total=total, disable=quiet, unit="img", desc="labelling", dynamic_ncols=True))

    try:
        comparison = compare_models(
            gt, list(models), out_dir, gt_images=gt_images, ontology=ontology, sam_model=sam_model,
            config=DetectConfig(threshold=threshold), device=settings.device, precision=settings.precision,
            exact=exact, batch_size=settings.batch_size, workers=workers, iou=iou, target_precision=target_precision,
            on_model=on_model, on_total=on_total, on_progress=lambda n: bars[-1].update(n))
    finally:
        for bar in bars:
            bar.close()
    written = write_comparison(comparison, out_dir)
    for m in comparison.models:
        speed = f"{m.images_per_second:.2f} img/s" if m.images_per_second else "- img/s"
        click.echo(f"  {m.model}: mAP {_fmt(m.result.map)}  AP50 {_fmt(m.result.ap50)}  {speed}")
    click.echo(f"best overall: {comparison.best().model}")
    click.echo("best per class:")
    for name, m in comparison.best_per_class().items():
        click.echo(f"  {name}: {m.model}")
    for kind, path in written.items():
        click.echo(f"{kind}: {path}")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
