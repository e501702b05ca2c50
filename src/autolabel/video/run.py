"""Label one video into its run folder: decode -> (detector on keyframes, through the one engine) ->
tracker -> store, one transaction per chunk of frames.

Frames stream from the decoder and are dropped once tracked; only a chunk's labels wait in memory.
After a stop (even kill -9) the same call resumes: frames up to the last committed chunk are decoded
and skipped, the tracks live on its last frame are followed again from their stored boxes, and the
run goes on with the same track ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from autolabel.errors import ConfigError
from autolabel.video.decode import FrameSelection, VideoSource
from autolabel.models.sam2_video import Propagator
from autolabel.video.store import VideoStore
from autolabel.video.track import FrameLabels, Track, TrackConfig, Tracker

log = logging.getLogger(__name__)

DEFAULT_CHUNK_FRAMES = 32


@dataclass(frozen=True)
class VideoRunSummary:
    frames: int  # frames labelled in this call
    tracks: int  # tracks in the run
    resumed_at: int | None  # the committed position this call continued after, None for a fresh start
    stopped_early: str | None


def track_video(source: VideoSource, labeler, propagator: Propagator, store: VideoStore, *,
                selection: FrameSelection | None = None, config: TrackConfig | None = None,
                chunk_frames: int = DEFAULT_CHUNK_FRAMES, propagator_name: str | None = None,
                progress: Callable[[int], None] | None = None) -> VideoRunSummary:
    """Track ``labeler``'s classes through ``source`` into ``store`` (resuming what it holds)."""
    if chunk_frames < 1:
        raise ConfigError(f"chunk_frames must be positive, got {chunk_frames!r}")
    selection = selection or FrameSelection()
    config = config or TrackConfig()
    store.bind_config(run_config(labeler, source, selection, config, propagator_name))
    if store.finished:
        return VideoRunSummary(0, len(store.tracks()), store.committed, None)
    tracker = Tracker(propagator, config)
    resume_at = store.committed
    chunk: list[FrameLabels] = []
    touched: dict[int, Track] = {}
    labelled = 0
    for position, frame in enumerate(source.frames(selection)):
        if position < resume_at:
            continue
        if position == resume_at:
            _resume(tracker, store, position, frame)
            continue
        detections = labeler.label_images([frame.pixels])[0] if config.is_keyframe(position) else None
        labels = tracker.step(position, frame, detections)
        touched.update({tid: tracker.live[tid] for tid in labels.track_ids.tolist()})
        chunk.append(labels)
        labelled += 1
        if progress is not None:
            progress(position)
        if len(chunk) >= chunk_frames:
            store.write_chunk(chunk, list(touched.values()))
            chunk, touched = [], {}
    store.write_chunk(chunk, list(touched.values()))
    store.mark_finished(source.stopped_early)
    return VideoRunSummary(labelled, len(store.tracks()), resume_at if resume_at >= 0 else None,
                           source.stopped_early)


def run_config(labeler, source: VideoSource, selection: FrameSelection, config: TrackConfig,
               propagator_name: str | None) -> dict:
    """What identifies a video run: the engine's config plus the clip, frame choice and tracking."""
    return {
        **labeler.run_config(),
        "video": {"source": str(source.path), "selection": selection.to_dict(), "track": config.to_dict(),
                  "propagator": propagator_name},
    }


def _resume(tracker: Tracker, store: VideoStore, position: int, frame) -> None:
    dets, track_ids = store.labels(position, include_rejected=True)
    live = {s.id: s.track for s in store.tracks() if s.track.last == position and not s.edited}
    boxes = {tid: dets.xyxy[i] for i, tid in enumerate(track_ids.tolist()) if tid in live}
    log.info("resuming after frame position %d with %d live tracks", position, len(boxes))
    tracker.resume(position, frame, [live[tid] for tid in boxes], boxes, store.next_track_id())

