"""The Test tab: one image, prompts, threshold and mode, from the picked detector and optionally a
second one side by side. Cached image features make re-queries with new prompts, thresholds or modes
instant (``session.PromptTester``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from autolabel.errors import AutolabelError, ConfigError
from autolabel.pipeline import MODES
from autolabel.ui.draw import detection_shapes, draw_shapes
from autolabel.ui.events import listen, model_warnings
from autolabel.ui.session import DETECTION_HEADERS, check_decode_budget, detection_rows, display_image

if TYPE_CHECKING:
    from autolabel.ui.app import AutolabelApp

EXAMPLE_PROMPTS = "person\ncar=car,automobile,van"
LOADING = "Loading the model (first use)…"
NO_COMPARISON = ("none", "")
TEST_CONCURRENCY = 4  # Test-tab calls running at once, all users together (each decode within DECODE_BUDGET)


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

    def wire(self) -> None:
        inputs = [self.file, self.prompts, self.threshold, self.mode, self.app.model_picker, self.compare]
        outputs = [self.image, self.table, self.timing, self.second_image, self.second_table, self.second_timing,
                   self.app.status_box]
        # Gradio runs one call per event at a time by default: one user's slow image would hold up
        # everyone's queries. These share a limit instead; within it only the forward passes queue.
        shared = {"concurrency_id": "test-tab", "concurrency_limit": TEST_CONCURRENCY}
        listen(self.detect_button.click, self.query, inputs, outputs, **shared)
        listen(self.compare.change, lambda key: gr.update(visible=bool(key)), [self.compare], [self.second],
               queue=False, show_progress="hidden")
        for event in (self.threshold.change, self.mode.change, self.prompts.blur, self.prompts.submit,
                      self.app.model_picker.change, self.compare.change):
            listen(event, self.requery, inputs, outputs, trigger_mode="always_last", show_progress="hidden", **shared)
        listen(self.file.upload, self.preview, inputs, outputs, **shared)
        listen(self.file.clear, self.preview, inputs, outputs, **shared)  # no file: clears the result
        listen(self.mode.change, _button_label, [self.mode], [self.detect_button], queue=False, show_progress="hidden")

    def query(self, path, prompts, threshold, mode, model=None, compare=None):
        """Detect (the button). Generator: a 'loading' status first when a model loads on this call.
        ``model``: the picked detector (None: the selected one); ``compare``: a second one, or none."""
        if not path:
            raise ConfigError("upload an image first")
        yield from self._detect(path, prompts, threshold, mode, model, compare)

    def requery(self, path, prompts, threshold, mode, model=None, compare=None):
        """A moved slider, a new mode, edited prompts or another model: silent until there is
        something to query."""
        if not path or not (prompts or "").strip():
            yield gr.skip()
            return
        yield from self._detect(path, prompts, threshold, mode, model, compare)

    def preview(self, path, prompts, threshold, mode, model=None, compare=None):
        """A new upload: show it (decode errors show now) and detect at once if prompts are given."""
        if not path:
            yield {**self._shown(None), **self._shown(None, second=True), self.app.status_box: self.app.status()}
            return
        if (prompts or "").strip():
            yield from self._detect(path, prompts, threshold, mode, model, compare)
            return
        cfg = self.app.config
        check_decode_budget(path, lambda size: cfg.display_side)
        image, _ = display_image(path, cfg.display_side, cfg.max_image_pixels)
        yield {self.image: image, self.table: _detections([]), self.timing: "Enter classes and press Detect.",
               **self._shown(None, second=True), self.app.status_box: self.app.status()}

    def _detect(self, path, prompts, threshold, mode, model, compare):
        keys = [model, compare] if compare else [model]
        if any(self.app.models_to_load(mode, key) for key in keys):
            yield {self.timing: LOADING, self.app.status_box: self.app.status(loading=True)}
        try:
            with model_warnings():
                # One after the other on the same file: each detector encodes it once, then re-queries.
                results = [self.app.tester.query(path, prompts, threshold, mode, key) for key in keys]
        except AutolabelError:
            yield {self.app.status_box: self.app.status()}  # e.g. "failed to load" before the message
            raise
        second = results[1] if len(results) > 1 else None
        yield {**self._shown(results[0]), **self._shown(second, second=True), self.app.status_box: self.app.status()}

    def _shown(self, result, second: bool = False) -> dict:
        """The updates of one result column: its image, table and timing (empty for no result)."""
        image, table, timing = ((self.second_image, self.second_table, self.second_timing) if second
                                else (self.image, self.table, self.timing))
        if result is None:
            return {image: None, table: _detections([]), timing: ""}
        shapes = detection_shapes(result.detections, result.ontology.names)
        return {image: draw_shapes(result.cached.display, shapes, result.cached.display_scale),
                table: _detections(detection_rows(result)), timing: result.timing_text()}


def model_options(models) -> list[tuple[str, str]]:
    """The picker's (label, key) pairs: ``ModelHandles.catalog``'s listed detectors."""
    return [(choice.label, choice.key) for choice in models.catalog.choices()]


def _button_label(mode: str):
    return gr.update(value=mode.capitalize())  # "Detect" or "Segment"


def _detections(rows: list[list]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=DETECTION_HEADERS)
