"""``autolabel models``: the model families this version can load, from the family registry."""

from __future__ import annotations

import click

from autolabel.cli.errors import handle_errors
from autolabel.models.registry import KIND_OPTIONS, KINDS, families

_COLUMNS = ("family", "default checkpoint", "input", "licence", "gated")


def family_rows(kind: str) -> list[tuple[str, ...]]:
    """One row per family of ``kind``, in ``_COLUMNS`` order."""
    return [(f.name, f.default_checkpoint, f.input_size, f.licence, "yes" if f.gated else "no") for f in families(kind)]


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in [_COLUMNS, *rows])


@click.command("models")
@click.option("--details", is_flag=True, help="Also say when to pick each family.")
@handle_errors
def models(details):
    """List the model families (detectors for --model, segmenters for --sam-model): default
    checkpoint, input size, licence, and whether the weights are gated.

    \b
    Any checkpoint of a listed family works (hub id or folder); its config.json names the family:
      autolabel label photos/ --out runs/v1 --prompt cat --model google/owlvit-base-patch16
    Gated weights: request access on the checkpoint's hub page, then `hf auth login`.
    """
    for kind in KINDS:
        click.echo(f"{kind}s ({KIND_OPTIONS[kind]}):")
        click.echo(_table(family_rows(kind)))
        if details:
            for family in families(kind):
                click.echo(f"  {family.name}: {family.pick_when}")
        click.echo("")
    click.echo("More: docs/models.md")
