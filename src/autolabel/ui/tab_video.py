"""The Video tab: track the prompts' classes through a clip (an upload or a clip on the server) with
live progress, then scrub its frames with masks, boxes and track ids drawn, and review whole
tracks: accept, reject, change class, delete, split at the shown frame, merge two tracks. Each edit
is saved at once (``video.store``); the engine side is ``ui/video.py``."""

from __future__ import annotations

import functools
import html
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from autolabel.errors import AutolabelError
from autolabel.ui.events import listen, user_message, without_paths
from autolabel.ui.session import parse_prompts
from autolabel.ui.tab_test import EXAMPLE_PROMPTS, LOADING
from autolabel.ui.video import (VideoJob, VideoRunner, edit_track, list_video_runs, open_video_run, render_frame,
                                view_run)
from autolabel.video.decode import VIDEO_EXTENSIONS
from autolabel.video.track import TrackConfig

if TYPE_CHECKING:
    from autolabel.ui.app import AutolabelApp

TRACK_HEADERS = ["track", "class", "frames", "first frame", "last frame", "review"]
FRAME_HEIGHT = 360  # px: the frame, the scrubber and the track buttons fit a laptop screen together


class VideoTab:
    """The Video tab's components (built inside the current ``gr.Tab``) and handlers; its
    ``runner`` labels one clip at a time for every browser session."""

    def __init__(self, app: AutolabelApp):
        self.app = app
        cfg = app.config
        self.runner = VideoRunner(cfg, app.models)
        self.upload_state = gr.State(None)  # the uploaded clip's server path: never sent to the page
        self.job_state = gr.State(None)  # the run whose labelling this page follows
        self.timer = gr.Timer(1.0, active=False)
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                with gr.Row():
                    self.upload = gr.UploadButton("Upload a clip", file_types=sorted(VIDEO_EXTENSIONS),
                                                  file_count="single", type="filepath", size="sm",
                                                  elem_id="video-upload")
                    self.clip_name = gr.Markdown("No clip yet (mp4, mov, mkv, webm, avi)", elem_id="video-clip-name",
                                                 elem_classes="autolabel-hint")
                self.server_clip = gr.Textbox(label="…or a clip on the server", visible=bool(cfg.allow_folders),
                                              elem_id="video-server-clip",
                                              info="inside: " + ", ".join(p.name for p in cfg.allow_folders))
                self.prompts = gr.Textbox(label="Classes and prompts", lines=3, placeholder=EXAMPLE_PROMPTS,
                                          elem_id="video-prompts")
                with gr.Row():
                    self.threshold = gr.Slider(0.0, 1.0, value=cfg.threshold, step=0.01, label="Score threshold",
                                               elem_id="video-threshold", min_width=140)
                    self.keyframe_every = gr.Number(TrackConfig.keyframe_every, label="Detect every N frames",
                                                    precision=0, minimum=1, elem_id="video-keyframe-every",
                                                    min_width=100)
                with gr.Row():
                    self.fps = gr.Number(0, label="Frames per second (0: all)", minimum=0, elem_id="video-fps",
                                         min_width=100)
                    self.name = gr.Textbox(label="Run name", placeholder="video-YYYYMMDD-HHMMSS",
                                           elem_id="video-run-name", min_width=140)
                with gr.Row():
                    self.start_button = gr.Button("Track clip", variant="primary", elem_id="video-start")
                    self.stop_button = gr.Button("Stop", variant="stop", visible=False, elem_id="video-stop")
                    self.resume_button = gr.Button("Resume run", elem_id="video-resume")
                self.progress = gr.HTML(progress_html(None), elem_id="video-progress")
            with gr.Column(scale=2, min_width=480):
                with gr.Row():
                    self.run = gr.Dropdown(label="Video run", choices=self.runs(), elem_id="video-run", scale=2)
                    self.summary = gr.Markdown(elem_id="video-summary")
                self.frame = gr.Image(show_label=False, interactive=False, format="png", height=FRAME_HEIGHT,
                                      elem_id="video-frame")
                with gr.Row():
                    self.scrubber = gr.Slider(0, 1, value=0, step=1, label="Frame", elem_id="video-scrubber",
                                              scale=3)
                    self.caption = gr.Markdown(elem_id="video-caption")
                with gr.Row():
                    self.track = gr.Dropdown(label="Track", choices=[], elem_id="video-track", min_width=120)
                    self.accept_button = gr.Button("Accept", elem_id="video-accept", size="sm")
                    self.reject_button = gr.Button("Reject", elem_id="video-reject", size="sm", variant="stop")
                    self.delete_button = gr.Button("Delete", elem_id="video-delete", size="sm")
                    self.split_button = gr.Button("Split at this frame", elem_id="video-split", size="sm")
                with gr.Row():
                    self.class_name = gr.Dropdown(label="Class", choices=[], elem_id="video-class", min_width=120)
                    self.set_class_button = gr.Button("Change class", elem_id="video-set-class", size="sm")
                    self.other = gr.Dropdown(label="Second track", choices=[], elem_id="video-other", min_width=120)
                    self.merge_button = gr.Button("Merge it into the track", elem_id="video-merge", size="sm")
                self.table = gr.Dataframe(value=pd.DataFrame([], columns=TRACK_HEADERS), label="Tracks",
                                          interactive=False, elem_id="video-tracks", max_height=260)

    def runs(self) -> list[str]:
        return list_video_runs(self.app.config.runs_dir)

    def wire(self) -> None:
        view = self.view_outputs()
        job_outputs = [self.progress, self.job_state, self.timer, self.stop_button, self.app.status_box]
        listen(self.upload.upload, self.uploaded, [self.upload], [self.upload_state, self.clip_name])
        listen(self.start_button.click, self.start,
               [self.upload_state, self.server_clip, self.prompts, self.threshold, self.keyframe_every, self.fps,
                self.name], job_outputs)
        listen(self.resume_button.click, self.resume, [self.run], job_outputs)
        listen(self.stop_button.click, self.stop, None, [self.progress, self.stop_button], queue=False)
        listen(self.table.select, self.choose_row, [self.run, self.scrubber], [self.track, self.frame, self.caption])
        listen(self.timer.tick, self.tick, [self.job_state], [*job_outputs, self.run, *view],
               show_progress="hidden")
        listen(self.run.input, self.show_run, [self.run], view)
        listen(self.scrubber.release, self.show_frame, [self.run, self.scrubber, self.track],
               [self.frame, self.caption], show_progress="hidden")
        listen(self.track.input, self.show_frame, [self.run, self.scrubber, self.track], [self.frame, self.caption],
               show_progress="hidden")
        edit_inputs = [self.run, self.scrubber, self.track, self.other, self.class_name]
        for button, action in ((self.accept_button, "accept"), (self.reject_button, "reject"),
                               (self.delete_button, "delete"), (self.split_button, "split"),
                               (self.set_class_button, "class"), (self.merge_button, "merge")):
            listen(button.click, functools.partial(self.edit, action=action), edit_inputs, view)

    def view_outputs(self) -> list:
        return [self.summary, self.scrubber, self.frame, self.caption, self.table, self.track, self.other,
                self.class_name]

    # -- running a clip -------------------------------------------------------------------------------

    def uploaded(self, file):
        path = file if isinstance(file, str) else getattr(file, "name", None)
        name = html.escape(Path(path).name) if path else ""
        return {self.upload_state: path, self.clip_name: f"Clip: **{name}**" if name else ""}

    def start(self, upload, server_clip, prompts, threshold, keyframe_every, fps, run_name):
        """Generator: a 'loading' status first when a model loads on this call, then the job."""
        ontology = parse_prompts(prompts)
        yield from self._started(functools.partial(
            self.runner.start, run_name, ontology, threshold, upload=upload,
            clip_path=server_clip if (server_clip or "").strip() else None, keyframe_every=keyframe_every,
            fps=fps or None))

    def resume(self, run):
        yield from self._started(functools.partial(self.runner.resume, run))

    def _started(self, start):
        if self.runner.loads_models():
            yield {self.progress: f"<div id='video-progress-inner' data-state='loading'>{LOADING}</div>",
                   self.app.status_box: self.app.status(loading=True, video=True)}
        try:
            job = start()
        except AutolabelError:
            yield {self.progress: progress_html(self.runner.current()), self.app.status_box: self.app.status()}
            raise
        yield self._following(job)

    def stop(self):
        job = self.runner.stop()
        return {self.progress: progress_html(job), self.stop_button: gr.Button(visible=False)}

    def _following(self, job: VideoJob) -> dict:
        return {self.progress: progress_html(job), self.job_state: job.run, self.timer: gr.Timer(active=True),
                self.stop_button: gr.Button(visible=True), self.app.status_box: self.app.status()}

    def tick(self, run):
        """Timer tick while a clip is labelled: progress; at the end the run, shown."""
        job = self.runner.job(run) or self.runner.current()
        if job is None:
            return {self.timer: gr.Timer(active=False)}
        out = {self.progress: progress_html(job), self.app.status_box: self.app.status()}
        if job.running:
            return out
        if job.error:
            gr.Warning(user_message(job.error))
        out.update({self.timer: gr.Timer(active=False), self.stop_button: gr.Button(visible=False),
                    self.run: gr.Dropdown(choices=self.runs(), value=job.run)})
        try:
            out.update(self.show_run(job.run))
        except AutolabelError:  # nothing was stored (it failed before its first frame)
            pass
        return out

    # -- looking at a run -----------------------------------------------------------------------------

    def show_run(self, run, position: int = 0, selected=None) -> dict:
        """The run's summary, tracks and frame ``position`` (the scrubber's range set to its frames)."""
        with open_video_run(self.app.config.runs_dir, run) as store:
            view = view_run(store)
            if view.frames:
                image, caption = render_frame(store, position, side=self.app.config.display_side,
                                              selected=selected)
            else:
                image, caption = None, "no frames labelled yet"
        choices = view.track_choices()
        ids = [tid for _, tid in choices]
        return {self.summary: view.summary(),
                self.scrubber: gr.Slider(minimum=0, maximum=max(view.frames - 1, 1), value=min(position,
                                         max(view.frames - 1, 0)), step=1),
                self.frame: image, self.caption: caption,
                self.table: pd.DataFrame(view.track_rows(), columns=TRACK_HEADERS),
                self.track: gr.Dropdown(choices=choices, value=selected if selected in ids else None),
                self.other: gr.Dropdown(choices=choices, value=None),
                self.class_name: gr.Dropdown(choices=view.names, value=None)}

    def show_frame(self, run, position, selected):
        with open_video_run(self.app.config.runs_dir, run) as store:
            image, caption = render_frame(store, int(position or 0), side=self.app.config.display_side,
                                          selected=selected)
        return {self.frame: image, self.caption: caption}

    def choose_row(self, run, position, evt: gr.SelectData) -> dict:
        """A click on the track table selects that row's track (drawn thick)."""
        row = evt.row_value or []
        if not row or row[0] in (None, ""):
            return {}
        selected = int(row[0])
        return {self.track: gr.Dropdown(value=selected), **self.show_frame(run, position, selected)}

    def edit(self, run, position, selected, other, class_name, action: str):
        """One track edit, saved at once; the view redrawn from the store."""
        position = int(position or 0)
        with self.runner.editing(run) as store:
            frames = store.frames()
            message = edit_track(store, action, selected, other=other, class_name=class_name,
                                 position=min(position, len(frames) - 1) if frames else None)
        gr.Info(html.escape(without_paths(message)))
        return self.show_run(run, position, selected)

    def on_load(self) -> dict:
        """A (re)loaded page follows the running clip, or shows the last run as it is stored."""
        job = self.runner.current()
        runs = self.runs()
        run = job.run if job is not None and job.run in runs else (runs[-1] if runs else None)
        out = {self.progress: progress_html(job), self.job_state: job.run if job else None,
               self.timer: gr.Timer(active=job is not None and job.running),
               self.stop_button: gr.Button(visible=job is not None and job.running),
               self.run: gr.Dropdown(choices=runs, value=run), self.upload_state: None}
        out.update(self.empty_view())
        if run is not None:
            try:
                out.update(self.show_run(run))
            except AutolabelError:
                pass
        return out

    def empty_view(self) -> dict:
        """No run shown: every view output cleared (the load event sets all of them)."""
        return {self.summary: "", self.scrubber: gr.Slider(minimum=0, maximum=1, value=0, step=1),
                self.frame: None, self.caption: "", self.table: pd.DataFrame([], columns=TRACK_HEADERS),
                self.track: gr.Dropdown(choices=[], value=None), self.other: gr.Dropdown(choices=[], value=None),
                self.class_name: gr.Dropdown(choices=[], value=None)}

    def load_outputs(self) -> list:
        """What ``on_load`` sets (the page's load event lists them)."""
        return [self.progress, self.job_state, self.timer, self.stop_button, self.run, self.upload_state,
                *self.view_outputs()]


def progress_html(job: VideoJob | None) -> str:
    """The progress box; its ``data-*`` attributes let the browser tests wait on the state."""
    if job is None:
        return "<div id='video-progress-inner' data-state='idle'>No clip being labelled.</div>"
    state = "running" if job.running else "failed" if job.error else "stopped" if job.stopped else "finished"
    total = job.total or 0
    return (f"<div id='video-progress-inner' data-run='{html.escape(job.run, quote=True)}' data-state='{state}'"
            f" data-done='{job.processed}'>"
            f"<progress value='{job.processed}' max='{max(total, job.processed, 1)}'></progress>"
            f"<div>{html.escape(without_paths(job.status_text()))}</div></div>")
