"""``autolabel models`` lists every family of the registry with its facts."""

from __future__ import annotations

from click.testing import CliRunner

from autolabel.cli import main
from autolabel.models.registry import FAMILIES


def test_lists_every_family_with_checkpoint_licence_and_gating():
    result = CliRunner().invoke(main, ["models", "--details"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for family in FAMILIES:
        row = next(line for line in lines if line.split()[:1] == [family.name])
        assert family.default_checkpoint in row and family.licence in row
        assert row.rstrip().endswith("yes" if family.gated else "no")
        assert f"  {family.name}: {family.pick_when}" in lines
    assert lines.index("detectors (--model):") < lines.index("segmenters (--sam-model):")
