"""The Review tab: step through a run's images on an annotation canvas (``canvas``): draw, move and
resize boxes with the mouse, accept, reject, relabel or delete labels, undo and redo. Every edit is
saved at once (``review``); keyboard shortcuts click the buttons (``KEYBOARD_JS``) or act on the canvas."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from autolabel.errors import AutolabelError, StoreError
from autolabel.ui import review
from autolabel.ui.canvas import review_canvas
from autolabel.ui.events import listen, without_paths
from autolabel.ui.runs import run_summary
from autolabel.ui.session import mask_labeler

if TYPE_CHECKING:
    from autolabel.ui.app import AutolabelApp

log = logging.getLogger(__name__)

STRIP_SPAN = 7  # images either side of the current one in the strip
UNDO_DEPTH = 100

# keys -> elem_id of the button they click; only while the Review tab is shown and the focus is not
# in a text field. The canvas handles its own keys (zoom, toggles, undo, help).
KEYBOARD_JS = """
<script>
(() => {
  const keys = {
    "ArrowRight": "review-next", "n": "review-next", "ArrowLeft": "review-prev", "p": "review-prev",
    "a": "review-accept-image", "y": "review-accept", "r": "review-reject", "x": "review-delete",
    "Delete": "review-delete"
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


# A run whose labels carry masks, in a UI started without a segmenter: say how to get masks for
# the boxes a person draws, rather than silently saving plain boxes.
NO_SEGMENTER = ("Boxes you draw or move here get no mask: start the UI with --sam-model (a SAM2 checkpoint, "
                "or facebook/sam3 for a SAM 3 run) to get SAM masks for them.")


@dataclass(frozen=True)
class ReviewState:
    """Per-browser-session position in the Review tab (Gradio keeps one per session); ``undo`` and
    ``redo``: this session's edits of the run, newest last; ``points``: the clicks ``(x, y, label)``
    that refined the mask of label ``points_for`` (the selected one), kept until another is selected."""

    run: str | None = None
    ids: tuple[int, ...] = ()
    pos: int = 0
    selected: int | None = None
    undo: tuple[review.Change, ...] = ()
    redo: tuple[review.Change, ...] = ()
    points: tuple[tuple[float, float, int], ...] = ()
    points_for: int | None = None

    @property
    def image_id(self) -> int | None:
        return self.ids[self.pos] if self.ids else None

    def edited(self, change: review.Change) -> "ReviewState":
        return replace(self, undo=(*self.undo, change)[-UNDO_DEPTH:], redo=())


class ReviewTab:
    """The Review tab's components (built inside the current ``gr.Tab``) and handlers."""

    def __init__(self, app: AutolabelApp):
        self.app = app
        self.thumbnails = review.Thumbnails(max_pixels=app.config.max_image_pixels)
        self.state = gr.State(ReviewState())
        # Laid out for a 1366x768 screen: one row to pick the run, then the canvas (as high as the
        # window allows, ``canvas.fitStage``) beside what is used on every image, then the run's summary.
        with gr.Row():
            self.run = gr.Dropdown(label="Run", choices=app.runs(), elem_id="review-run", scale=2)
            self.filter = gr.Dropdown(list(review.FILTERS), value="all", label="Images", elem_id="review-filter",
                                      scale=2)
            self.low_score = gr.Number(0.3, label="Low score below", minimum=0, maximum=1, elem_id="review-low",
                                       scale=1)
            self.load_button = gr.Button("Load", variant="primary", elem_id="review-load", scale=1)
        with gr.Row():
            with gr.Column(scale=4):
                self.canvas = review_canvas()
            with gr.Column(scale=2, min_width=300):
                self.position = gr.Markdown(elem_id="review-position")
                with gr.Row():
                    self.prev_button = gr.Button("◀ Previous (p)", elem_id="review-prev", size="sm", min_width=80)
                    self.next_button = gr.Button("Next (n) ▶", elem_id="review-next", size="sm", min_width=80)
                self.accept_image_button = gr.Button("Accept image (a)", variant="primary",
                                                     elem_id="review-accept-image", size="sm")
                self.class_name = gr.Dropdown(label="Class (of new boxes, or to change the selected one to)",
                                              choices=[], elem_id="review-class")
                self.select = gr.Dropdown(label="Selected label", choices=[], elem_id="review-select")
                with gr.Row():
                    self.accept_button = gr.Button("Accept (y)", elem_id="review-accept", size="sm", min_width=60)
                    self.reject_button = gr.Button("Reject (r)", elem_id="review-reject", size="sm", variant="stop",
                                                   min_width=60)
                    self.delete_button = gr.Button("Delete (x)", elem_id="review-delete", size="sm", min_width=60)
                self.set_class_button = gr.Button("Change class of selected", elem_id="review-set-class", size="sm")
                # Shown for runs whose labels carry masks when the UI has a segmenter (``load``).
                self.masks = gr.Checkbox(False, label="Masks for my boxes (SAM)", visible=False, elem_id="review-masks")
                self.hint = gr.Markdown(elem_id="review-hint", elem_classes="autolabel-hint")
                self.summary = gr.Markdown(elem_id="review-summary")
                self.table = gr.Dataframe(value=_labels_table([]), label="Labels", interactive=False,
                                          elem_id="review-table", max_height=320)

    def wire(self) -> None:
        outputs = [self.state, self.canvas, self.table, self.select, self.position, self.hint]
        listen(self.load_button.click, self.load, [self.run, self.filter, self.low_score],
               [*outputs, self.summary, self.class_name, self.masks])
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
        # "multiple": a drag's own select event may still run when its move arrives; Gradio's default
        # ("once") would drop the move. Gestures run one at a time, in order.
        listen(self.canvas.edit, self.on_canvas, [self.state, self.class_name, self.masks],
               [*outputs, self.app.status_box], trigger_mode="multiple")

    def render(self, state: ReviewState, message: str | None = None) -> dict:
        """Every output that shows ``state``: canvas, table, selection, position and hint."""
        if state.run is None or not state.ids:
            position = "No images to review with this filter." if state.run else "Choose a run and press Load."
            return {self.state: state, self.canvas: None, self.table: _labels_table([]),
                    self.select: gr.Dropdown(choices=[], value=None), self.position: position,
                    self.hint: review.md_text(message or "")}
        with self.app.open_run(state.run) as store:
            record = store.image(state.image_id)
            labels = review.labels(store, record.id)
            names = store.ontology.names
            strip = self._strip(store, state)
        image, _ = self.app.display.get(record)
        ids = [int(i) for i in labels.ids]
        selected = state.selected if state.selected in ids else (ids[0] if ids else None)
        points = state.points if state.points_for == selected else ()
        state = replace(state, selected=selected, points=points, points_for=selected if points else None)
        done = "reviewed" if record.reviewed else "not reviewed yet"
        if message is None:
            message = "Drag on the image to draw a box; drag a box or its corners to change it; ? for help."
        value = review.canvas_value(record, labels, names, image, selected, strip, bool(state.undo), bool(state.redo),
                                    points)
        return {self.state: state, self.canvas: value,
                self.table: _labels_table(review.table_rows(labels, names)),
                self.select: gr.Dropdown(choices=review.label_choices(labels, names), value=selected),
                self.position: f"Image {state.pos + 1} of {len(state.ids)} · {review.md_text(Path(record.path).name)}"
                               f" · {done}",
                self.hint: review.md_text(message)}

    def _strip(self, store, state: ReviewState) -> list[dict]:
        lo = max(0, state.pos - STRIP_SPAN)
        strip = []
        for pos in range(lo, min(len(state.ids), lo + 2 * STRIP_SPAN + 1)):
            record = store.image(state.ids[pos])
            strip.append({"pos": pos, "name": Path(record.path).name, "thumb": self.thumbnails.get(record.path),
                          "current": pos == state.pos, "reviewed": record.reviewed})
        return strip

    def load(self, run, filter, low_score) -> dict:
        with self.app.open_run(run) as store:
            ids = tuple(review.image_ids(store, filter, float(low_score or 0)))
            names = store.ontology.names
            summary = run_summary(store)
            masks = self.masks_apply(store.config)
            keeps_masks = review.keeps_masks(store.config)
        note = NO_SEGMENTER if keeps_masks and not masks else None
        return {**self.render(ReviewState(run=run, ids=ids), note), self.summary: summary,
                self.class_name: gr.Dropdown(choices=names, value=names[0] if names else None),
                self.masks: gr.Checkbox(value=masks, visible=masks, interactive=masks)}

    def masks_apply(self, run_config: dict | None) -> bool:
        """Whether boxes drawn or moved in this run can get the segmenter's masks: the run keeps
        masks (``review.keeps_masks``) and the UI has a segmenter (``--sam-model``)."""
        return review.keeps_masks(run_config) and bool(self.app.models.sam_model)

    def step(self, state: ReviewState, delta: int) -> dict:
        state = _loaded(state)
        return self.render(replace(state, pos=min(max(0, state.pos + delta), len(state.ids) - 1), selected=None))

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
                change = review.set_class(store, state.image_id, selected, class_name)
            else:
                change = _EDITS[action](store, state.image_id, selected)
        return self.render(state.edited(change), f"Saved: {action} #{selected}.")

    def accept_image(self, state: ReviewState) -> dict:
        state = _loaded(state)
        with self.app.open_run(state.run) as store:
            n = store.accept_image(state.image_id)
        pos = min(state.pos + 1, len(state.ids) - 1)
        return self.render(replace(state, pos=pos, selected=None), f"Image accepted ({n} labels accepted).")

    def on_canvas(self, state: ReviewState, class_name, masks: bool = False, evt: gr.EventData = None):
        """One finished gesture on the canvas (``canvas.JS``): select, add, move, point, clear-points,
        undo, redo or jump. Generator: with ``masks`` (the checkbox) in a run that keeps masks, a
        drawn or moved box gets its mask from the segmenter, and a point click remakes the selected
        label's mask from its box and clicks, with "Segmenting…" shown while that runs."""
        state = _loaded(state)
        data = getattr(evt, "_data", None) or {}
        action = data.get("action")
        if action == "jump":
            yield self.render(replace(state, pos=min(max(0, int(data["pos"])), len(state.ids) - 1), selected=None))
            return
        if action == "select":
            yield self.render(replace(state, selected=int(data["id"])))
            return
        if action in ("point", "clear-points"):
            yield from self._refine(state, masks, data)
            return
        if action not in ("undo", "redo", "add", "move"):
            raise StoreError(f"unknown canvas action {action!r}")
        with self.app.open_run(state.run) as store:
            if action in ("undo", "redo"):
                yield self._replay(store, state, action)
                return
            box = _box(data.get("box"))
            record, run_config, ontology = store.image(state.image_id), store.config, store.ontology
            if action == "move":  # a label of another image is refused before any segmenting
                review.owned_label(store, state.image_id, data.get("id"))
        rle, problem = None, None
        if masks and self.masks_apply(run_config) and (action == "move" or class_name):
            yield {self.hint: "Segmenting…", self.app.status_box: self.app.status(
                loading=self.app.models_to_load("segment"))}
            rle, problem = self._mask(record.path, box, run_config, ontology)
        with self.app.open_run(state.run) as store:
            if action == "add":
                change = review.add_box(store, state.image_id, class_name, box, rle)
                message = f"Saved: added #{change.label_id} ({class_name})"
            else:
                change = review.move_box(store, state.image_id, data.get("id"), box, rle)
                message = f"Saved: moved #{change.label_id}"
        message += f", without a mask: {problem}" if problem else (", with its mask." if rle else ".")
        # A new or moved box's mask is its own again: earlier clicks no longer apply.
        yield {**self.render(replace(state.edited(change), selected=change.label_id, points=(), points_for=None),
                             message),
               self.app.status_box: self.app.status()}

    def _refine(self, state: ReviewState, masks: bool, data: dict):
        """A point click (``x``, ``y``, ``positive``) on label ``id``, or clearing its clicks: its mask
        remade from its box and all its clicks so far (none: the box's own mask), one edit. A failing
        segmenter leaves the label as it was."""
        with self.app.open_run(state.run) as store:
            label_id = review.owned_label(store, state.image_id, data.get("id"))
            record, run_config, ontology = store.image(state.image_id), store.config, store.ontology
            row = store.detection_row(label_id)
        state = replace(state, selected=label_id)
        if not (masks and self.masks_apply(run_config)):
            yield self.render(state, 'Points refine masks in runs with masks: turn on "Masks for my boxes (SAM)".')
            return
        before = state.points if state.points_for == label_id else ()
        after = (*before, _point(data, record)) if data.get("action") == "point" else ()
        yield {self.hint: "Segmenting…", self.app.status_box: self.app.status(
            loading=self.app.models_to_load("segment"))}
        box = tuple(row[k] for k in ("x0", "y0", "x1", "y1"))
        rle, problem = self._mask(record.path, box, run_config, ontology, after)
        if problem:
            yield {**self.render(state, f"Label #{label_id} unchanged: {problem}"),
                   self.app.status_box: self.app.status()}
            return
        with self.app.open_run(state.run) as store:
            change = review.refine_mask(store, state.image_id, label_id, rle, (before, after))
        message = (f"Saved: #{label_id}'s mask from its box and {len(after)} point(s)." if after
                   else f"Saved: #{label_id}'s mask from its box alone.")
        yield {**self.render(replace(state.edited(change), points=after, points_for=label_id), message),
               self.app.status_box: self.app.status()}

    def _mask(self, path: str, box, run_config: dict, ontology, points: tuple = ()) -> tuple[dict | None, str | None]:
        """The segmenter's mask of ``box`` (refined by ``points``, ``(x, y, label)`` clicks), or None
        and why not in one line: a failing segmenter never costs the person's edit."""
        try:
            labeler = mask_labeler(self.app.config, self.app.models, run_config, ontology)
            (rle,) = labeler.masks_for_boxes(path, [box], self.app.config.max_image_pixels,
                                             points=[points] if points else None)
        except AutolabelError as exc:
            return None, without_paths((str(exc).strip().splitlines() or [type(exc).__name__])[0])
        except Exception as exc:  # a model bug: logged with its traceback, the box is saved all the same
            log.exception("segmenting a box of %s failed", path)
            return None, f"the segmenter failed ({type(exc).__name__}, see the server log)"
        return rle, None if rle is not None else "the box lies outside the image"

    def _replay(self, store, state: ReviewState, action: str) -> dict:
        """Undo the newest edit (or redo the newest undone one); it may be on another image."""
        stack = state.undo if action == "undo" else state.redo
        if not stack:
            return self.render(state, f"Nothing to {action}.")
        inverse = review.revert(store, stack[-1])
        if action == "undo":
            state = replace(state, undo=state.undo[:-1], redo=(*state.redo, inverse))
        else:
            state = replace(state, redo=state.redo[:-1], undo=(*state.undo, inverse))
        image_id = int((inverse.before or inverse.after)["image_id"])
        pos = state.ids.index(image_id) if image_id in state.ids else state.pos
        label_id = inverse.label_id
        if inverse.points is not None:  # a refining click: the label's clicks go back with its mask
            state = replace(state, points=inverse.points[1], points_for=label_id)
        return self.render(replace(state, pos=pos, selected=label_id), f"{action.capitalize()}: label #{label_id}.")

    def on_load(self) -> dict:
        return {self.run: self.app.run_dropdown()}


_EDITS = {"accept": review.accept, "reject": review.reject, "delete": review.delete}


def _loaded(state: ReviewState | None) -> ReviewState:
    if state is None or not state.ids:
        raise StoreError("load a run first")
    return state


def _box(value) -> tuple[float, float, float, float]:
    """A box from the browser: four numbers, original pixels."""
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError):
        raise StoreError(f"not a box: {value!r}") from None
    return x0, y0, x1, y1


def _point(data: dict, record) -> tuple[float, float, int]:
    """A click from the browser: ``x``, ``y`` inside the image (original pixels), ``positive``."""
    try:
        x, y = float(data["x"]), float(data["y"])
    except (KeyError, TypeError, ValueError):
        raise StoreError(f"not a point: {data.get('x')!r}, {data.get('y')!r}") from None
    if not (0 <= x <= record.width and 0 <= y <= record.height):
        raise StoreError(f"point ({x:g}, {y:g}) lies outside the image")
    return x, y, int(bool(data.get("positive", True)))


def _labels_table(rows: list[list]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=review.TABLE_HEADERS)
