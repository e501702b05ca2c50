"""The Gradio app: the state shared by every browser session, the page's frame and the wiring between
the tabs (``tab_*``: components and event handlers). User-fixable errors show as one-line messages;
anything else as a generic error, with the traceback in the server log.
"""

from __future__ import annotations

import gradio as gr

from autolabel.ui.batch import BatchRunner
from autolabel.ui.events import listen
from autolabel.ui.review import DisplayImages
from autolabel.ui.runs import list_runs, open_run
from autolabel.ui.guard import LoginThrottle, RequestGuard, parse_size
from autolabel.ui.security import gradio_environment, launch_kwargs, prepare_gradio_environment
from autolabel.ui.session import ModelHandles, PromptTester, UiConfig
from autolabel.ui.tab_batch import BatchTab
from autolabel.ui.tab_export import ExportTab
from autolabel.ui.tab_review import KEYBOARD_JS, ReviewTab
from autolabel.ui.tab_test import TestTab, model_options
from autolabel.ui.tab_video import VideoTab

CSS = """
#batch-progress progress, #video-progress progress { width: 100%; height: 1.2em; }
#review-image img, #test-result img { cursor: crosshair; }
.autolabel-hint { opacity: 0.8; }
"""


class AutolabelApp:
    """The UI's server-side state (shared by all browser sessions) and its Gradio page."""

    def __init__(self, config: UiConfig, models: ModelHandles | None = None):
        self.config = config
        self.models = models or ModelHandles(config.model, config.sam_model, config.device, config.precision,
                                             models_dir=config.models_dir)
        self.tester = PromptTester(config, self.models)
        self.runner = BatchRunner(config, self.models)
        self.display = DisplayImages(config.display_side, max_pixels=config.max_image_pixels)
        # Made by build(): the page, its status line (every tab updates it) and the tabs.
        self.demo: gr.Blocks | None = None
        self.status_box: gr.Markdown | None = None
        self.model_picker: gr.Dropdown | None = None  # the detector of the Test and Batch tabs
        self.test: TestTab | None = None
        self.batch: BatchTab | None = None
        self.review: ReviewTab | None = None
        self.export: ExportTab | None = None
        self.video: VideoTab | None = None

    def status(self, loading: bool = False, video: bool = False) -> str:
        """The status line; ``loading``: models not loaded yet are loading now; ``video``: with the
        video model."""
        models = self.models.status(video=video)
        if loading:
            models = models.replace("not loaded", "loading…")
        return f"{models} · runs in `{self.config.runs_dir.name}`"

    def models_to_load(self, mode: str | None, model: str | None = None) -> bool:
        """Whether a call in ``mode`` with the listed detector ``model`` (default: the selected one)
        loads a model first (the UI then says so while it waits)."""
        if not self.models.is_loaded("detector", model):
            return True
        return (mode == "segment" and not self.models.makes_masks(model)
                and not self.models.is_loaded("segmenter"))

    def select_model(self, key: str | None) -> dict:
        """The model picker: the detector Labelers get from now on (it loads on first use)."""
        if key:
            self.models.select(key)
        return {self.status_box: self.status()}

    def model_dropdown(self) -> gr.Dropdown:
        """A picker update: the detectors listed now, the selected one chosen."""
        return gr.Dropdown(choices=model_options(self.models), value=self.models.catalog.key(self.models.model))

    def open_run(self, run: str | None):
        """The store of run ``run`` under the runs root, for one action (a context manager)."""
        return open_run(self.config.runs_dir, run)

    def runs(self) -> list[str]:
        return list_runs(self.config.runs_dir)

    def run_dropdown(self, value: str | None = None) -> gr.Dropdown:
        """A run list update: current runs, ``value`` chosen if it exists, else the last run."""
        runs = self.runs()
        return gr.Dropdown(choices=runs, value=value if value in runs else (runs[-1] if runs else None))

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="autolabel", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
            gr.Markdown("## autolabel: text-prompted auto-labeling")
            # One compact row: every line above the tabs pushes the Review canvas below a laptop screen.
            with gr.Row(equal_height=True):
                self.status_box = gr.Markdown(self.status(), elem_id="model-status", scale=3)
                self.model_picker = gr.Dropdown(choices=model_options(self.models), elem_id="model-picker",
                                                value=self.models.catalog.key(self.models.model), label="Detector",
                                                show_label=False, container=False, scale=1, min_width=300)
            with gr.Tab("Test", id="test"):
                self.test = TestTab(self)
            with gr.Tab("Batch", id="batch"):
                self.batch = BatchTab(self)
            with gr.Tab("Review", id="review"):
                self.review = ReviewTab(self)
            with gr.Tab("Export", id="export"):
                self.export = ExportTab(self)
            with gr.Tab("Video", id="video"):
                self.video = VideoTab(self)
            listen(self.model_picker.change, self.select_model, [self.model_picker], [self.status_box],
                   queue=False, show_progress="hidden")
            self.test.wire()
            self.batch.wire(run_pickers=[self.review.run, self.export.run])
            self.review.wire()
            self.export.wire()
            self.video.wire()
            # The Batch tab starts from what was dialled in on the Test tab.
            for source, target in ((self.test.prompts, self.batch.prompts), (self.test.threshold, self.batch.threshold),
                                   (self.test.mode, self.batch.mode), (self.test.tiles, self.batch.tiles)):
                listen(source.change, lambda value: value, [source], [target], queue=False, show_progress="hidden")
            on_load_outputs = [self.status_box, self.model_picker, self.batch.progress, self.batch.run_state,
                               self.batch.timer, self.batch.stop_button, self.batch.resume_picker,
                               self.batch.relabel_picker, self.batch.gallery, self.batch.zip, self.batch.failed_box,
                               self.batch.failed, self.review.run, self.export.run, self.export.gt_run,
                               *self.video.load_outputs()]
            listen(demo.load, self.on_load, None, on_load_outputs)
        self.demo = demo
        return demo

    def on_load(self) -> dict:
        """A (re)loaded page: fresh model and run lists and the batch that runs in the server, if any."""
        return {self.status_box: self.status(), self.model_picker: self.model_dropdown(), **self.batch.on_load(),
                **self.review.on_load(), **self.export.on_load(), **self.video.on_load()}


def launch(config: UiConfig, *, host: str, port: int | None, auth=None, max_file_size="200mb",
           max_work_size="20gb", login_throttle: LoginThrottle | None = None,
           models: ModelHandles | None = None, block: bool = True) -> AutolabelApp:
    """Build and start the server with the secure launch options (``security.launch_kwargs``) and
    the request guard (``guard.RequestGuard``: same-site uploads of images only, the work folder
    capped at ``max_work_size``, downloads as attachments, failed logins throttled).

    Points Gradio's folders into ``config.work_dir`` through environment variables: a process-wide
    change, so only entry points (``autolabel ui``, tests that undo it) call this.
    """
    from starlette.middleware import Middleware

    prepare_gradio_environment(config.work_dir)
    app = AutolabelApp(config, models)
    app.build()
    kwargs = launch_kwargs(work_dir=config.work_dir, runs_dir=config.runs_dir, host=host, port=port, auth=auth,
                           max_file_size=max_file_size, model_paths=(config.model, config.sam_model, config.models_dir))
    guard = Middleware(RequestGuard, work_dir=config.work_dir, upload_dir=gradio_environment(config.work_dir)[
        "GRADIO_TEMP_DIR"], max_work_bytes=parse_size(max_work_size), throttle=login_throttle or LoginThrottle())
    # quiet: the command prints the address itself (Gradio's banner also suggests share=True).
    app.demo.launch(prevent_thread_lock=not block, head=KEYBOARD_JS, css=CSS, quiet=True,
                    app_kwargs={"middleware": [guard]}, **kwargs)
    return app
