"""The ``autolabel`` command line: thin click commands over the library, one module per command
(heavy imports inside the commands so ``--help`` stays fast)."""

from __future__ import annotations

import logging
import os

import click

from autolabel import __version__
from autolabel.cli import compare, eval as eval_cmd, export, finetune, import_, label, models, relabel, review_queue, ui


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
    # Process-wide set-up belongs to entry points, never to an import of the library.
    # MPS lacks some ops OWLv2/SAM2 use; torch reads the fallback switch when it is first imported.
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from autolabel.images import ignore_bomb_warnings

    ignore_bomb_warnings()


# Commands keep their heavy imports inside the function body (gradio only when ``ui`` runs).
for _command in (label.label, export.export, import_.import_, eval_cmd.eval_, compare.compare, finetune.finetune,
                 models.models, relabel.relabel, review_queue.review_queue, ui.ui):
    main.add_command(_command)
