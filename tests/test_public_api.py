import subprocess
import sys

import autolabel


def test_every_public_name_resolves():
    for name in autolabel.__all__:
        assert getattr(autolabel, name) is not None, name


def test_importing_changes_nothing_process_wide():
    """No torch, and no environment, warning-filter or logging change until an entry point runs
    (cv2 sets LD_LIBRARY_PATH when imported: that one is not ours)."""
    code = (
        "import logging, os, sys, warnings\n"
        "import cv2\n"
        "env, filters = dict(os.environ), list(warnings.filters)\n"
        "import autolabel, autolabel.cli, autolabel.settings\n"
        "print('torch' in sys.modules, dict(os.environ) == env, list(warnings.filters) == filters,\n"
        "      logging.getLogger().handlers == [])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "True", "True"]
