"""How the tabs register their handlers, and how a handler's errors reach the user.

Handlers return ``{component: value}`` dicts (Gradio leaves the outputs they omit unchanged), or
``gr.skip()`` to change nothing.
"""

from __future__ import annotations

import functools
import html
import inspect

import gradio as gr

from autolabel.errors import AutolabelError


def _message(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return html.escape(text[0] if text else type(exc).__name__)


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
