"""The Batch tab: a run in the shared runs root with live progress (and an estimate of the time
left), a Stop button, a gallery, the failed images with a retry, and a ZIP; or a finished run
relabelled with new prompts into a new run. A timer polls the job (``batch.BatchRunner``); a
refreshed page shows the running or last batch as it was."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from autolabel.errors import AutolabelError
from autolabel.pipeline import MODES
from autolabel.ui import exemplars
from autolabel.ui.batch import BatchJob, failed_images, relabel_refusal
from autolabel.ui.draw import detection_shapes, draw_shapes
from autolabel.ui.events import listen, user_message, without_paths
from autolabel.ui.review import md_text
from autolabel.ui.security import resolve_server_folder
from autolabel.ui.session import display_image
from autolabel.ui.tab_test import EXAMPLE_PROMPTS, LOADING, TILES, TILES_INFO

if TYPE_CHECKING:
    from autolabel.ui.app import AutolabelApp

GALLERY_SIZE = 12
THUMB_SIDE = 320
FAILED_HEADERS = ["image", "reason"]


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
                # A fixed height keeps Run and the progress in view with hundreds of files; the count says how many.
                self.files = gr.File(label="Images", file_count="multiple", file_types=["image"], type="filepath",
                                     height=140, elem_id="batch-files")
                self.file_count = gr.Markdown("", elem_id="batch-file-count", elem_classes="autolabel-hint")
                self.folder = gr.Textbox(label="…or a folder on the server", visible=bool(cfg.allow_folders),
                                         elem_id="batch-folder",
                                         info="inside: " + ", ".join(str(p) for p in cfg.allow_folders))
                self.prompts = gr.Textbox(label="Classes and prompts", lines=3, placeholder=EXAMPLE_PROMPTS,
                                          elem_id="batch-prompts", info="copied from the Test tab as you type")
                self.threshold = gr.Slider(0.0, 1.0, value=cfg.threshold, step=0.01, label="Score threshold",
                                           elem_id="batch-threshold")
                self.examples_note = gr.Markdown("", elem_id="batch-examples", elem_classes="autolabel-hint")
                self.mode = gr.Radio(list(MODES), value="detect", label="Mode", elem_id="batch-mode")
                self.tiles = gr.Radio(TILES, value="off", label="Small objects (tiles)", elem_id="batch-tiles",
                                      info=TILES_INFO)
                with gr.Row():
                    self.name = gr.Textbox(label="Run name", placeholder="ui-YYYYMMDD-HHMMSS",
                                           elem_id="batch-run-name")
                    self.image_size = gr.Textbox(label="Image size for the ZIP", value="640",
                                                 info="N: longest side; WxH: exact; empty: original",
                                                 elem_id="batch-image-size")
                with gr.Accordion("Resume a run", open=False):
                    self.resume_picker = gr.Dropdown(label="Run", choices=app.runs(), elem_id="batch-resume-run")
                    self.resume_button = gr.Button("Resume", elem_id="batch-resume")
                with gr.Accordion("Relabel a finished run (new prompts, no image model pass)", open=False):
                    self.relabel_picker = gr.Dropdown(label="Run", choices=app.runs(), elem_id="batch-relabel-run")
                    self.relabel_note = gr.Markdown("", elem_id="batch-relabel-note", elem_classes="autolabel-hint")
                    self.relabel_prompts = gr.Textbox(label="New classes and prompts", lines=2,
                                                      placeholder=EXAMPLE_PROMPTS, elem_id="batch-relabel-prompts")
                    self.relabel_examples_note = gr.Markdown("", elem_id="batch-relabel-examples",
                                                             elem_classes="autolabel-hint")
                    self.relabel_threshold = gr.Slider(0.0, 1.0, value=cfg.threshold, step=0.01,
                                                       label="Score threshold", elem_id="batch-relabel-threshold")
                    self.relabel_button = gr.Button("Relabel into a new run", elem_id="batch-relabel")
            with gr.Column(scale=2):
                # Run, Stop and the progress at the top: in view however long the form on the left gets.
                with gr.Row():
                    self.start_button = gr.Button(start_label("detect"), variant="primary", elem_id="batch-start")
                    self.stop_button = gr.Button("Stop", variant="stop", visible=False, elem_id="batch-stop")
                self.progress = gr.HTML(progress_html(None), elem_id="batch-progress")
                with gr.Row():
                    self.zip = gr.DownloadButton("Download ZIP", visible=False, elem_id="batch-zip")
                with gr.Column(visible=False, elem_id="batch-failed-box") as self.failed_box:
                    self.failed = gr.Dataframe(headers=FAILED_HEADERS, interactive=False, label="Failed images",
                                               elem_id="batch-failed")
                    self.retry_button = gr.Button("Retry failed images", elem_id="batch-retry")
                self.gallery = gr.Gallery(label="Annotated images", columns=4, height="auto", object_fit="contain",
                                          elem_id="batch-gallery")
        self.run_pickers: list[gr.Dropdown] = []  # other tabs' run lists, refreshed when a batch starts and ends

    def wire(self, run_pickers: list[gr.Dropdown]) -> None:
        self.run_pickers = run_pickers
        pickers = [self.resume_picker, self.relabel_picker, *run_pickers]
        outputs = [self.progress, self.run_state, self.shown_state, self.timer, self.zip, self.stop_button,
                   self.failed_box, self.failed, self.app.status_box, *pickers]
        listen(self.start_button.click, self.start_new,
               [self.files, self.folder, self.prompts, self.threshold, self.mode, self.name, self.image_size,
                self.tiles, self.app.test.examples], outputs)
        listen(self.relabel_button.click, self.relabel, [self.relabel_picker, self.relabel_prompts,
                                                         self.relabel_threshold, self.app.test.examples], outputs)
        listen(self.relabel_picker.change, self.relabel_text, [self.relabel_picker],
               [self.relabel_note, self.relabel_prompts], queue=False, show_progress="hidden")
        for note in (self.examples_note, self.relabel_examples_note):
            listen(self.app.test.examples.change, examples_text, [self.app.test.examples], [note],
                   queue=False, show_progress="hidden")
        listen(self.resume_button.click, self.resume, [self.resume_picker, self.image_size], outputs)
        listen(self.retry_button.click, self.resume, [self.run_state, self.image_size], outputs)
        listen(self.stop_button.click, self.stop, None, [self.progress, self.stop_button], queue=False)
        listen(self.files.change, file_count_text, [self.files], [self.file_count], queue=False,
               show_progress="hidden")
        listen(self.mode.change, lambda mode: gr.Button(start_label(mode)), [self.mode], [self.start_button],
               queue=False, show_progress="hidden")
        listen(self.timer.tick, self.tick, [self.run_state, self.shown_state],
               [self.progress, self.gallery, self.shown_state, self.timer, self.zip, self.stop_button,
                self.failed_box, self.failed, *pickers, self.app.status_box], show_progress="hidden")

    def start_new(self, files, folder, prompts, threshold, mode, run_name, image_size, tiles="off", examples=()):
        """Generator: validate, say so if the models load now, then start the run in the background.
        ``examples``: the Test tab's example boxes, which join the classes."""
        cfg = self.app.config
        ontology = exemplars.query_ontology(prompts, tuple(examples or ()))
        folders = [resolve_server_folder(folder, cfg.allow_folders)] if (folder or "").strip() else []
        uploads = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
        if self.app.models_to_load(mode):
            yield {self.progress: f"<div id='batch-progress-inner' data-state='loading'>{LOADING}</div>",
                   self.app.status_box: self.app.status(loading=True)}
        try:
            job = self.app.runner.start_new(run_name, ontology, mode, threshold, uploads, folders, image_size,
                                            tiles=tiles)
        except AutolabelError:
            yield {self.progress: progress_html(self.app.runner.current()), self.app.status_box: self.app.status()}
            raise
        yield self._started(job)

    def resume(self, run, image_size):
        return self._started(self.app.runner.resume(run, image_size))

    def relabel(self, run, prompts, threshold, examples=()):
        """Relabel into a new run; ``examples``: the Test tab's example boxes, which join the classes
        as they do in a batch."""
        ontology = exemplars.query_ontology(prompts, tuple(examples or ()))
        return self._started(self.app.runner.relabel(run, ontology, threshold))

    def relabel_text(self, run):
        """Whether the chosen run can be relabelled, in one line, and its classes to start from."""
        if not run:
            return "", gr.skip()
        try:
            with self.app.open_run(run) as store:
                why_not = relabel_refusal(store.config)
                ontology = store.ontology if store.config else None
        except AutolabelError as exc:
            return user_message(str(exc)), gr.skip()
        if why_not:
            return f"This run {md_text(why_not)}.", gr.skip()
        return (f"Relabelled into a new run {md_text(run)}-relabel-N from its kept candidates: seconds, not a "
                "model pass per image. Human labels and reviews are carried over (keep their classes).",
                prompt_lines(ontology))

    def stop(self):
        job = self.app.runner.stop()
        return {self.progress: progress_html(job), self.stop_button: gr.Button(visible=False)}

    def _started(self, job: BatchJob) -> dict:
        return {self.progress: progress_html(job), self.run_state: job.run, self.shown_state: -1,
                self.timer: gr.Timer(active=True), self.zip: gr.update(value=None, visible=False),
                self.stop_button: gr.Button(visible=True), self.failed_box: gr.Column(visible=False),
                self.app.status_box: self.app.status(), **self._pickers(job.run)}

    def _pickers(self, run: str) -> dict:
        """Every run list, with ``run`` (now in the runs root) among the choices."""
        return {picker: self.app.run_dropdown(run) for picker in (self.resume_picker, self.relabel_picker,
                                                                  *self.run_pickers)}

    def tick(self, run, shown):
        """Timer tick while a batch runs: progress, the gallery when it changed; at the end the ZIP,
        the failed images and the run lists."""
        job = self.app.runner.job(run) or self.app.runner.current()
        if job is None:
            return {self.timer: gr.Timer(active=False)}
        out = {self.progress: progress_html(job), self.shown_state: job.processed,
               self.app.status_box: self.app.status()}
        if job.processed != shown or not job.running:
            out.update(self._gallery(job))
        if job.running:
            return out
        if job.error:
            gr.Warning(user_message(job.error))
        out[self.timer] = gr.Timer(active=False)
        return {**out, **self._finished(job), **self._pickers(job.run)}

    def _gallery(self, job: BatchJob) -> dict:
        try:
            return {self.gallery: self.gallery_items(job.run)}
        except AutolabelError:  # the run's store is not there yet (job still starting)
            return {}

    def _finished(self, job: BatchJob) -> dict:
        """What a finished (or stopped) job shows: its ZIP, its failed images, no Stop button."""
        try:
            with self.app.open_run(job.run) as store:
                rows = [(name, without_paths(reason)) for name, reason in failed_images(store, job.refused)]
        except AutolabelError:
            rows = [(p.name, "links outside the allowed folders") for p in job.refused]
        zip_update = gr.update(value=str(job.zip_path), visible=True) if job.zip_path and job.zip_path.exists() \
            else gr.update(value=None, visible=False)
        return {self.zip: zip_update, self.stop_button: gr.Button(visible=False),
                self.failed_box: gr.Column(visible=bool(rows)),
                self.failed: pd.DataFrame(rows, columns=FAILED_HEADERS)}

    def gallery_items(self, run: str) -> list[tuple]:
        """Annotated thumbnails of the run's first ``GALLERY_SIZE`` labelled images."""
        items = []
        with self.app.open_run(run) as store:
            names = store.ontology.names
            for record in store.images("done"):
                if len(items) >= GALLERY_SIZE:
                    break
                try:
                    thumb, scale = display_image(record.path, THUMB_SIDE, self.app.config.max_image_pixels,
                                                 min_side=THUMB_SIDE)
                except AutolabelError:
                    continue
                labels = store.labels(record.id)
                image = draw_shapes(thumb, detection_shapes(labels, names), scale)
                items.append((image, f"{Path(record.path).name} · {len(labels)} labels"))
        return items

    def on_load(self) -> dict:
        """A (re)loaded page follows the running batch, or shows the last one as it ended: progress,
        gallery, failed images and ZIP."""
        job = self.app.runner.current()
        out = {self.progress: progress_html(job), self.run_state: job.run if job else None,
               self.timer: gr.Timer(active=job is not None and job.running),
               self.stop_button: gr.Button(visible=job is not None and job.running),
               self.resume_picker: self.app.run_dropdown(), self.relabel_picker: self.app.run_dropdown(),
               self.gallery: [],
               self.zip: gr.update(value=None, visible=False), self.failed_box: gr.Column(visible=False),
               self.failed: pd.DataFrame([], columns=FAILED_HEADERS)}
        if job is not None:
            out.update(self._gallery(job))
            if not job.running:
                out.update(self._finished(job))
        return out


def prompt_lines(ontology) -> str:
    """An ontology's classes in the prompt box's syntax (classes found by example boxes alone have none)."""
    lines = []
    for c in ontology.classes if ontology is not None else ():
        if c.prompts:
            negatives = f";not={','.join(c.negatives)}" if c.negatives else ""
            lines.append(f"{c.name}={','.join(c.prompts)}{negatives}" if c.prompts != (c.name,) or negatives
                         else c.name)
    return "\n".join(lines)


def examples_text(examples) -> str:
    """The Batch tab's line about the Test tab's example boxes, which a batch started here uses."""
    boxes = tuple(examples or ())
    if not boxes:
        return ""
    names = ", ".join(dict.fromkeys(md_text(b.class_name) for b in boxes))
    return f"Also uses the {len(boxes)} example box{'es' if len(boxes) != 1 else ''} drawn on the Test tab ({names})."


def start_label(mode: str) -> str:
    """The Run button's label: what the batch will do."""
    return "Segment batch" if mode == "segment" else "Detect batch"


def file_count_text(files) -> str:
    n = len(files or [])
    return "" if not n else f"{n} file{'s' if n != 1 else ''} ready"


def progress_html(job: BatchJob | None) -> str:
    """The progress box; its ``data-*`` attributes let the browser tests wait on the state."""
    if job is None:
        return "<div id='batch-progress-inner' data-state='idle'>No batch running.</div>"
    state = ("running" if job.running else "failed" if job.error else "stopped" if job.stopped else "finished")
    total = job.total if job.total is not None else 0
    return (f"<div id='batch-progress-inner' data-run='{html.escape(job.run, quote=True)}' data-state='{state}'"
            f" data-done='{job.processed}' data-total='{total}'>"
            f"<progress value='{job.processed}' max='{max(total, 1) if job.total is not None else ''}'></progress>"
            f"<div>{html.escape(without_paths(job.status_text()))}</div></div>")
