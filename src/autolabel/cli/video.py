"""``autolabel label --mode track``: label video files (or folders of numbered frames) with tracks,
one run folder per clip; and the export of such runs.

``label`` builds the detector's ``Labeler`` (its classes, thresholds, device and precision) and
calls ``label_videos``; ``track_options`` adds the video options to a click command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from autolabel.errors import ConfigError
from autolabel.video.decode import DEFAULT_FOLDER_FPS, FrameSelection, VideoLoadError, VideoSource, is_video_file
from autolabel.video.run import DEFAULT_CHUNK_FRAMES, VideoRunSummary
from autolabel.video.track import TrackConfig


def track_options(command):
    """The options of ``--mode track`` (added to ``autolabel label``)."""
    options = [
        click.option("--fps", "video_fps", type=float, default=None,
                     help="--mode track: label at most this many frames per second of video time."),
        click.option("--every", "video_every", type=int, default=None,
                     help="--mode track: label every N-th decoded frame (not with --fps)."),
        click.option("--keyframe-every", type=int, default=TrackConfig.keyframe_every, show_default=True,
                     help="--mode track: run the detector on every K-th labelled frame; SAM2 propagates between."),
        click.option("--video", "frame_folders", is_flag=True,
                     help="--mode track: folder inputs are videos given as numbered frames (000001.jpg, ...)."),
        click.option("--video-model", default=None,
                     help="--mode track: SAM2, EdgeTAM or SAM 3 tracker video checkpoint (default: --sam-model's)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@dataclass(frozen=True)
class VideoJob:
    source: Path
    run_dir: Path


def plan_videos(inputs, out_dir: str | Path, *, frame_folders: bool) -> list[VideoJob]:
    """The clips of ``inputs`` and the run folder of each: ``out_dir`` itself for one clip, else
    ``out_dir/<clip name>``. Folders are frame folders with ``frame_folders``, else searched (not
    recursively) for video files."""
    clips: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir() and not frame_folders:
            clips.extend(sorted(p for p in item.iterdir() if p.is_file() and is_video_file(p)))
        else:
            clips.append(item)
    if not clips:
        raise ConfigError("no video files among the inputs (mp4, mov, mkv, webm, avi; --video for frame folders)")
    names = [c.stem if c.is_file() else c.name for c in clips]
    if len(set(names)) != len(names):
        raise ConfigError("two inputs have the same name; label them into separate --out folders")
    out_dir = Path(out_dir)
    if len(clips) == 1:
        return [VideoJob(clips[0], out_dir)]
    return [VideoJob(clip, out_dir / name) for clip, name in zip(clips, names)]


def label_videos(inputs, out_dir: str | Path, labeler, *, video_model: str | None = None,
                 video_fps: float | None = None, video_every: int | None = None,
                 keyframe_every: int = TrackConfig.keyframe_every, frame_folders: bool = False,
                 folder_fps: float = DEFAULT_FOLDER_FPS, chunk_frames: int = DEFAULT_CHUNK_FRAMES, make_propagator=None, quiet: bool = False,
                 echo=click.echo) -> list[tuple[VideoJob, VideoRunSummary | None]]:
    """Track ``labeler``'s classes through every clip of ``inputs`` (resuming finished chunks).

    ``make_propagator``: makes a ``models.sam2_video.Propagator`` (called once per clip), else
    ``video_model`` (a SAM2 video checkpoint; default ``labeler.sam_model`` or the settings' SAM
    model) loaded once on the labeler's device. Clips that cannot be read are reported and skipped.
    """
    from autolabel.video.run import track_video
    from autolabel.video.store import open_video_store

    selection = FrameSelection(fps=video_fps, every=video_every)
    config = TrackConfig(keyframe_every=keyframe_every)
    jobs = plan_videos(inputs, out_dir, frame_folders=frame_folders)
    propagator_name = None
    if make_propagator is None:
        make_propagator, propagator_name = _sam2_video(labeler, video_model)
    results = []
    for job in jobs:
        try:
            source = VideoSource(job.source, folder_fps=folder_fps)
        except VideoLoadError as exc:
            echo(f"  failed: {exc}", err=True)
            results.append((job, None))
            continue
        with open_video_store(job.run_dir) as store, _progress(source, selection, quiet) as bar:
            summary = track_video(source, labeler, make_propagator(), store, selection=selection, config=config,
                                  chunk_frames=chunk_frames, propagator_name=propagator_name,
                                  progress=lambda position: bar.update(1))
        results.append((job, summary))
        note = f" (resumed after frame {summary.resumed_at})" if summary.resumed_at is not None else ""
        echo(f"{job.source}: {summary.frames} frames labelled{note}, {summary.tracks} tracks -> {job.run_dir}")
        if summary.stopped_early:
            echo(f"  stopped early: {summary.stopped_early}", err=True)
    return results


def export_video(run_dir: str | Path, fmt: str, out_dir: str | Path, echo=click.echo) -> Path:
    """``autolabel export`` of a video run (``video.store.is_video_run``): mot, cvat-video,
    coco-video or yolo-video."""
    from autolabel.video.export import export_video_run

    path = export_video_run(run_dir, fmt, out_dir)
    echo(f"exported {fmt} to {path}")
    return path


def _sam2_video(labeler, video_model: str | None):
    """A factory of SAM2 video propagators sharing one loaded model (sessions are per clip)."""
    from autolabel.settings import load_settings, resolve_device
    from autolabel.models.sam2_video import Sam2VideoPropagator

    name = video_model or labeler.sam_model or load_settings().sam_model
    loaded = Sam2VideoPropagator.from_pretrained(name, resolve_device(labeler.device), labeler.precision)
    return loaded.fresh, name


def _progress(source: VideoSource, selection: FrameSelection, quiet: bool):
    from tqdm import tqdm

    total = selection.estimate(source.info)  # containers may not say, or be wrong
    return tqdm(total=total, disable=quiet, unit="frame", desc=source.path.name, dynamic_ncols=True)
