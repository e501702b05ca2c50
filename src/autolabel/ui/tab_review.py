"""The Review tab: step through a run's images; accept, reject, relabel, delete, draw or move boxes.
Every edit is saved at once (``review``); keyboard shortcuts click the buttons (``KEYBOARD_JS``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from autolabel.errors import StoreError
from autolabel.ui import review
from autolabel.ui.draw import detection_shapes, draw_shapes
from autolabel.ui.events import listen
from autolabel.ui.runs import run_summary

if TYPE_CHECKING:
    from autolabel.ui.app import AutolabelApp

ADD_MODE = "add a new box"
MOVE_MODE = "move the selected box"

# keys -> elem_id of the button they click; only while the Review tab is shown and the focus is not
# in a text field.
KEYBOARD_JS = """
<script>
(() => {
  const keys = {
    "ArrowRight": "review-next", "n": "review-next", "ArrowLeft": "review-prev", "p": "review-prev",
    "a": "review-accept-image", "y": "review-accept", "r": "review-reject", "x": "review-delete",
    "Delete": "review-delete", "Escape": "review-cancel"
  };
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
    const id = keys[event.key];
    if (!id) return;
    const el = document.getElementById(id);
    if (!el || el.offsetParent === null) return;
    const button = el.tagName === "BUTTON" ? el : el.querySelector("button");
    if (button && !button.disabled) { event.preventDefault(); button.click(); }
  });
})();
</script>
"""


@dataclass(frozen=True)
class ReviewState:
    """Per-browser-session position in the Review tab (Gradio keeps one per session)."""

    run: str | None = None
    ids: tuple[int, ...] = ()
    pos: int = 0
    pending: tuple[float, float] | None = None  # first corner of a box being drawn, display pixels
    selected: int | None = None

    @property
    def image_id(self) -> int | None:
        return self.ids[self.pos] if self.ids else None


class ReviewTab:
    """The Review tab's components (built inside the current ``gr.Tab``) and handlers."""

    def __init__(self, app: AutolabelApp):
        self.app = app
        self.state = gr.State(ReviewState())
        with gr.Row():
            self.run = gr.Dropdown(label="Run", choices=app.runs(), elem_id="review-run", scale=2)
            self.filter = gr.Radio(list(review.FILTERS), value="all", label="Images", elem_id="review-filter", scale=2)
            self.low_score = gr.Number(0.3, label="Low score below", minimum=0, maximum=1, elem_id="review-low",
                                       scale=1)
            self.load_button = gr.Button("Load", variant="primary", elem_id="review-load", scale=1)
        self.summary = gr.Markdown(elem_id="review-summary")
        with gr.Row():
            self.prev_button = gr.Button("◀ Previous (p)", elem_id="review-prev", size="sm")
            self.next_button = gr.Button("Next (n) ▶", elem_id="review-next", size="sm")
            self.accept_image_button = gr.Button("Accept image (a)", variant="primary", elem_id="review-accept-image",
                                                 size="sm")
        self.position = gr.Markdown(elem_id="review-position")
        with gr.Row():
            with gr.Column(scale=3):
                self.image = gr.Image(label="Click two opposite corners to draw a box", interactive=False,
                                      elem_id="review-image", format="png")
                self.hint = gr.Markdown(elem_id="review-hint", elem_classes="autolabel-hint")
            with gr.Column(scale=2):
                self.select = gr.Dropdown(label="Selected label", choices=[], elem_id="review-select")
                with gr.Row():
                    self.accept_button = gr.Button("Accept (y)", elem_id="review-accept", size="sm")
                    self.reject_button = gr.Button("Reject (r)", elem_id="review-reject", size="sm", variant="stop")
                    self.delete_button = gr.Button("Delete (x)", elem_id="review-delete", size="sm")
                self.class_name = gr.Dropdown(label="Class (for a change or a new box)", choices=[],
                                              elem_id="review-class")
                self.set_class_button = gr.Button("Change class of selected", elem_id="review-set-class", size="sm")
                self.draw_mode = gr.Radio([ADD_MODE, MOVE_MODE], value=ADD_MODE, label="Clicks on the image",
                                          elem_id="review-draw-mode")
                self.cancel_button = gr.Button("Cancel box (Esc)", elem_id="review-cancel", size="sm")
                self.table = gr.Dataframe(value=_labels_table([]), label="Labels", interactive=False,
                                          elem_id="review-table")
        gr.Markdown("Shortcuts: **n**/→ next · **p**/← previous · **a** accept image · **y** accept label ·"
                    " **r** reject label · **x** delete label · **Esc** cancel box", elem_classes="autolabel-hint")

    def wire(self) -> None:
        outputs = [self.state, self.image, self.table, self.select, self.class_name, self.position, self.hint]
        listen(self.load_button.click, self.load, [self.run, self.filter, self.low_score], [*outputs, self.summary])
        listen(self.prev_button.click, functools.partial(self.step, delta=-1), [self.state], outputs)
        listen(self.next_button.click, functools.partial(self.step, delta=+1), [self.state], outputs)
        listen(self.accept_image_button.click, self.accept_image, [self.state], outputs)
        listen(self.select.input, self.choose, [self.state, self.select], outputs)
        listen(self.table.select, self.choose_row, [self.state], outputs)
        for button, action in ((self.accept_button, "accept"), (self.reject_button, "reject"),
                               (self.delete_button, "delete")):
            listen(button.click, functools.partial(self.edit, action=action), [self.state, self.select], outputs)
        listen(self.set_class_button.click, functools.partial(self.edit, action="class"),
               [self.state, self.select, self.class_name], outputs)
        listen(self.image.select, self.click, [self.state, self.select, self.draw_mode, self.class_name], outputs)
        listen(self.cancel_button.click, self.cancel, [self.state], outputs)

    def render(self, state: ReviewState, message: str | None = None) -> dict:
        """Every output that shows ``state``: image, table, selection, position and hint."""
        if state.run is None or not state.ids:
            position = "No images to review with this filter." if state.run else "Choose a run and press Load."
            return {self.state: state, self.image: None, self.table: _labels_table([]),
                    self.select: gr.Dropdown(choices=[], value=None), self.position: position, self.hint: message or ""}
        with self.app.open_run(state.run) as store:
            record = store.image(state.image_id)
            labels = review.labels(store, record.id)
            names = store.ontology.names
        image, scale = self.app.display.get(record)
        ids = [int(i) for i in labels.ids]
        selected = state.selected if state.selected in ids else (ids[0] if ids else None)
        state = replace(state, selected=selected)
        done = "reviewed" if record.reviewed else "not reviewed yet"
        if message is None:
            message = ("First corner placed: click the opposite corner." if state.pending else
                       "Click two opposite corners on the image to draw a box.")
        return {self.state: state,
                self.image: draw_shapes(image, detection_shapes(labels, names, selected), scale, state.pending),
                self.table: _labels_table(review.table_rows(labels, names)),
                self.select: gr.Dropdown(choices=review.label_choices(labels, names), value=selected),
                self.position: f"Image {state.pos + 1} of {len(state.ids)} · `{Path(record.path).name}` · {done}",
                self.hint: message}

    def load(self, run, filter, low_score) -> dict:
        with self.app.open_run(run) as store:
            ids = tuple(review.image_ids(store, filter, float(low_score or 0)))
            names = store.ontology.names
            summary = run_summary(store)
        return {**self.render(ReviewState(run=run, ids=ids)), self.summary: summary,
                self.class_name: gr.Dropdown(choices=names, value=names[0] if names else None)}

    def step(self, state: ReviewState, delta: int) -> dict:
        state = _loaded(state)
        pos = min(max(0, state.pos + delta), len(state.ids) - 1)
        return self.render(replace(state, pos=pos, pending=None, selected=None))

    def choose(self, state: ReviewState, selected) -> dict:
        if state is None or not state.ids:
            return self.render(state or ReviewState())
        return self.render(replace(state, selected=int(selected) if selected not in (None, "") else None))

    def choose_row(self, state: ReviewState, evt: gr.SelectData) -> dict:
        state = _loaded(state)
        row = evt.row_value or []
        if not row or row[0] in (None, ""):
            return self.render(state)
        return self.render(replace(state, selected=int(row[0])))

    def edit(self, state: ReviewState, selected, class_name: str | None = None, *, action: str) -> dict:
        state = _loaded(state)
        with self.app.open_run(state.run) as store:
            if action == "class":
                review.set_class(store, state.image_id, selected, class_name)
            else:
                _EDITS[action](store, state.image_id, selected)
        return self.render(replace(state, pending=None), f"Saved: {action} #{selected}.")

    def accept_image(self, state: ReviewState) -> dict:
        state = _loaded(state)
        with self.app.open_run(state.run) as store:
            n = review.accept_image(store, state.image_id)
        pos = min(state.pos + 1, len(state.ids) - 1)
        return self.render(replace(state, pos=pos, pending=None, selected=None),
                           f"Image accepted ({n} labels accepted).")

    def click(self, state: ReviewState, selected, draw_mode, class_name, evt: gr.SelectData) -> dict:
        """A click on the image: the first or second corner of a new box, or of the selected box's new place."""
        state = _loaded(state)
        if evt.index is None:
            return self.render(state)
        with self.app.open_run(state.run) as store:
            record = store.image(state.image_id)
            _, scale = self.app.display.get(record)
            pending, box = review.corner_click(state.pending, evt.index, scale, record.width, record.height)
            if box is None:
                return self.render(replace(state, pending=pending))
            if draw_mode == MOVE_MODE:
                review.move_box(store, state.image_id, selected, box)
                new_selected, message = selected, f"Saved: moved #{selected}."
            else:
                new_selected = review.add_box(store, state.image_id, class_name, box)
                message = f"Saved: added #{new_selected} ({class_name})."
        return self.render(replace(state, pending=None, selected=int(new_selected)), message)

    def cancel(self, state: ReviewState) -> dict:
        return self.render(replace(state or ReviewState(), pending=None), "Cancelled.")

    def on_load(self) -> dict:
        return {self.run: self.app.run_dropdown()}


_EDITS = {"accept": review.accept, "reject": review.reject, "delete": review.delete}


def _loaded(state: ReviewState | None) -> ReviewState:
    if state is None or not state.ids:
        raise StoreError("load a run first")
    return state


def _labels_table(rows: list[list]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=review.TABLE_HEADERS)
