"""ui.events: user-fixable errors become one-line messages; bugs keep their traceback."""

from __future__ import annotations

import gradio as gr
import pytest

from autolabel.errors import ConfigError, ImageLoadError
from autolabel.ui.events import ui_errors


def test_ui_errors_turns_domain_errors_into_one_line_messages():
    @ui_errors
    def bad():
        raise ImageLoadError("photo.jpg: not an image <b>\nsecond line")

    with pytest.raises(gr.Error) as info:
        bad()
    assert info.value.message == "photo.jpg: not an image &lt;b&gt;"  # first line, HTML-escaped
    assert info.value.print_exception is False


def test_ui_errors_wraps_generators_and_leaves_bugs_alone():
    @ui_errors
    def gen():
        yield 1
        raise ConfigError("no prompts")

    out = gen()
    assert next(out) == 1
    with pytest.raises(gr.Error, match="no prompts"):
        next(out)

    @ui_errors
    def bug():
        raise KeyError("a bug keeps its traceback")

    with pytest.raises(KeyError):
        bug()
