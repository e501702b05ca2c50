"""``autolabel review-queue``: a run's images, most worth a person's look first."""

from __future__ import annotations

import json

import click

from autolabel.cli.errors import handle_errors


@click.command("review-queue")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Print only the first N images.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per image, with every term).")
@handle_errors
def review_queue(run_dir, limit, as_json):
    """Rank the labelled images of RUN_DIR by how much a review is worth: scores near their class's
    threshold, prompts of one class disagreeing, boxes of different classes overlapping, and box
    counts far from the run's median. Reviewed images come last.

    \b
    Examples:
      autolabel review-queue runs/street --limit 20
      autolabel review-queue runs/street --json > queue.json
    """
    from autolabel.review_queue import build_queue
    from autolabel.store import open_store

    with open_store(run_dir, create=False) as store:
        entries = build_queue(store)[:limit]
    rows = [{"rank": rank, "image_id": e.image_id, "path": e.path, "score": round(e.uncertainty.score, 4),
             "reviewed": e.reviewed, "reason": e.uncertainty.reason,
             "terms": {k: round(v, 4) for k, v in e.uncertainty.terms.items()}}
            for rank, e in enumerate(entries, start=1)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = len(str(len(rows)))
    click.echo(f"{'rank':>{width}}  score  image  (main reason)")
    for row in rows:
        reviewed = ", reviewed" if row["reviewed"] else ""
        click.echo(f"{row['rank']:>{width}}  {row['score']:5.2f}  {row['path']}  ({row['reason']}{reviewed})")
