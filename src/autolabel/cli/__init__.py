"""The ``autolabel`` command line: thin click commands over the library.

Each command opens the store, calls one library function and maps domain errors to one readable
line (no traceback) with a non-zero exit code. Heavy imports happen inside commands so ``--help``
stays fast.
"""

from __future__ import annotations

import functools
import logging
import sys

import click

from autolabel import __version__


def handle_errors(func):
    """Turn domain errors into ``click.ClickException`` (one line, exit 1) and Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from autolabel.errors import AutolabelError

        try:
            return func(*args, **kwargs)
        except AutolabelError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("\ninterrupted: finished images are saved; run the same command again to resume", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="autolabel")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logging.")
def main(verbose: bool) -> None:
    """Text-prompted auto-labeling for computer-vision datasets.

    \b
    Label a folder with OWLv2 boxes (and SAM2 masks), then export a training set:
      autolabel label photos/ --out runs/street --prompt "car=car,automobile,van" --prompt person
      autolabel label photos/ --out runs/street-seg --prompt person --mode segment
      autolabel export runs/street --format coco --out export/ --image-size 640 --zip

    Settings come from AUTOLABEL_* environment variables or a .env file (AUTOLABEL_MODEL,
    AUTOLABEL_SAM_MODEL, AUTOLABEL_DEVICE, ...); command-line flags override them.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _register() -> None:
    from autolabel.cli import export, label

    main.add_command(label.label)
    main.add_command(export.export)

    from autolabel.cli import eval as eval_cmd, import_  # datasets in, evaluation against them

    main.add_command(import_.import_)
    main.add_command(eval_cmd.eval_)

    from autolabel.cli import finetune  # fine-tune OWLv2 on reviewed labels

    main.add_command(finetune.finetune)

    from autolabel.cli import ui  # the web UI (gradio is imported only when the command runs)

    main.add_command(ui.ui)


_register()
