"""Tracks from keyframe detections and propagated masks (``--mode track``).

On a keyframe the detector's labels are matched to the live tracks by the IoU of each track's
propagated mask with each detection's mask (or of their boxes, when the detector makes no masks):
greedily, best pair first, above ``TrackConfig.match_iou``. A matched track goes on; an
unmatched detection starts a new track (a new id, followed by the propagator from its box). Between
keyframes the propagator alone moves the masks; a track whose mask comes back empty is lost and ends
for good (a later detection of the same object starts a new track). Boxes are the masks' tight boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from autolabel.detections import Detections
from autolabel.errors import ConfigError
from autolabel.geometry import Size, box_iou, box_to_rle, mask_to_rle, rle_to_mask
from autolabel.video.decode import Frame
from autolabel.models.sam2_video import Propagator


@dataclass(frozen=True)
class TrackConfig:
    """``keyframe_every``: run the detector on every K-th selected frame (the first one always);
    ``match_iou``: the least mask IoU at which a detection continues a track."""

    keyframe_every: int = 10
    match_iou: float = 0.3

    def __post_init__(self) -> None:
        if isinstance(self.keyframe_every, bool) or not isinstance(self.keyframe_every, int) or self.keyframe_every < 1:
            raise ConfigError(f"--keyframe-every must be a positive integer, got {self.keyframe_every!r}")
        if not 0 < self.match_iou <= 1:
            raise ConfigError(f"match IoU must be in (0, 1], got {self.match_iou!r}")

    def is_keyframe(self, position: int) -> bool:
        return position % self.keyframe_every == 0

    def to_dict(self) -> dict:
        return {"keyframe_every": self.keyframe_every, "match_iou": self.match_iou}


@dataclass
class Track:
    """One object followed through the clip; ``first``/``last``: positions (selected-frame numbers)."""

    id: int
    class_id: int
    score: float
    first: int
    last: int
    prompt_id: int = -1


@dataclass
class FrameLabels:
    """The labels of one selected frame: ``position`` counts selected frames from 0;
    ``detections`` carry masks (RLE) and ``track_ids`` is aligned with them."""

    position: int
    index: int
    timestamp: float
    size: Size
    detections: Detections
    track_ids: np.ndarray
    keyframe: bool = False


@dataclass
class Tracker:
    """Turns a stream of frames (+ keyframe detections) into ``FrameLabels`` with stable track ids.
    Its state (live tracks, next id) is carried from chunk to chunk; ``resume`` restores it."""

    propagator: Propagator
    config: TrackConfig = field(default_factory=TrackConfig)
    live: dict[int, Track] = field(default_factory=dict)
    next_id: int = 1

    def step(self, position: int, frame: Frame, detections: Detections | None) -> FrameLabels:
        """Labels of ``frame`` (the next selected frame); ``detections``: the detector's on a keyframe."""
        masks = self.propagator.propagate(frame)
        lost = [tid for tid in self.live if not masks.get(tid, np.zeros(0, bool)).any()]
        self._end(lost)
        masks = {tid: masks[tid] for tid in self.live}
        if detections is not None and len(detections):
            masks.update(self._absorb(position, frame, detections, masks))
        for tid in masks:
            self.live[tid].last = position
        return self._labels(position, frame, masks, keyframe=detections is not None)

    def resume(self, position: int, frame: Frame, tracks: list[Track], boxes: dict[int, np.ndarray],
               next_id: int) -> None:
        """Continue after a stop: ``tracks`` were live at ``position`` (a frame already stored) with
        ``boxes`` there; they are followed again from that frame."""
        self.propagator.propagate(frame)
        self.live = {t.id: t for t in tracks}
        self.next_id = next_id
        self.propagator.add(frame, boxes)

    # -- internals ------------------------------------------------------------------------------------

    def _absorb(self, position: int, frame: Frame, dets: Detections, masks: dict[int, np.ndarray]):
        """Match detections to the live tracks; start a track for each unmatched one."""
        track_ids = list(masks)
        pairs = []
        for t, tid in enumerate(track_ids):
            for d, iou in enumerate(self._overlaps(masks[tid], dets, frame)):
                if iou >= self.config.match_iou:
                    pairs.append((iou, t, d))
        used_tracks, used_dets = set(), set()
        for iou, t, d in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
            if t in used_tracks or d in used_dets:
                continue
            used_tracks.add(t)
            used_dets.add(d)
            self.live[track_ids[t]].score = float(dets.scores[d])
        new_boxes = {}
        for d in range(len(dets)):
            if d in used_dets:
                continue
            tid = self.next_id
            self.next_id += 1
            self.live[tid] = Track(tid, int(dets.class_ids[d]), float(dets.scores[d]), position, position,
                                   int(dets.prompt_ids[d]))
            new_boxes[tid] = dets.xyxy[d]
        added = self.propagator.add(frame, new_boxes)
        empty = [tid for tid in new_boxes if not added.get(tid, np.zeros(0, bool)).any()]
        self._end(empty)  # the propagator found nothing in the box: no track
        for tid in empty:
            added.pop(tid, None)
        return added

    @staticmethod
    def _overlaps(mask: np.ndarray, dets: Detections, frame: Frame) -> np.ndarray:
        """IoU of a propagated mask with each detection: mask to mask where the detector made masks,
        else the mask's box to the detection's box (a box-shaped mask would never match a thin object)."""
        if dets.masks is None:
            return box_iou(np.array([_tight_box(mask)]), dets.xyxy)[0]
        height, width = frame.pixels.shape[:2]
        return np.array([_iou(mask, rle_to_mask(rle if rle is not None else box_to_rle(box, height, width)))
                         for rle, box in zip(dets.masks, dets.xyxy)])

    def _end(self, track_ids) -> None:
        if track_ids:
            self.propagator.forget(track_ids)
            for tid in track_ids:
                self.live.pop(tid, None)

    def _labels(self, position: int, frame: Frame, masks: dict[int, np.ndarray], keyframe: bool) -> FrameLabels:
        ids = sorted(masks)
        tracks = [self.live[tid] for tid in ids]
        xyxy = np.array([_tight_box(masks[tid]) for tid in ids], dtype=np.float64).reshape(-1, 4)
        dets = Detections(
            xyxy, np.array([t.score for t in tracks], dtype=np.float64), np.array([t.class_id for t in tracks]),
            np.array([t.prompt_id for t in tracks]), [mask_to_rle(masks[tid]) for tid in ids] if ids else None,
        )
        return FrameLabels(position, frame.index, frame.timestamp, frame.size, dets, np.array(ids, dtype=np.int64),
                           keyframe)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / union if union else 0.0


def _tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Pixel-edge box of a non-empty mask (the frame of every box in the program)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)
