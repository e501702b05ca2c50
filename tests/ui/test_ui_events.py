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


def test_messages_show_no_server_paths():
    from autolabel.ui.events import user_message

    text = "cannot read /srv/data/runs/r/uploads/a.jpg: corrupt\nsecond line"
    assert user_message(text) == "cannot read a.jpg: corrupt"
    assert user_message(r"no such file C:\Users\me\b.png") == "no such file b.png"
    assert user_message("use car=car,van and/or 1/2 <b>") == "use car=car,van and/or 1/2 &lt;b&gt;"


def test_run_summary_shows_user_names_as_text(tmp_path):
    from autolabel.ontology import Ontology
    from autolabel.store import open_store
    from autolabel.ui.runs import run_summary

    with open_store(tmp_path / "<b>run") as store:
        store.bind_config({"model": "m", "sam_model": None, "mode": "detect",
                           "ontology": Ontology.from_prompts(["<img src onerror>"]).to_dict(),
                           "detect": {}})
        summary = run_summary(store)
    assert "<b>" not in summary and "<img" not in summary
    assert "&lt;b&gt;run" in summary and "&lt;img src onerror&gt;" in summary


def test_model_warnings_reach_only_the_user_whose_call_logged_them(monkeypatch):
    import logging
    import threading

    from autolabel.ui.events import model_warnings

    shown = []
    monkeypatch.setattr(gr, "Warning", shown.append)
    log = logging.getLogger("autolabel.models.owlv2")
    other = threading.Thread(target=lambda: log.warning("another user's prompt %r is cut", "x" * 30))
    with model_warnings():
        log.warning("prompt %r is 40 tokens; the model reads only the first %d", "a long prompt", 16)
        log.warning("prompt %r is 40 tokens; the model reads only the first %d", "a long prompt", 16)
        other.start()
        other.join()
    assert shown == ["prompt &#x27;a long prompt&#x27; is 40 tokens; the model reads only the first 16"]
