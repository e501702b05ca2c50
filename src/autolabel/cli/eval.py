"""``autolabel eval``: a run's labels against ground truth, with per-class threshold calibration."""

from __future__ import annotations

import click

from autolabel.cli.errors import handle_errors
from autolabel.cli.output import echo_notes
from autolabel.evaluation.evaluate import DEFAULT_IOU


@click.command("eval")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--gt", "gt", required=True, type=click.Path(exists=True),
              help="Ground truth: a COCO .json, a YOLO data.yaml, a Pascal VOC folder, a Label Studio JSON "
                   "export, or a run folder (e.g. from `autolabel import`).")
@click.option("--gt-images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Where the ground truth's images are (COCO, VOC, Label Studio; YOLO names its own).")
@click.option("--iou", type=float, default=DEFAULT_IOU, show_default=True, help="IoU for precision, recall and thresholds.")
@click.option("--target-precision", type=float, default=None,
              help="Also find each class's lowest threshold with at least this precision; thresholds.yaml then uses it.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where report.html, metrics.json and thresholds.yaml go (default: RUN_DIR/eval).")
@click.option("--no-report", is_flag=True, help="Print the table only; write nothing.")
@click.option("--model-only", is_flag=True,
              help="Score the model's own predictions: labels people changed count as predicted, drawn ones not.")
@click.option("--order", type=click.Choice(["review", "path"]), default="review", show_default=True,
              help="Order of the ground-truth images when counting how many the thresholds needed to settle: "
                   "the review queue's (most uncertain first) or by path.")
@handle_errors
def eval_(run_dir, gt, gt_images, iou, target_precision, out_dir, no_report, model_only, order):
    """Evaluate the labels of RUN_DIR against ground truth (COCO AP, per-class AP, precision/recall)
    and calibrate per-class score thresholds.

    \b
    Examples:
      autolabel eval runs/street --gt hand-labelled/instances.json --gt-images hand-labelled/images
      autolabel eval runs/street --gt runs/gt --target-precision 0.9
    \b
    Label 30 images by hand, calibrate, then relabel or export with the better thresholds:
      autolabel label photos/ --out runs/street-v2 --ontology runs/street/eval/thresholds.yaml
      autolabel export runs/street --format yolo --out yolo/ --thresholds runs/street/eval/thresholds.yaml

    Classes are matched by name; images by path, then by content.
    """
    from pathlib import Path

    from autolabel.evaluation import evaluate_run, write_report
    from autolabel.store import open_store

    with open_store(run_dir, create=False) as store:
        result = evaluate_run(store, gt, iou=iou, target_precision=target_precision, gt_images=gt_images,
                              model_only=model_only, order=order)
        ontology = store.ontology
    click.echo(result.format_table())
    click.echo(f"mAP@[.5:.95] {_fmt(result.map)}  AP50 {_fmt(result.ap50)}  AP75 {_fmt(result.ap75)}"
               + (f"  mask mAP {_fmt(result.segm_map)}" if result.segm_map is not None else "")
               + f"  ({result.images} images)")
    echo_notes((result.missing, f"{len(result.missing)} ground-truth images are not in the run (not evaluated)"),
               (result.gt_only_classes, f"ground-truth classes not in the run: {', '.join(result.gt_only_classes)}"),
               (result.run_only_classes, f"run classes not in the ground truth: {', '.join(result.run_only_classes)}"))
    click.echo(f"thresholds stable (within 0.05 from then on, images in {order} order): "
               + ", ".join(map(_stability, result.classes)))
    if target_precision is not None:
        unreachable = [c.name for c in result.classes if c.at_precision is None and c.gt and c.predictions]
        echo_notes((unreachable, f"precision {target_precision:g} is not reachable for: {', '.join(unreachable)} "
                                 "(thresholds.yaml uses their max-F1 threshold)"))
    if no_report:
        return
    out = Path(out_dir) if out_dir else Path(run_dir) / "eval"
    written = write_report(result, out, ontology, "precision" if target_precision is not None else "f1")
    for kind, path in written.items():
        click.echo(f"{kind}: {path}")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _stability(c) -> str:
    if c.stable_after is None:
        return f"{c.name} not stable"
    return f"{c.name} after {c.stable_after} image{'' if c.stable_after == 1 else 's'}"
