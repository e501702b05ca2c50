"""``autolabel relabel``: re-prompt a finished run from its kept candidates, without the vision backbone."""

from __future__ import annotations

import click

from autolabel.cli.errors import handle_errors
from autolabel.cli.options import class_options, detect_config, filter_options


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="New run folder (created; re-use it to resume).")
@class_options
@filter_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def relabel(run_dir, out_dir, prompts, ontology_file, exemplars_file, threshold, nms_iou, no_nms, agnostic_nms_iou,
            min_area, max_area, quiet):
    """Re-score the run RUN_DIR with new prompts and thresholds into the new run folder --out.

    \b
    Examples:
      autolabel relabel runs/street --out runs/street2 --prompt car --prompt person --prompt bicycle
      autolabel relabel runs/street --out runs/street-strict --ontology classes.yaml --threshold 0.3
      autolabel relabel runs/street --out runs/street3 --prompt "car=car;not=toy car" --exemplars boxes.json

    Needs a run labelled with kept candidates (--keep-candidates, on by default for OWLv2): only the
    detector's text tower runs (and its vision tower once per exemplar image). Prompts, negatives and
    exemplars work as in `autolabel label`; labels equal a full re-run's restricted to the kept
    boxes. Human labels, accepted and rejected labels and reviewed images are copied unchanged;
    predictions that overlap them are dropped. Re-running the same command resumes.
    """
    from tqdm import tqdm

    from autolabel.ontology import load_ontology
    from autolabel.relabel import relabel_run
    from autolabel.settings import load_settings

    settings = load_settings(threshold=threshold, nms_iou=nms_iou)
    ontology = load_ontology(prompts, ontology_file, exemplars_file)
    config = detect_config(settings, no_nms, agnostic_nms_iou, min_area, max_area)
    bars = []

    def on_total(total: int) -> None:
        bars.append(tqdm(total=total, disable=quiet, unit="img", desc="relabelling", dynamic_ncols=True))

    try:
        summary = relabel_run(run_dir, out_dir, ontology, config, on_total=on_total,
                              on_progress=lambda n: bars[0].update(n))
    finally:
        for bar in bars:
            bar.close()
    click.echo(f"images: {summary.done} relabelled, {summary.failed} failed, {summary.skipped} skipped (already done)"
               f" in {summary.seconds:.1f}s ({summary.images_per_second:.0f} img/s)")
    for name in ontology.names:
        click.echo(f"  {name}: {summary.per_class.get(name, 0)} boxes")
    if summary.human_images:
        click.echo(f"  human labels and reviews carried over on {summary.human_images} images")
    if summary.failed_in_source:
        click.echo(f"  {summary.failed_in_source} of the failed images had failed in the source run too "
                   "(carried over as failed)")
    if summary.missing:
        click.echo(f"  {len(summary.missing)} images had no candidates file (recorded as failed; label them "
                   f"again), e.g. {summary.missing[0]}", err=True)
    click.echo(f"run folder: {out_dir}")
