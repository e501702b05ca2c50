"""The Video tab's engine (no Gradio): video runs under the runs root (folders holding
``video.sqlite``), one clip tracked at a time in a background thread through ``video.run.track_video``
like ``autolabel label --mode track``, a frame drawn with its tracks, and the track edits.

The clip is an upload (copied into the run folder under a sanitized name) or a file inside a folder
the operator allowed. The detector is the one the Test and Batch tabs use, and the SAM2 video model
(from the UI's segmentation checkpoint) is held beside it: both are ``ModelHandles``'. Nothing of
the clip goes back to the browser but the frames drawn here.
"""

from __future__ import annotations

import dataclasses
import html
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from autolabel.errors import ConfigError, StoreError
from autolabel.ontology import Ontology
from autolabel.store import DB_NAME as IMAGE_DB_NAME
from autolabel.ui.batch import copy_uploads
from autolabel.ui.jobs import Job, JobRunner, format_duration
from autolabel.ui.runs import run_dir
from autolabel.ui.security import is_within, sanitize_run_name
from autolabel.ui.session import ModelHandles, UiConfig, display_copy, make_labeler
from autolabel.video.decode import FrameSelection, VideoSource, is_readable_video
from autolabel.video.run import DEFAULT_CHUNK_FRAMES
from autolabel.video.store import DB_NAME, StoredTrack, VideoStore, open_video_store
from autolabel.video.track import TrackConfig

CLIP_FOLDER = "clip"  # the run folder's copy of an uploaded clip
REVIEWS = {"accept": "accepted", "reject": "rejected", "reset": "pending"}


def list_video_runs(runs_dir: Path) -> list[str]:
    """Names of the video runs under ``runs_dir``, sorted."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted(p.name for p in runs_dir.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / DB_NAME).is_file())


def video_run_dir(runs_dir: Path, name: str | None) -> Path:
    """The folder of the existing video run ``name`` (a plain name) under ``runs_dir``."""
    folder = run_dir(runs_dir, name)
    if not (folder / DB_NAME).is_file():
        raise StoreError(f"{name!r} is not a video run")
    return folder


def open_video_run(runs_dir: Path, name: str | None) -> VideoStore:
    """The store of an existing video run, for one look (``with open_video_run(...) as store``)."""
    return open_video_store(video_run_dir(runs_dir, name))


def server_clip(text: str, allowed) -> Path:
    """A clip path typed in the UI -> the resolved file, only inside an ``--allow-folder`` folder
    and only if it is a video PyAV can open."""
    allowed = [Path(a).resolve() for a in allowed]
    if not allowed:
        raise ConfigError("reading clips on the server is off: upload the clip instead")
    path = Path((text or "").strip()).expanduser()
    if not str(path).strip() or str(path) == ".":
        raise ConfigError("enter a clip's path")
    resolved = (path if path.is_absolute() else allowed[0] / path).resolve()
    if not any(is_within(resolved, root) for root in allowed):
        raise ConfigError(f"clip {text!r} is outside the allowed folders")
    if not is_readable_video(resolved):
        raise ConfigError(f"{text!r} is not a video file this server can read (mp4, mov, mkv, webm, avi)")
    return resolved


@dataclass
class VideoJob(Job):
    """Progress of one clip: ``processed`` counts frames labelled in this job; ``total`` is the
    container's estimate of the selected frames (None when it does not say)."""

    clip: str = ""  # the clip's file name (never a server path)

    def status_text(self) -> str:
        total = "?" if self.total is None else self.total
        head = f"run {self.run} ({self.clip})"
        if self.error:
            return f"{head}: stopped: {self.error}"
        if self.running:
            if self.stop_requested:
                return f"{head}: {self.processed}/{total} frames · stopping…"
            left = f" · about {format_duration(self.eta_seconds)} left" if self.eta_seconds is not None else ""
            return f"{head}: {self.processed}/{total} frames · {self.per_second:.1f} frames/s{left}"
        if self.stopped:
            return f"{head}: stopped after {self.processed} frames; Resume continues where it stopped"
        tracks = f", {self.summary.tracks} tracks" if self.summary is not None else ""
        return f"{head}: finished {self.processed} frames{tracks} in {self.elapsed:.1f} s"


class VideoRunner(JobRunner):
    """Starts and follows video jobs (one at a time). ``make_propagator``: a factory of
    ``models.sam2_video.Propagator`` (one per clip); None: a session of ``ModelHandles.video_model``.
    ``chunk_frames``: frames per transaction (what a stop keeps)."""

    busy = "clip {run} is still being labelled: wait for it or stop it"
    kind = "video run"

    def __init__(self, config: UiConfig, models: ModelHandles,
                 make_propagator: Callable[[], object] | None = None, chunk_frames: int = DEFAULT_CHUNK_FRAMES):
        super().__init__()
        self.config = config
        self.models = models
        self.make_propagator = make_propagator
        self.chunk_frames = chunk_frames

    def start(self, run_name: str | None, ontology: Ontology, threshold: float, *, upload: str | None = None,
              clip_path: str | None = None, keyframe_every: int = TrackConfig.keyframe_every,
              fps: float | None = None) -> VideoJob:
        """Track ``ontology``'s classes through an uploaded clip or one on the server into run
        ``run_name`` (a new run, or the same set-up again, which resumes it)."""
        self._check_idle()
        name = sanitize_run_name(run_name) if (run_name or "").strip() else time.strftime("video-%Y%m%d-%H%M%S")
        if bool(upload) == bool((clip_path or "").strip()):
            raise ConfigError("upload a clip or enter a clip on the server (one of them)")
        selection = FrameSelection(fps=float(fps) if fps else None)
        track = TrackConfig(keyframe_every=_whole(keyframe_every, "keyframe interval"))
        clip = server_clip(clip_path, self.config.allow_folders) if clip_path else None
        if upload and not is_readable_video(upload):
            raise ConfigError("the upload is not a video file this server can read (mp4, mov, mkv, webm, avi)")
        folder = run_dir(self.config.runs_dir, name)
        if (folder / IMAGE_DB_NAME).exists():
            raise ConfigError(f"run {name} holds images: choose another name for the clip's run")
        labeler = self._labeler(ontology, threshold)
        if upload:
            clip = copy_uploads([upload], folder / CLIP_FOLDER)[0]
        return self._start(name, folder, labeler, VideoSource(clip), selection, track)

    def resume(self, run: str | None) -> VideoJob:
        """Go on with a stopped run: its stored classes, thresholds, clip and frame choice."""
        self._check_idle()
        folder = video_run_dir(self.config.runs_dir, run)
        with open_video_store(folder) as store:
            stored = store.config
        if not stored:
            raise ConfigError(f"run {run} has no configuration yet")
        clip = Path(stored["video"]["source"])
        if not any(is_within(clip, root) for root in (folder / CLIP_FOLDER, *self.config.allow_folders)):
            raise ConfigError(f"run {run} was made from a clip this UI may not read: resume it on the command line")
        try:
            self.models.catalog.checkpoint(str(stored["model"]))
        except ConfigError:
            raise ConfigError(f"run {run} was made with a detector this UI does not list") from None
        labeler = self._labeler(Ontology.from_data(stored["ontology"]), 0.0, detect=stored.get("detect"),
                                model=str(stored["model"]))
        video = stored["video"]
        return self._start(run, folder, labeler, VideoSource(clip), FrameSelection(**video["selection"]),
                           TrackConfig(**video["track"]))

    @contextmanager
    def editing(self, run: str | None):
        """The store of video run ``run`` for one edit; refused while this UI labels that run (its
        tracker hands out track ids of its own)."""
        job = self._current
        if job is not None and job.running and job.run == run:
            raise ConfigError(f"run {run} is being labelled: stop it or wait for it before editing its tracks")
        with open_video_run(self.config.runs_dir, run) as store:
            yield store

    # -- internals ------------------------------------------------------------------------------------

    def _labeler(self, ontology: Ontology, threshold: float, **kwargs):
        # The detector labels keyframes; its own masks when it makes them (SAM 3), else SAM2 video's.
        mode = "segment" if self.models.makes_masks(kwargs.get("model")) else "detect"
        return make_labeler(self.config, self.models, ontology, mode, threshold, **kwargs)

    def loads_models(self) -> bool:
        """Whether a clip started now loads a model first, the selected detector or the video
        model (the tab then says so while it waits)."""
        loads_video = self.make_propagator is None and not self.models.is_loaded("video")
        return loads_video or not self.models.is_loaded("detector")

    def _propagator(self):
        if self.make_propagator is not None:
            return self.make_propagator(), None
        return self.models.video_model.fresh(), self.models.sam_model

    def _start(self, name: str, folder: Path, labeler, source: VideoSource, selection: FrameSelection,
               track: TrackConfig) -> VideoJob:
        propagator, propagator_name = self._propagator()
        job = VideoJob(name, clip=source.path.name, total=selection.estimate(source.info))
        return self._launch(job, self._run, folder, labeler, source, propagator, propagator_name, selection, track)

    def _run(self, job: VideoJob, on_total, on_progress, folder: Path, labeler, source, propagator,
             propagator_name, selection, track) -> None:
        from autolabel.video.run import track_video

        with open_video_store(folder) as store:
            job.summary = track_video(source, labeler, propagator, store, selection=selection, config=track,
                                      chunk_frames=self.chunk_frames, propagator_name=propagator_name,
                                      progress=lambda position: on_progress(1))


def _whole(value, what: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0.5
    if not math.isfinite(number) or number != int(number) or number < 1:
        raise ConfigError(f"the {what} must be a whole number of at least 1, got {value!r}")
    return int(number)


# -- what the tab shows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoView:
    """A video run as the tab shows it: ``frames`` labelled (the scrubber's range), class names,
    tracks, and whether the labelling has finished."""

    frames: int
    names: list[str]
    tracks: list[StoredTrack]
    frame_indices: list[int]  # the source frame number of each position
    finished: bool
    clip: str

    def track_rows(self) -> list[list]:
        """The track table: id, class, frames, first and last frame (source numbers), review."""
        return [[t.id, self.names[t.track.class_id], t.frames, self.frame_indices[t.track.first],
                 self.frame_indices[t.track.last], t.review + (" (edited)" if t.edited else "")]
                for t in self.tracks]

    def track_choices(self) -> list[tuple[str, int]]:
        return [(f"{t.id} · {self.names[t.track.class_id]}", t.id) for t in self.tracks]

    def summary(self) -> str:
        reviewed = sum(1 for t in self.tracks if t.review != "pending")
        state = "" if self.finished else " · not finished (Resume continues)"
        return (f"**{html.escape(self.clip)}** · {self.frames} frames labelled · {len(self.tracks)} tracks "
                f"({reviewed} reviewed){state}")


def view_run(store: VideoStore) -> VideoView:
    config = store.config or {}
    names = Ontology.from_data(config["ontology"]).names if config else []
    frames = store.frames()
    clip = Path(config.get("video", {}).get("source", "")).name
    return VideoView(len(frames), names, store.tracks(), [f.index for f in frames], store.finished, clip)


def render_frame(store: VideoStore, position: int, *, side: int = 1024, selected: int | None = None):
    """Frame ``position`` of the run, display size, with its tracks drawn (masks, boxes and
    ``#track class score``; rejected tracks grey and dashed, ``selected`` thick). Returns
    ``(image, caption)``."""
    from PIL import Image

    from autolabel.ui.draw import detection_shapes, draw_shapes

    frames = store.frames()
    if not frames:
        raise StoreError("the run has no labelled frames yet")
    position = min(max(int(position), 0), len(frames) - 1)
    stored = frames[position]
    config = store.config
    source = VideoSource(config["video"]["source"])
    frame = source.frame_at(stored.index, stored.timestamp)
    image, scale = display_copy(Image.fromarray(frame.pixels), side)
    dets, track_ids = store.labels(position, include_rejected=True)
    # Drawn as "#<track id>": the number the track table and the edits use.
    dets = dataclasses.replace(dets, ids=track_ids)
    names = Ontology.from_data(config["ontology"]).names
    drawn = draw_shapes(image, detection_shapes(dets, names, selected), scale)
    caption = (f"frame {stored.index} · {stored.timestamp:.2f} s · {len(track_ids)} tracks"
               + (" · keyframe" if stored.keyframe else ""))
    return drawn, caption


def edit_track(store: VideoStore, action: str, track_id, *, other=None, class_name: str | None = None,
               position: int | None = None) -> str:
    """One track edit from the tab (each one durable transaction); returns what was done, in words.
    ``action``: accept, reject, reset, class, delete, split (at frame ``position``) or merge
    (``other`` into ``track_id``)."""
    track_id = _track_id(track_id)
    if action in REVIEWS:
        store.set_track_review(track_id, REVIEWS[action])
        return f"track {track_id}: {REVIEWS[action]}"
    if action == "class":
        names = view_run(store).names
        if class_name not in names:
            raise ConfigError(f"choose one of the run's classes ({', '.join(names)})")
        store.set_track_class(track_id, names.index(class_name))
        return f"track {track_id} is now {class_name}"
    if action == "delete":
        store.delete_track(track_id)
        return f"track {track_id} deleted"
    if action == "split":
        if position is None:
            raise ConfigError("scrub to the frame where the second track should start")
        new_id = store.split_track(track_id, int(position))
        return f"track {track_id} split: from this frame on it is track {new_id}"
    if action == "merge":
        other = _track_id(other, "the track to merge into it")
        store.merge_tracks(track_id, other)
        return f"track {other} merged into track {track_id}"
    raise ConfigError(f"unknown track edit {action!r}")


def _track_id(value, what: str = "a track") -> int:
    try:
        if value is None or isinstance(value, bool):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"choose {what} first") from None
