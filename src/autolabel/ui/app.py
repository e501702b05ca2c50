"""The Gradio app: layout and wiring only. The work happens in ``session`` (models, feature cache,
Test queries), ``batch`` (runs), ``review`` (edits), ``exporting`` and ``draw``; ``security`` decides
what the server binds, serves and accepts.

Tabs: **Test** (one image, prompts, threshold, mode; cached features make re-queries instant),
**Batch** (a run in the shared store with live progress, a gallery and a ZIP), **Review** (step
through a run's images, accept / reject / relabel / delete / draw / move boxes, saved at once) and
**Export** (a run in a chosen format and size, as a download).

Errors a user can fix (``AutolabelError``) show as one-line messages; anything else shows as a
generic error (``show_error=False``) while the traceback goes to the server log.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import pandas as pd

from autolabel.errors import AutolabelError, ConfigError, StoreError
from autolabel.ui import review
from autolabel.ui.batch import BatchJob, BatchRunner
from autolabel.ui.draw import detection_shapes, draw_shapes, record_shapes
from autolabel.ui.exporting import (
    MASK_FORMATS,
    evaluate_against,
    evaluation_available,
    export_formats,
    run_export,
    summary_rows,
)
from autolabel.ui.runs import list_runs, open_run, run_summary
from autolabel.ui.security import resolve_server_folder
from autolabel.ui.session import (
    DETECTION_HEADERS,
    FeatureCache,
    ModelHandles,
    PromptTester,
    UiConfig,
    detection_rows,
    display_copy,
    parse_prompts,
)

log = logging.getLogger(__name__)

GALLERY_SIZE = 12
THUMB_SIDE = 320
EXAMPLE_PROMPTS = "person\ncar=car,automobile,van"

# Review shortcuts: keys -> elem_id of the button they click. Only while the Review tab is shown
# and the focus is not in a text field.
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

CSS = """
#batch-progress progress { width: 100%; height: 1.2em; }
#review-image img, #test-result img { cursor: crosshair; }
.autolabel-hint { opacity: 0.8; }
"""


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


def _table(rows: list[list], headers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


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


class AutolabelApp:
    """The UI's server-side state (shared by all browser sessions) and its Gradio layout."""

    def __init__(self, config: UiConfig, models: ModelHandles | None = None):
        self.config = config
        self.models = models or ModelHandles(config.model, config.sam_model, config.device, config.dtype)
        self.tester = PromptTester(config, self.models, FeatureCache(config.feature_cache_size))
        self.batch = BatchRunner(config, self.models)
        self.display = review.DisplayImages(config.display_side, max_pixels=config.max_image_pixels)
        self.demo: gr.Blocks | None = None

    # == shared ====================================================================================

    def status(self) -> str:
        return f"{self.models.status()} · runs in `{self.config.runs_dir}`"

    def open_run(self, run: str | None):
        """The store of run ``run`` under the runs root, for one action (a context manager)."""
        return open_run(self.config.runs_dir, run)

    def runs(self) -> list[str]:
        return list_runs(self.config.runs_dir)

    def _run_dropdown(self, value: str | None = None):
        runs = self.runs()
        return gr.Dropdown(choices=runs, value=value if value in runs else (runs[-1] if runs else None))

    # == Test tab ==================================================================================

    def _test_outputs(self, result) -> tuple:
        names = result.ontology.names
        image = draw_shapes(result.cached.display, detection_shapes(result.detections, names), result.cached.display_scale)
        return image, _table(detection_rows(result), DETECTION_HEADERS), result.timing_text(), self.status()

    def test_query(self, path, prompts, threshold, mode, explicit: bool = True):
        """Generator: a 'loading' status first when a model loads on this call, then the result."""
        if not path or (not explicit and not (prompts or "").strip()):
            if explicit:
                raise ConfigError("upload an image first")
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        needs_load = not self.models.is_loaded("owlv2") or (mode == "segment" and not self.models.is_loaded("sam2"))
        if needs_load:
            yield gr.skip(), gr.skip(), "Loading the model (first use)…", self.status().replace(
                "not loaded", "loading…")
        try:
            result = self.tester.query(path, prompts, threshold, mode)
        except AutolabelError:
            yield gr.skip(), gr.skip(), gr.skip(), self.status()
            raise
        yield self._test_outputs(result)

    def test_preview(self, path, prompts, threshold, mode):
        """A new upload: decode it (errors show now) and detect at once if prompts are given."""
        if not path:
            yield None, _table([], DETECTION_HEADERS), "", self.status()
            return
        if (prompts or "").strip():
            yield from self.test_query(path, prompts, threshold, mode)
            return
        cached = self.tester.load(path)
        yield cached.display, _table([], DETECTION_HEADERS), "Enter classes and press Detect.", self.status()

    # == Batch tab =================================================================================

    def _progress_html(self, job: BatchJob | None) -> str:
        if job is None:
            return "<div id='batch-progress-inner' data-state='idle'>No batch running.</div>"
        state = "running" if job.running else ("failed" if job.error else "finished")
        total = job.total if job.total is not None else 0
        return (f"<div id='batch-progress-inner' data-run='{html.escape(job.run, quote=True)}' data-state='{state}'"
                f" data-done='{job.processed}' data-total='{total}'>"
                f"<progress value='{job.processed}' max='{max(total, 1) if job.total is not None else ''}'></progress>"
                f"<div>{html.escape(job.status_text())}</div></div>")

    def _gallery(self, run: str) -> list[tuple]:
        """Annotated thumbnails of the run's first ``GALLERY_SIZE`` labelled images."""
        from autolabel.images import load_image

        items = []
        with self.open_run(run) as store:
            names = store.ontology.names
            for record in store.images("done"):
                if len(items) >= GALLERY_SIZE:
                    break
                try:
                    loaded = load_image(record.path, max_pixels=self.config.max_image_pixels, max_side=THUMB_SIDE)
                except AutolabelError:
                    continue
                labels = store.detections(record.id)
                thumb, enlarge = display_copy(loaded.image, THUMB_SIDE, min_side=THUMB_SIDE)
                image = draw_shapes(thumb, record_shapes(labels, names), loaded.scale * enlarge)
                items.append((image, f"{Path(record.path).name} · {len(labels)} labels"))
        return items

    def _loading_step(self, mode: str | None):
        """One output step saying the models are loading, when they will load on this call."""
        if self.models.is_loaded("owlv2") and (mode != "segment" or self.models.is_loaded("sam2")):
            return None
        html_ = "<div id='batch-progress-inner' data-state='loading'>Loading the model (first use)…</div>"
        return html_, gr.skip(), gr.skip(), gr.skip(), gr.skip(), self.status().replace("not loaded", "loading…")

    def _started(self, job: BatchJob):
        return (self._progress_html(job), job.run, -1, gr.Timer(active=True), gr.update(value=None, visible=False),
                self.status())

    def batch_start(self, files, folder, prompts, threshold, mode, run_name, image_size):
        """Generator: validate, say so if the models load now, then start the run in the background."""
        ontology = parse_prompts(prompts)
        folders = [resolve_server_folder(folder, self.config.allow_folders)] if (folder or "").strip() else []
        uploads = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
        loading = self._loading_step(mode)
        if loading:
            yield loading
        try:
            job = self.batch.start_new(run_name, ontology, mode, threshold, uploads, folders, image_size)
        except AutolabelError:
            yield self._progress_html(self.batch.current()), *(gr.skip(),) * 4, self.status()
            raise
        yield self._started(job)

    def batch_resume(self, run, image_size):
        return self._started(self.batch.resume(run, image_size))

    def batch_tick(self, run, shown):
        """Timer tick while a batch runs: progress, the gallery when it changed, the ZIP at the end."""
        job = self.batch.job(run) or self.batch.current()
        if job is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        gallery = gr.skip()
        if job.processed != shown or not job.running:
            try:
                gallery = self._gallery(job.run)
            except AutolabelError:  # the run's store is not there yet (job still starting)
                gallery = gr.skip()
        if job.running:
            return (self._progress_html(job), gallery, job.processed, gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                    self.status())
        if job.error:
            gr.Warning(html.escape(job.error))
        zip_button = gr.update(value=str(job.zip_path), visible=True) if job.zip_path else gr.skip()
        runs = self._run_dropdown(job.run)
        return (self._progress_html(job), gallery, job.processed, gr.Timer(active=False), zip_button, runs, runs,
                self.status())

    # == Review tab ================================================================================

    def _render_review(self, state: ReviewState, message: str | None = None):
        """Every Review output for ``state``: image, table, selection, classes, position, hint."""
        if state.run is None or not state.ids:
            empty = _table([], review.TABLE_HEADERS)
            pos = "No images to review with this filter." if state.run else "Choose a run and press Load."
            return (state, None, empty, gr.Dropdown(choices=[], value=None), gr.skip(), pos, message or "")
        with self.open_run(state.run) as store:
            record = store.image(state.image_id)
            labels = review.labels(store, record.id)
            names = store.ontology.names
        image, scale = self.display.get(record)
        ids = [r.id for r in labels]
        selected = state.selected if state.selected in ids else (ids[0] if ids else None)
        state = replace(state, selected=selected)
        rendered = draw_shapes(image, record_shapes(labels, names, selected), scale, state.pending)
        choices = [(review.choice_label(r), r.id) for r in labels]
        done = "reviewed" if record.reviewed else "not reviewed yet"
        pos = f"Image {state.pos + 1} of {len(state.ids)} · `{Path(record.path).name}` · {done}"
        if message is None:
            message = ("First corner placed: click the opposite corner." if state.pending else
                       "Click two opposite corners on the image to draw a box.")
        return (state, rendered, _table(review.table_rows(labels), review.TABLE_HEADERS),
                gr.Dropdown(choices=choices, value=selected), gr.skip(), pos, message)

    def review_load(self, run, filter, low_score):
        with self.open_run(run) as store:
            ids = tuple(review.image_ids(store, filter, float(low_score or 0)))
            names = store.ontology.names
            summary = run_summary(store)
        out = list(self._render_review(ReviewState(run=run, ids=ids)))
        out[4] = gr.Dropdown(choices=names, value=names[0] if names else None)
        return (*out, summary)

    @staticmethod
    def _loaded(state: ReviewState | None) -> ReviewState:
        if state is None or not state.ids:
            raise StoreError("load a run first")
        return state

    def review_nav(self, state: ReviewState, delta: int):
        state = self._loaded(state)
        pos = min(max(0, state.pos + delta), len(state.ids) - 1)
        return self._render_review(replace(state, pos=pos, pending=None, selected=None))

    def review_select(self, state: ReviewState, selected):
        if state is None or not state.ids:
            return self._render_review(state or ReviewState())
        return self._render_review(replace(state, selected=int(selected) if selected not in (None, "") else None))

    def review_table_select(self, state: ReviewState, evt: gr.SelectData):
        state = self._loaded(state)
        row = evt.row_value or []
        if not row or row[0] in (None, ""):
            return self._render_review(state)
        return self._render_review(replace(state, selected=int(row[0])))

    def review_action(self, state: ReviewState, selected, action: str, class_name: str | None = None):
        state = self._loaded(state)
        actions = {"accept": review.accept, "reject": review.reject, "delete": review.delete}
        with self.open_run(state.run) as store:
            if action == "class":
                review.set_class(store, state.image_id, selected, class_name)
            elif action in actions:
                actions[action](store, state.image_id, selected)
            else:
                raise StoreError(f"unknown action {action!r}")
        return self._render_review(replace(state, pending=None), f"Saved: {action} #{selected}.")

    def review_accept_image(self, state: ReviewState):
        state = self._loaded(state)
        with self.open_run(state.run) as store:
            n = review.accept_image(store, state.image_id)
        pos = min(state.pos + 1, len(state.ids) - 1)
        return self._render_review(replace(state, pos=pos, pending=None, selected=None),
                                   f"Image accepted ({n} labels accepted).")

    def review_click(self, state: ReviewState, selected, draw_mode, class_name, evt: gr.SelectData):
        state = self._loaded(state)
        if evt.index is None:
            return self._render_review(state)
        with self.open_run(state.run) as store:
            record = store.image(state.image_id)
            _, scale = self.display.get(record)
            pending, box = review.corner_click(state.pending, evt.index, scale, record.width, record.height)
            if box is None:
                return self._render_review(replace(state, pending=pending))
            if draw_mode == MOVE_MODE:
                review.move_box(store, state.image_id, selected, box)
                new_selected, message = selected, f"Saved: moved #{selected}."
            else:
                new_selected = review.add_box(store, state.image_id, class_name, box)
                message = f"Saved: added #{new_selected} ({class_name})."
        return self._render_review(replace(state, pending=None, selected=int(new_selected)), message)

    def review_cancel(self, state: ReviewState):
        return self._render_review(replace(state or ReviewState(), pending=None), "Cancelled.")

    # == Export tab ================================================================================

    def export(self, run, fmt, image_size, masks):
        from autolabel.ui.batch import export_dir

        with self.open_run(run) as store:
            summary = run_export(store, fmt, export_dir(self.config.work_dir, run), image_size=image_size,
                                 masks=masks, zip_name=f"{run}_{fmt}.zip", max_pixels=self.config.max_image_pixels)
        text = (f"Exported **{run}** as {fmt}: {summary.images} images, {summary.annotations} annotations"
                f" (rejected labels excluded).")
        return (gr.update(value=str(summary.path), visible=True), text,
                _table(summary_rows(summary), ["class", "annotations"]))

    def evaluate(self, run, gt_run):
        if not gt_run:
            raise StoreError("choose the run that holds the ground truth")
        if gt_run == run:
            raise StoreError("choose another run as ground truth (e.g. one made with `autolabel import`)")
        with self.open_run(run) as store, self.open_run(gt_run) as gt:
            headers, rows, text = evaluate_against(store, gt)
        return text, _table(rows, headers)

    # == page load =================================================================================

    def on_load(self):
        job = self.batch.current()
        running = job is not None and job.running
        runs = self._run_dropdown()
        return (self.status(), runs, runs, runs, self._progress_html(job) if job else self._progress_html(None),
                job.run if job else None, gr.Timer(active=running), gr.Dropdown(choices=self.runs()))

    # == layout ====================================================================================

    def build(self) -> gr.Blocks:
        cfg = self.config
        on = _listen
        with gr.Blocks(title="autolabel", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
            gr.Markdown("## autolabel: text-prompted auto-labeling")
            status = gr.Markdown(self.status(), elem_id="model-status")

            with gr.Tab("Test", id="test"):
                with gr.Row():
                    with gr.Column(scale=1):
                        t_file = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="test-upload")
                        t_prompts = gr.Textbox(label="Classes and prompts (one class per line)", lines=4,
                                               placeholder=EXAMPLE_PROMPTS, elem_id="test-prompts",
                                               info="'person' or 'car=car,automobile,van' (class=prompt,prompt,...)")
                        t_threshold = gr.Slider(0.0, 1.0, value=cfg.threshold, step=0.01, label="Score threshold",
                                                elem_id="test-threshold")
                        t_mode = gr.Radio(["detect", "segment"], value="detect", label="Mode", elem_id="test-mode")
                        t_run = gr.Button("Detect", variant="primary", elem_id="test-run")
                    with gr.Column(scale=2):
                        t_image = gr.Image(label="Result", interactive=False, elem_id="test-result", format="png")
                        t_timing = gr.Markdown(elem_id="test-timing")
                        t_table = gr.Dataframe(value=_table([], DETECTION_HEADERS), label="Detections",
                                               interactive=False, elem_id="test-table")

            with gr.Tab("Batch", id="batch"):
                run_state = gr.State(None)
                shown_state = gr.State(-1)
                timer = gr.Timer(1.0, active=False)
                with gr.Row():
                    with gr.Column(scale=1):
                        b_files = gr.File(label="Images", file_count="multiple", file_types=["image"],
                                          type="filepath", elem_id="batch-files")
                        b_folder = gr.Textbox(label="…or a folder on the server",
                                              visible=bool(cfg.allow_folders), elem_id="batch-folder",
                                              info="inside: " + ", ".join(str(p) for p in cfg.allow_folders))
                        b_prompts = gr.Textbox(label="Classes and prompts", lines=4, placeholder=EXAMPLE_PROMPTS,
                                               elem_id="batch-prompts", info="copied from the Test tab as you type")
                        b_threshold = gr.Slider(0.0, 1.0, value=cfg.threshold, step=0.01, label="Score threshold",
                                                elem_id="batch-threshold")
                        b_mode = gr.Radio(["detect", "segment"], value="detect", label="Mode", elem_id="batch-mode")
                        b_name = gr.Textbox(label="Run name", placeholder="ui-YYYYMMDD-HHMMSS", elem_id="batch-run-name")
                        b_size = gr.Textbox(label="Training image size for the ZIP", value="640",
                                            info="N: longest side; WxH: exact; empty: original size",
                                            elem_id="batch-image-size")
                        b_start = gr.Button("Run batch", variant="primary", elem_id="batch-start")
                        with gr.Accordion("Resume a run", open=False):
                            b_resume_run = gr.Dropdown(label="Run", choices=self.runs(), elem_id="batch-resume-run")
                            b_resume = gr.Button("Resume", elem_id="batch-resume")
                    with gr.Column(scale=2):
                        b_progress = gr.HTML(self._progress_html(None), elem_id="batch-progress")
                        b_zip = gr.DownloadButton("Download ZIP", visible=False, elem_id="batch-zip")
                        b_gallery = gr.Gallery(label="Annotated images", columns=4, height="auto", object_fit="contain",
                                               elem_id="batch-gallery")

            with gr.Tab("Review", id="review"):
                r_state = gr.State(ReviewState())
                with gr.Row():
                    r_run = gr.Dropdown(label="Run", choices=self.runs(), elem_id="review-run", scale=2)
                    r_filter = gr.Radio(list(review.FILTERS), value="all", label="Images", elem_id="review-filter",
                                        scale=2)
                    r_low = gr.Number(0.3, label="Low score below", minimum=0, maximum=1, elem_id="review-low",
                                      scale=1)
                    r_load = gr.Button("Load", variant="primary", elem_id="review-load", scale=1)
                r_summary = gr.Markdown(elem_id="review-summary")
                with gr.Row():
                    r_prev = gr.Button("◀ Previous (p)", elem_id="review-prev", size="sm")
                    r_next = gr.Button("Next (n) ▶", elem_id="review-next", size="sm")
                    r_accept_image = gr.Button("Accept image (a)", variant="primary", elem_id="review-accept-image",
                                               size="sm")
                r_pos = gr.Markdown(elem_id="review-position")
                with gr.Row():
                    with gr.Column(scale=3):
                        r_image = gr.Image(label="Click two opposite corners to draw a box", interactive=False,
                                           elem_id="review-image", format="png")
                        r_hint = gr.Markdown(elem_id="review-hint", elem_classes="autolabel-hint")
                    with gr.Column(scale=2):
                        r_select = gr.Dropdown(label="Selected label", choices=[], elem_id="review-select")
                        with gr.Row():
                            r_accept = gr.Button("Accept (y)", elem_id="review-accept", size="sm")
                            r_reject = gr.Button("Reject (r)", elem_id="review-reject", size="sm", variant="stop")
                            r_delete = gr.Button("Delete (x)", elem_id="review-delete", size="sm")
                        r_class = gr.Dropdown(label="Class (for a change or a new box)", choices=[],
                                              elem_id="review-class")
                        r_set_class = gr.Button("Change class of selected", elem_id="review-set-class", size="sm")
                        r_draw = gr.Radio([ADD_MODE, MOVE_MODE], value=ADD_MODE, label="Clicks on the image",
                                          elem_id="review-draw-mode")
                        r_cancel = gr.Button("Cancel box (Esc)", elem_id="review-cancel", size="sm")
                        r_table = gr.Dataframe(value=_table([], review.TABLE_HEADERS), label="Labels",
                                               interactive=False, elem_id="review-table")
                gr.Markdown("Shortcuts: **n**/→ next · **p**/← previous · **a** accept image · **y** accept label ·"
                            " **r** reject label · **x** delete label · **Esc** cancel box", elem_classes="autolabel-hint")

            with gr.Tab("Export", id="export"):
                formats = list(export_formats())
                with gr.Row():
                    e_run = gr.Dropdown(label="Run", choices=self.runs(), elem_id="export-run")
                    e_format = gr.Dropdown(label="Format", choices=formats, value=formats[0], elem_id="export-format")
                    e_size = gr.Textbox(label="Image size", value="640", elem_id="export-image-size",
                                        info="N: longest side; WxH: exact; empty: original size")
                    e_masks = gr.Radio(list(MASK_FORMATS), value="polygon", label="Masks (COCO)",
                                       elem_id="export-masks")
                e_button = gr.Button("Export", variant="primary", elem_id="export-button")
                e_download = gr.DownloadButton("Download", visible=False, elem_id="export-download")
                e_summary = gr.Markdown(elem_id="export-summary")
                e_table = gr.Dataframe(value=_table([], ["class", "annotations"]), interactive=False,
                                       elem_id="export-table")
                with gr.Accordion("Evaluate against ground truth", open=False, visible=evaluation_available()):
                    with gr.Row():
                        v_gt = gr.Dropdown(label="Ground-truth run (its reviewed images)", choices=self.runs(),
                                           elem_id="eval-gt-run")
                        v_button = gr.Button("Evaluate the run above", elem_id="eval-button")
                    v_summary = gr.Markdown(elem_id="eval-summary")
                    v_table = gr.Dataframe(interactive=False, elem_id="eval-table")

            # -- wiring: Test --
            test_inputs = [t_file, t_prompts, t_threshold, t_mode]
            test_outputs = [t_image, t_table, t_timing, status]
            on(t_run.click, ui_errors(self.test_query), test_inputs, test_outputs)
            requery = ui_errors(functools.partial(self.test_query, explicit=False))
            for event in (t_threshold.change, t_mode.change, t_prompts.blur, t_prompts.submit):
                on(event, requery, test_inputs, test_outputs, trigger_mode="always_last", show_progress="hidden")
            on(t_file.upload, ui_errors(self.test_preview), test_inputs, test_outputs)
            # The Batch tab starts from what was dialled in on the Test tab.
            for src, dst in ((t_prompts, b_prompts), (t_threshold, b_threshold), (t_mode, b_mode)):
                on(src.change, lambda v: v, [src], [dst], queue=False, show_progress="hidden")

            # -- wiring: Batch --
            batch_outputs = [b_progress, run_state, shown_state, timer, b_zip, status]
            on(b_start.click, ui_errors(self.batch_start),
               [b_files, b_folder, b_prompts, b_threshold, b_mode, b_name, b_size], batch_outputs)
            on(b_resume.click, ui_errors(self.batch_resume), [b_resume_run, b_size], batch_outputs)
            on(timer.tick, ui_errors(self.batch_tick), [run_state, shown_state],
               [b_progress, b_gallery, shown_state, timer, b_zip, r_run, e_run, status], show_progress="hidden")

            # -- wiring: Review --
            review_outputs = [r_state, r_image, r_table, r_select, r_class, r_pos, r_hint]
            on(r_load.click, ui_errors(self.review_load), [r_run, r_filter, r_low], [*review_outputs, r_summary])
            on(r_prev.click, ui_errors(lambda s: self.review_nav(s, -1)), [r_state], review_outputs)
            on(r_next.click, ui_errors(lambda s: self.review_nav(s, +1)), [r_state], review_outputs)
            on(r_accept_image.click, ui_errors(self.review_accept_image), [r_state], review_outputs)
            on(r_select.input, ui_errors(self.review_select), [r_state, r_select], review_outputs)
            on(r_table.select, ui_errors(self.review_table_select), [r_state], review_outputs)
            for button, action in ((r_accept, "accept"), (r_reject, "reject"), (r_delete, "delete")):
                on(button.click, ui_errors(functools.partial(_action, self, action)), [r_state, r_select],
                   review_outputs)
            on(r_set_class.click, ui_errors(lambda s, sel, c: self.review_action(s, sel, "class", c)),
               [r_state, r_select, r_class], review_outputs)
            on(r_image.select, ui_errors(self.review_click), [r_state, r_select, r_draw, r_class], review_outputs)
            on(r_cancel.click, ui_errors(self.review_cancel), [r_state], review_outputs)

            # -- wiring: Export and refreshes --
            on(e_button.click, ui_errors(self.export), [e_run, e_format, e_size, e_masks],
               [e_download, e_summary, e_table])
            on(v_button.click, ui_errors(self.evaluate), [e_run, v_gt], [v_summary, v_table])
            on(demo.load, self.on_load, None, [status, b_resume_run, r_run, e_run, b_progress, run_state, timer, v_gt])
        self.demo = demo
        return demo


ADD_MODE = "add a new box"
MOVE_MODE = "move the selected box"


def _action(app: AutolabelApp, action: str, state, selected):
    return app.review_action(state, selected, action)


def _listen(event, fn, inputs, outputs, **kwargs):
    """Register a listener hidden from the API docs and the Gradio clients (the page calls them)."""
    kwargs.setdefault("api_visibility", "private")
    return event(fn, inputs, outputs, **kwargs)


def build_app(config: UiConfig, models: ModelHandles | None = None) -> AutolabelApp:
    """Build the UI (call ``security.prepare_gradio_environment`` first; ``launch`` does)."""
    app = AutolabelApp(config, models)
    app.build()
    return app


def launch(config: UiConfig, *, host: str, port: int | None, auth=None, max_file_size="200mb",
           models: ModelHandles | None = None, block: bool = True) -> AutolabelApp:
    """Build and start the server with the secure launch options (``security.launch_kwargs``)."""
    from autolabel.ui.security import launch_kwargs, prepare_gradio_environment

    prepare_gradio_environment(config.work_dir)
    app = build_app(config, models)
    kwargs = launch_kwargs(work_dir=config.work_dir, runs_dir=config.runs_dir, host=host, port=port, auth=auth,
                           max_file_size=max_file_size, model_paths=(config.model, config.sam_model))
    # quiet: the command prints the address itself (Gradio's banner also suggests share=True).
    app.demo.launch(prevent_thread_lock=not block, head=KEYBOARD_JS, css=CSS, quiet=True, **kwargs)
    return app
