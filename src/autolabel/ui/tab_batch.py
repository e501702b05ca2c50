"""The Batch tab: a run in the shared runs root with live progress, a gallery and a ZIP.

The job runs in the server (``batch.BatchRunner``); a timer polls it, so a refreshed page finds a
running batch and follows it to the end.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from autolabel.errors import AutolabelError
from autolabel.ui.batch import BatchJob
from autolabel.ui.draw import detection_shapes, draw_shapes
from autolabel.ui.events import listen
from autolabel.ui.security import resolve_server_folder
from autolabel.ui.session import MODES, display_copy, parse_prompts
from autolabel.ui.tab_test import EXAMPLE_PROMPTS, LOADING

if TYPE_CHECKING:
    from autolabel.ui.app import AutolabelApp

GALLERY_SIZE = 12
THUMB_SIDE = 320


class BatchTab:
    """The Batch tab's components (built inside the current ``gr.Tab``) and handlers."""

    def __init__(self, app: AutolabelApp):
        self.app = app
        cfg = app.config
        self.run_state = gr.State(None)  # the run this page follows
        self.shown_state = gr.State(-1)  # images processed when the gallery was last drawn
        self.timer = gr.Timer(1.0, active=False)
        with gr.Row():
            with gr.Column(scale=1):
                self.files = gr.File(label="Images", file_count="multiple", file_types=["image"], type="filepath",
                                     elem_id="batch-files")
                self.folder = gr.Textbox(label="…or a folder on the server", visible=bool(cfg.allow_folders),
                                         elem_id="batch-folder",
                                         info="inside: " + ", ".join(str(p) for p in cfg.allow_folders))
                self.prompts = gr.Textbox(label="Classes and prompts", lines=4, placeholder=EXAMPLE_PROMPTS,
                                          elem_id="batch-prompts", info="copied from the Test tab as you type")
                self.threshold = gr.Slider(0.0, 1.0, value=cfg.threshold, step=0.01, label="Score threshold",
                                           elem_id="batch-threshold")
                self.mode = gr.Radio(list(MODES), value="detect", label="Mode", elem_id="batch-mode")
                self.name = gr.Textbox(label="Run name", placeholder="ui-YYYYMMDD-HHMMSS", elem_id="batch-run-name")
                self.image_size = gr.Textbox(label="Training image size for the ZIP", value="640",
                                             info="N: longest side; WxH: exact; empty: original size",
                                             elem_id="batch-image-size")
                self.start_button = gr.Button("Run batch", variant="primary", elem_id="batch-start")
                with gr.Accordion("Resume a run", open=False):
                    self.resume_picker = gr.Dropdown(label="Run", choices=app.runs(), elem_id="batch-resume-run")
                    self.resume_button = gr.Button("Resume", elem_id="batch-resume")
            with gr.Column(scale=2):
                self.progress = gr.HTML(progress_html(None), elem_id="batch-progress")
                self.zip = gr.DownloadButton("Download ZIP", visible=False, elem_id="batch-zip")
                self.gallery = gr.Gallery(label="Annotated images", columns=4, height="auto", object_fit="contain",
                                          elem_id="batch-gallery")
        self.run_pickers: list[gr.Dropdown] = []  # other tabs' run lists, refreshed when a batch ends

    def wire(self, run_pickers: list[gr.Dropdown]) -> None:
        self.run_pickers = run_pickers
        outputs = [self.progress, self.run_state, self.shown_state, self.timer, self.zip, self.app.status_box]
        listen(self.start_button.click, self.start_new,
               [self.files, self.folder, self.prompts, self.threshold, self.mode, self.name, self.image_size], outputs)
        listen(self.resume_button.click, self.resume, [self.resume_picker, self.image_size], outputs)
        listen(self.timer.tick, self.tick, [self.run_state, self.shown_state],
               [self.progress, self.gallery, self.shown_state, self.timer, self.zip, self.resume_picker, *run_pickers,
                self.app.status_box], show_progress="hidden")

    def start_new(self, files, folder, prompts, threshold, mode, run_name, image_size):
        """Generator: validate, say so if the models load now, then start the run in the background."""
        cfg = self.app.config
        ontology = parse_prompts(prompts)
        folders = [resolve_server_folder(folder, cfg.allow_folders)] if (folder or "").strip() else []
        uploads = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
        if self.app.models_to_load(mode):
            yield {self.progress: f"<div id='batch-progress-inner' data-state='loading'>{LOADING}</div>",
                   self.app.status_box: self.app.status(loading=True)}
        try:
            job = self.app.runner.start_new(run_name, ontology, mode, threshold, uploads, folders, image_size)
        except AutolabelError:
            yield {self.progress: progress_html(self.app.runner.current()), self.app.status_box: self.app.status()}
            raise
        yield self._started(job)

    def resume(self, run, image_size):
        return self._started(self.app.runner.resume(run, image_size))

    def _started(self, job: BatchJob) -> dict:
        return {self.progress: progress_html(job), self.run_state: job.run, self.shown_state: -1,
                self.timer: gr.Timer(active=True), self.zip: gr.update(value=None, visible=False),
                self.app.status_box: self.app.status()}

    def tick(self, run, shown):
        """Timer tick while a batch runs: progress, the gallery when it changed, the ZIP at the end."""
        job = self.app.runner.job(run) or self.app.runner.current()
        if job is None:
            return {self.timer: gr.Timer(active=False)}
        out = {self.progress: progress_html(job), self.shown_state: job.processed,
               self.app.status_box: self.app.status()}
        if job.processed != shown or not job.running:
            try:
                out[self.gallery] = self.gallery_items(job.run)
            except AutolabelError:  # the run's store is not there yet (job still starting)
                pass
        if job.running:
            return out
        if job.error:
            gr.Warning(html.escape(job.error))
        out[self.timer] = gr.Timer(active=False)
        if job.zip_path:
            out[self.zip] = gr.update(value=str(job.zip_path), visible=True)
        for picker in (self.resume_picker, *self.run_pickers):
            out[picker] = self.app.run_dropdown(job.run)
        return out

    def gallery_items(self, run: str) -> list[tuple]:
        """Annotated thumbnails of the run's first ``GALLERY_SIZE`` labelled images."""
        from autolabel.images import load_image

        items = []
        with self.app.open_run(run) as store:
            names = store.ontology.names
            for record in store.images("done"):
                if len(items) >= GALLERY_SIZE:
                    break
                try:
                    loaded = load_image(record.path, max_pixels=self.app.config.max_image_pixels, max_side=THUMB_SIDE)
                except AutolabelError:
                    continue
                labels = store.labels(record.id)
                thumb, enlarge = display_copy(loaded.image, THUMB_SIDE, min_side=THUMB_SIDE)
                image = draw_shapes(thumb, detection_shapes(labels, names), loaded.scale * enlarge)
                items.append((image, f"{Path(record.path).name} · {len(labels)} labels"))
        return items

    def on_load(self) -> dict:
        """A (re)loaded page follows the running batch, or shows the last one."""
        job = self.app.runner.current()
        return {self.progress: progress_html(job), self.run_state: job.run if job else None,
                self.timer: gr.Timer(active=job is not None and job.running),
                self.resume_picker: self.app.run_dropdown()}


def progress_html(job: BatchJob | None) -> str:
    """The progress box; its ``data-*`` attributes let the browser tests wait on the state."""
    if job is None:
        return "<div id='batch-progress-inner' data-state='idle'>No batch running.</div>"
    state = "running" if job.running else ("failed" if job.error else "finished")
    total = job.total if job.total is not None else 0
    return (f"<div id='batch-progress-inner' data-run='{html.escape(job.run, quote=True)}' data-state='{state}'"
            f" data-done='{job.processed}' data-total='{total}'>"
            f"<progress value='{job.processed}' max='{max(total, 1) if job.total is not None else ''}'></progress>"
            f"<div>{html.escape(job.status_text())}</div></div>")
