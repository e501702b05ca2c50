"""Console output shared by commands."""

from __future__ import annotations

import click


def echo_notes(*notes: tuple[object, str]) -> None:
    """Echo, indented, the text of each ``(condition, text)`` note whose condition holds."""
    for condition, text in notes:
        if condition:
            click.echo(f"  {text}")
