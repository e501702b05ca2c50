"""How the tabs register their handlers, and how a handler's errors reach the user. Handlers return
``{component: value}`` dicts (outputs they omit stay unchanged), or ``gr.skip()`` to change nothing.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import re
import threading
from contextlib import contextmanager

import gradio as gr

from autolabel.errors import AutolabelError


# An absolute path (POSIX or Windows) not glued to a word before it, e.g. in "cannot read /srv/x/a.jpg".
_PATH = re.compile(r"(?<![\w.:/\\])(?:[A-Za-z]:)?[\\/](?:[^\s'\"\\/]+[\\/])*([^\s'\"\\/]*)")


def without_paths(text: str) -> str:
    """``text`` with every absolute path shortened to its last part: the server's folders stay out
    of what the browser sees."""
    return _PATH.sub(lambda m: m.group(1) or "…", text)


def user_message(text: str) -> str:
    """A message for the page: its first line, without server paths, HTML-escaped."""
    lines = str(text).strip().splitlines()
    return html.escape(without_paths(lines[0])) if lines else ""


class _ThisThread(logging.Handler):
    """Collects the messages logged by the calling thread only: concurrent users' calls run in
    other threads, so no one sees another user's warning."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.thread, self.messages = threading.get_ident(), []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextmanager
def model_warnings():
    """Show what the models warn about during this call (e.g. a prompt cut at the model's token
    limit) as warnings on the page."""
    handler, logger = _ThisThread(), logging.getLogger("autolabel.models")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        for message in dict.fromkeys(handler.messages):
            gr.Warning(user_message(message))


def _message(exc: Exception) -> str:
    return user_message(str(exc)) or type(exc).__name__


def ui_errors(fn):
    """Show ``AutolabelError`` as a one-line error message in the UI (no traceback anywhere)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except AutolabelError as exc:
                raise gr.Error(_message(exc), print_exception=False) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AutolabelError as exc:
            raise gr.Error(_message(exc), print_exception=False) from None

    return wrapper


def listen(event, fn, inputs, outputs, **kwargs):
    """Register ``fn`` on ``event`` with user-fixable errors shown as messages. Listeners are hidden
    from the API docs and the Gradio clients: only the page calls them."""
    kwargs.setdefault("api_visibility", "private")
    return event(ui_errors(fn), inputs, outputs, **kwargs)
