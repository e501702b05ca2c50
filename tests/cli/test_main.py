"""The ``autolabel`` group: every command is registered, and process-wide set-up happens when the
command line runs (not when the package is imported)."""

from __future__ import annotations

import os
import warnings

from click.testing import CliRunner
from PIL import Image

from autolabel.cli import main


def test_help_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    commands = result.output.split("Commands:")[1].split()
    assert {"label", "export", "import", "eval", "finetune", "ui"} <= set(commands)


def test_running_a_command_sets_up_the_process(monkeypatch):
    monkeypatch.delenv("PYTORCH_ENABLE_MPS_FALLBACK", raising=False)
    with warnings.catch_warnings():
        result = CliRunner().invoke(main, ["export", "--help"])
        bomb_filters = [f for f in warnings.filters if f[0] == "ignore" and f[2] is Image.DecompressionBombWarning]
    assert result.exit_code == 0
    assert os.environ["PYTORCH_ENABLE_MPS_FALLBACK"] == "1"
    assert bomb_filters
