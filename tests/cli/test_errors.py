"""cli.errors: domain errors are one line with exit 1; Ctrl-C exits 130 with a resume hint; bugs keep
their traceback."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from autolabel.cli.errors import handle_errors
from autolabel.errors import StoreError


def _command(exc: BaseException) -> click.Command:
    @click.command()
    @handle_errors
    def fail():
        raise exc

    return fail


def test_domain_error_is_one_line_and_exit_1():
    result = CliRunner().invoke(_command(StoreError("run folder holds another configuration")))
    assert result.exit_code == 1
    assert result.output == "Error: run folder holds another configuration\n"


def test_ctrl_c_exits_130_with_a_resume_hint():
    result = CliRunner().invoke(_command(KeyboardInterrupt()))
    assert result.exit_code == 130
    assert "run the same command again to resume" in result.output


def test_other_errors_are_bugs_and_propagate():
    with pytest.raises(ZeroDivisionError):
        CliRunner().invoke(_command(ZeroDivisionError()), catch_exceptions=False)
