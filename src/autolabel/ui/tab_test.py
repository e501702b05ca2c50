"""The Test tab: one image, prompts, threshold and mode, from the picked detector and optionally a
second one side by side. Cached image features make re-queries with new prompts, thresholds or modes
instant (``session.PromptTester``). Boxes drawn on the image (the review canvas, ``canvas``) become
example boxes of a class (``exemplars``), used by the next query and by a batch started from here."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from autolabel.errors import AutolabelError, ConfigError
from autolabel.pipeline import MODES
from autolabel.ui import exemplars
from autolabel.ui.canvas import review_canvas
from autolabel.ui.draw import detection_shapes, draw_shapes
from autolabel.ui.events import listen, model_warnings
from autolabel.ui.session import DETECTION_HEADERS, check_decode_budget, detection_rows, display_image

if TYPE_CHECKING:
    from autolabel.ui.app import AutolabelApp

EXAMPLE_PROMPTS = "person\ncar=car,automobile,van"
LOADING = "Loading the model (first use)…"
NO_COMPARISON = ("none", "")
# Side by side, each result shows at about half its width: labels drawn larger stay readable.
SIDE_BY_SIDE_TEXT_SCALE = 2.0
TEST_CONCURRENCY = 4  # Test-tab calls running at once, all users together (each decode within DECODE_BUDGET)
TILES = ["off", "auto"]  # ``Labeler(tiles=...)``: auto cuts large images into tiles of the model's input size
TILES_INFO = "auto: also labels overlapping crops of large images (one more model pass per crop)"
EXAMPLE_HINT = ("Drag on the image to draw an example box of the class chosen here (a class not in the prompts "
                "is found by its boxes alone). Drag a box to move it; Ctrl+Z removes the last one.")


class TestTab:
    """The Test tab's components (built inside the current ``gr.Tab``) and handlers."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, app: AutolabelApp):
        self.app = app
        with gr.Row():
            with gr.Column(scale=1):
                self.file = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="test-upload")
                self.prompts = gr.Textbox(label="Classes and prompts (one class per line)", lines=4,
                                          placeholder=EXAMPLE_PROMPTS, elem_id="test-prompts",
                                          info="'person' or 'car=car,automobile,van' (class=prompt,prompt,...)")
                self.threshold = gr.Slider(0.0, 1.0, value=app.config.threshold, step=0.01, label="Score threshold",
                                           elem_id="test-threshold")
                self.mode = gr.Radio(list(MODES), value="detect", label="Mode", elem_id="test-mode")
                self.tiles = gr.Radio(TILES, value="off", label="Small objects (tiles)", elem_id="test-tiles",
                                      info=TILES_INFO)
                self.compare = gr.Dropdown(choices=[NO_COMPARISON, *model_options(app.models)], value="",
                                           label="Compare with", elem_id="test-compare",
                                           info="A second detector on the same image, side by side")
                self.detect_button = gr.Button("Detect", variant="primary", elem_id="test-run")
            with gr.Column(scale=2):
                self.image = gr.Image(label="Result", interactive=False, elem_id="test-result", format="png")
                self.timing = gr.Markdown(elem_id="test-timing")
                self.table = gr.Dataframe(value=_detections([]), label="Detections", interactive=False,
                                          elem_id="test-table")
            with gr.Column(scale=2, visible=False) as self.second:
                self.second_image = gr.Image(label="Compared with", interactive=False, elem_id="test-second-result",
                                             format="png")
                self.second_timing = gr.Markdown(elem_id="test-second-timing")
                self.second_table = gr.Dataframe(value=_detections([]), label="Detections", interactive=False,
                                                 elem_id="test-second-table")
        self.examples = gr.State(())  # this browser session's ``exemplars.ExampleBox``es (the Batch tab reads it)
        with gr.Accordion("Example boxes: draw on the image", open=False, elem_id="test-examples"):
            with gr.Row():
                with gr.Column(scale=3):
                    self.canvas = review_canvas(elem_id="test-canvas")
                with gr.Column(scale=2, min_width=300):
                    gr.Markdown(EXAMPLE_HINT, elem_classes="autolabel-hint")
                    self.example_class = gr.Dropdown(label="Class of new boxes", choices=[], allow_custom_value=True,
                                                     elem_id="test-example-class")
                    self.example_kind = gr.Radio([exemplars.POSITIVE, exemplars.NEGATIVE], value=exemplars.POSITIVE,
                                                 label="The box", elem_id="test-example-kind")
                    self.example_list = gr.Dataframe(value=_examples(()), label="Example boxes", interactive=False,
                                                     elem_id="test-example-list")
                    with gr.Row():
                        self.example_pick = gr.Dropdown(label="Box", choices=[], elem_id="test-example-pick",
                                                        scale=2)
                        self.remove_button = gr.Button("Remove", elem_id="test-example-remove", scale=1)
                        self.clear_button = gr.Button("Remove all", elem_id="test-example-clear", scale=1)

    def wire(self) -> None:
        inputs = [self.file, self.prompts, self.threshold, self.mode, self.app.model_picker, self.compare,
                  self.examples, self.tiles]
        outputs = [self.image, self.table, self.timing, self.second_image, self.second_table, self.second_timing,
                   self.app.status_box, self.canvas]
        # Gradio runs one call per event at a time by default: one user's slow image would hold up
        # everyone's queries. These share a limit instead; within it only the forward passes queue.
        shared = {"concurrency_id": "test-tab", "concurrency_limit": TEST_CONCURRENCY}
        listen(self.detect_button.click, self.query, inputs, outputs, **shared)
        listen(self.compare.change, lambda key: gr.update(visible=bool(key)), [self.compare], [self.second],
               queue=False, show_progress="hidden")
        for event in (self.threshold.change, self.mode.change, self.prompts.blur, self.prompts.submit,
                      self.app.model_picker.change, self.compare.change, self.tiles.change):
            listen(event, self.requery, inputs, outputs, trigger_mode="always_last", show_progress="hidden", **shared)
        # An edit of the example boxes shows them, then runs the query that uses them.
        edit_outputs = [*outputs, self.examples, self.example_list, self.example_pick]
        listen(self.canvas.edit, self.on_canvas, [*inputs, self.example_class, self.example_kind], edit_outputs,
               trigger_mode="multiple", **shared)
        listen(self.remove_button.click, self.remove_example, [*inputs, self.example_pick], edit_outputs, **shared)
        listen(self.clear_button.click, self.clear_examples, inputs, edit_outputs, **shared)
        listen(self.prompts.change, exemplars_class_choices, [self.prompts, self.examples, self.example_class],
               [self.example_class], queue=False, show_progress="hidden")
        listen(self.file.upload, self.preview, inputs, outputs, **shared)
        listen(self.file.clear, self.preview, inputs, outputs, **shared)  # no file: clears the result
        listen(self.mode.change, _button_label, [self.mode], [self.detect_button], queue=False, show_progress="hidden")

    def query(self, path, prompts, threshold, mode, model=None, compare=None, examples=(), tiles="off"):
        """Detect (the button). Generator: a 'loading' status first when a model loads on this call.
        ``model``: the picked detector (None: the selected one); ``compare``: a second one, or none;
        ``examples``: the example boxes; ``tiles``: off or auto."""
        if not path:
            raise ConfigError("upload an image first")
        yield from self._detect(path, prompts, threshold, mode, model, compare, examples, tiles)

    def requery(self, path, prompts, threshold, mode, model=None, compare=None, examples=(), tiles="off"):
        """A moved slider, a new mode, edited prompts or example boxes, another model: silent until
        there is something to query."""
        if not path or not ((prompts or "").strip() or examples):
            yield gr.skip()
            return
        yield from self._detect(path, prompts, threshold, mode, model, compare, examples, tiles)

    def preview(self, path, prompts, threshold, mode, model=None, compare=None, examples=(), tiles="off"):
        """A new upload: show it (decode errors show now) and detect at once if classes are given."""
        if not path:
            yield {**self._shown(None), **self._shown(None, second=True), self.app.status_box: self.app.status(),
                   self.canvas: None}
            return
        cfg = self.app.config
        check_decode_budget(path, lambda size: cfg.display_side)
        canvas = self._canvas(path, examples)
        if (prompts or "").strip() or examples:
            yield {self.canvas: canvas}
            yield from self._detect(path, prompts, threshold, mode, model, compare, examples, tiles)
            return
        image, _ = display_image(path, cfg.display_side, cfg.max_image_pixels)
        yield {self.image: image, self.table: _detections([]), self.timing: "Enter classes and press Detect.",
               **self._shown(None, second=True), self.app.status_box: self.app.status(), self.canvas: canvas}

    def _detect(self, path, prompts, threshold, mode, model, compare, examples=(), tiles="off"):
        keys = [model, compare] if compare else [model]
        if any(self.app.models_to_load(mode, key) for key in keys):
            yield {self.timing: LOADING, self.app.status_box: self.app.status(loading=True)}
        try:
            with model_warnings():
                # One after the other on the same file: each detector encodes it once, then re-queries.
                results = [self.app.tester.query(path, prompts, threshold, mode, key, examples, tiles)
                           for key in keys]
        except AutolabelError:
            yield {self.app.status_box: self.app.status()}  # e.g. "failed to load" before the message
            raise
        second = results[1] if len(results) > 1 else None
        text_scale = SIDE_BY_SIDE_TEXT_SCALE if second else 1.0
        yield {**self._shown(results[0], text_scale=text_scale),
               **self._shown(second, second=True, text_scale=text_scale), self.app.status_box: self.app.status()}

    def _shown(self, result, second: bool = False, text_scale: float = 1.0) -> dict:
        """The updates of one result column: its image, table and timing (empty for no result)."""
        image, table, timing = ((self.second_image, self.second_table, self.second_timing) if second
                                else (self.image, self.table, self.timing))
        if result is None:
            return {image: None, table: _detections([]), timing: ""}
        shapes = detection_shapes(result.detections, result.ontology.names)
        drawn = draw_shapes(result.cached.display, shapes, result.cached.display_scale, text_scale=text_scale)
        return {image: drawn,
                table: _detections(detection_rows(result)), timing: result.timing_text()}


    # -- example boxes -------------------------------------------------------------------------------

    def _canvas(self, path, examples) -> dict | None:
        """The drawing canvas's value: the image at ``path`` and the example boxes drawn on it."""
        from autolabel.images import file_sha256, oriented_size

        if not path:
            return None
        cfg = self.app.config
        display, _ = display_image(path, cfg.display_side, cfg.max_image_pixels)
        return exemplars.canvas_value(display, oriented_size(path), file_sha256(path), examples)

    def _edited(self, path, prompts, threshold, mode, model, compare, examples, tiles):
        """Generator: the new example boxes shown, then the query that uses them."""
        yield {self.examples: examples, self.canvas: self._canvas(path, examples),
               self.example_list: _examples(examples),
               self.example_pick: gr.Dropdown(choices=exemplars.box_choices(examples), value=None)}
        yield from self.requery(path, prompts, threshold, mode, model, compare, examples, tiles)

    def on_canvas(self, path, prompts, threshold, mode, model, compare, examples, tiles, class_name, kind,
                  evt: gr.EventData):
        """One gesture on the drawing canvas (``canvas.JS``): a new box, a moved one, undo (the last
        box removed), or a selected one (picked in the list for removal)."""
        data = getattr(evt, "_data", None) or {}
        action, examples = data.get("action"), tuple(examples or ())
        if not path:
            raise ConfigError("upload an image first")
        if action == "select":
            yield {self.example_pick: gr.update(value=data.get("id"))}
            return
        if action == "add":
            cfg = self.app.config
            examples = exemplars.add_box(examples, path, data["box"], class_name, kind == exemplars.NEGATIVE,
                                         cfg.work_dir, cfg.max_image_pixels)
        elif action == "move":
            examples = exemplars.move_box(examples, data.get("id"), data["box"])
        elif action == "undo" and examples:
            examples = examples[:-1]
        else:  # redo, or undo with no box: nothing changes
            yield gr.skip()
            return
        yield from self._edited(path, prompts, threshold, mode, model, compare, examples, tiles)

    def remove_example(self, path, prompts, threshold, mode, model, compare, examples, tiles, index):
        examples = exemplars.remove_box(tuple(examples or ()), index)
        yield from self._edited(path, prompts, threshold, mode, model, compare, examples, tiles)

    def clear_examples(self, path, prompts, threshold, mode, model, compare, examples, tiles):
        yield from self._edited(path, prompts, threshold, mode, model, compare, (), tiles)


def exemplars_class_choices(prompts, examples, current):
    """The class picker of new example boxes: the prompt box's classes and the boxes' own."""
    choices = exemplars.class_choices(prompts, tuple(examples or ()))
    return gr.Dropdown(choices=choices, value=current if current else (choices[0] if choices else None))


def model_options(models) -> list[tuple[str, str]]:
    """The picker's (label, key) pairs: ``ModelHandles.catalog``'s listed detectors."""
    return [(choice.label, choice.key) for choice in models.catalog.choices()]


def _button_label(mode: str):
    return gr.update(value=mode.capitalize())  # "Detect" or "Segment"


def _detections(rows: list[list]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=DETECTION_HEADERS)


def _examples(examples) -> pd.DataFrame:
    return pd.DataFrame(exemplars.rows(tuple(examples or ())), columns=exemplars.ROW_HEADERS)
