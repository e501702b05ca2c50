"""Track logic with a colour detector and a perfect colour propagator: the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.errors import ConfigError
from autolabel.geometry import Size
from autolabel.ontology import Ontology
from autolabel.pipeline import Labeler
from autolabel.testing.video_scenes import (BLUE, GREEN, RED, ColorDetector, ColorPropagator, Scene, Shape, two_movers,
                                             write_clip)
from autolabel.video.decode import Frame, FrameSelection, VideoSource
from autolabel.video.track import TrackConfig, Tracker

ONTOLOGY = Ontology.from_prompts(["red", "green", "blue"])
CLASSES = {RED: 0, GREEN: 1, BLUE: 2}


def labeler(with_masks: bool = False) -> Labeler:
    """The engine around the colour detector; ``with_masks``: a detector that makes masks (segment mode)."""
    return Labeler(ONTOLOGY, detector=ColorDetector(CLASSES, yields_masks=with_masks),
                   mode="segment" if with_masks else "detect")


def run(scene: Scene, keyframe_every: int, with_masks: bool = False):
    """Track ``scene`` frame by frame; keyframe detections go through the engine."""
    engine = labeler(with_masks)
    tracker = Tracker(ColorPropagator(), TrackConfig(keyframe_every=keyframe_every))
    out = []
    for position in range(scene.frames):
        frame = Frame(position, position / 10, scene.pixels(position))
        dets = engine.label_images([frame.pixels])[0] if tracker.config.is_keyframe(position) else None
        out.append(tracker.step(position, frame, dets))
    return out, tracker


def boxes_by_track(labels) -> dict[int, dict[int, np.ndarray]]:
    out: dict[int, dict[int, np.ndarray]] = {}
    for frame in labels:
        for i, tid in enumerate(frame.track_ids.tolist()):
            out.setdefault(tid, {})[frame.position] = frame.detections.xyxy[i]
    return out


@pytest.mark.parametrize("with_masks", [False, True], ids=["box-matching", "mask-matching"])
def test_ids_stay_stable_and_boxes_follow_the_motion(with_masks):
    scene = two_movers(frames=12, late_first=5)
    labels, _ = run(scene, keyframe_every=4, with_masks=with_masks)
    tracks = boxes_by_track(labels)
    red, green, blue = scene.shapes
    assert sorted(tracks) == [1, 2, 3]
    for tid, shape in ((1, red), (2, green)):
        assert sorted(tracks[tid]) == list(range(12))  # one id from the first frame to the last
        for position, box in tracks[tid].items():
            np.testing.assert_allclose(box, shape.box(position), atol=1)
    # The late object is picked up at the next keyframe (8) with a new id, and followed after it.
    assert sorted(tracks[3]) == [8, 9, 10, 11]
    for position, box in tracks[3].items():
        np.testing.assert_allclose(box, blue.box(position), atol=1)
    assert [f.keyframe for f in labels] == [p % 4 == 0 for p in range(12)]
    assert all(f.detections.masks is not None for f in labels)
    assert labels[0].detections.class_ids.tolist() == [0, 1]


def test_a_lost_track_ends_and_a_return_gets_a_new_id():
    # Red leaves after frame 3 and comes back at frame 6 elsewhere; keyframes 0, 3, 6.
    scene = Scene(Size(64, 48), (Shape(RED, 2, 2, 10, 10, dx=1, last=3), Shape(RED, 40, 30, 10, 10, first=6),
                                 Shape(GREEN, 30, 5, 8, 8)), 9)
    labels, tracker = run(scene, keyframe_every=3)
    tracks = boxes_by_track(labels)
    assert sorted(tracks[1]) == [0, 1, 2, 3]  # ended when its mask came back empty
    assert sorted(tracks[3]) == [6, 7, 8]
    assert sorted(tracks[2]) == list(range(9))
    assert 1 in tracker.propagator.forgotten and 1 not in tracker.live


def test_a_detection_matching_a_track_does_not_start_another():
    scene = two_movers(frames=9, late_first=100)
    labels, tracker = run(scene, keyframe_every=1)  # every frame a keyframe
    assert {tid for f in labels for tid in f.track_ids.tolist()} == {1, 2}
    assert tracker.next_id == 3


@pytest.mark.parametrize("kwargs", [dict(keyframe_every=0), dict(match_iou=0), dict(match_iou=1.5)])
def test_bad_track_config(kwargs):
    with pytest.raises(ConfigError):
        TrackConfig(**kwargs)


def test_tracks_through_a_decoded_clip(tmp_path):
    """The same answers through the decoder (lossless x264), with --every 2."""
    scene = two_movers(frames=12, late_first=5)
    source = VideoSource(write_clip(tmp_path / "movers.mp4", scene))
    engine, tracker = labeler(), Tracker(ColorPropagator(), TrackConfig(keyframe_every=2))
    labels = []
    for position, frame in enumerate(source.frames(FrameSelection(every=2))):
        dets = engine.label_images([frame.pixels])[0] if tracker.config.is_keyframe(position) else None
        labels.append(tracker.step(position, frame, dets))
    assert [f.index for f in labels] == [0, 2, 4, 6, 8, 10]
    tracks = boxes_by_track(labels)
    # blue appears at frame 5; the next keyframe is position 4 (frame 8)
    assert sorted(tracks) == [1, 2, 3] and sorted(tracks[3]) == [4, 5]
    for f in labels:
        red = f.detections.xyxy[f.track_ids.tolist().index(1)]
        np.testing.assert_allclose(red, scene.shapes[0].box(f.index), atol=1)
