"""How commands fail: domain errors become one readable line, Ctrl-C a resumable stop (a module of
its own so that commands import it without importing the group that registers them)."""

from __future__ import annotations

import functools
import sys

import click

from autolabel.errors import AutolabelError


def handle_errors(func):
    """Turn domain errors into ``click.ClickException`` (one line, exit 1) and Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except AutolabelError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("\ninterrupted: finished images are saved; run the same command again to resume", err=True)
            sys.exit(130)

    return wrapper
