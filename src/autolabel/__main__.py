"""``python -m autolabel`` is the ``autolabel`` command."""

from autolabel.cli import main

main()
