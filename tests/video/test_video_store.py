"""Track edits in a video run's store: durable, checked, exported right, and kept by a resumed run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from autolabel.detections import Detections
from autolabel.errors import StoreError
from autolabel.testing.video_scenes import label_clip, two_movers, write_frame_folder
from autolabel.video.export import export_video_run
from autolabel.video.store import open_video_store
from autolabel.video.track import FrameLabels, Track


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_frame_folder(tmp_path_factory.mktemp("clip") / "frames", two_movers(frames=12, late_first=5))


@pytest.fixture
def run(clip, tmp_path):
    """Tracks 1 (red) and 2 (green) on positions 0-11, 3 (blue) on 8-11."""
    label_clip(clip, tmp_path / "run")
    return tmp_path / "run"


def spans(run_dir) -> dict[int, tuple]:
    with open_video_store(run_dir) as store:
        return {s.id: (s.track.class_id, s.track.first, s.track.last, s.review, s.edited, s.frames)
                for s in store.tracks()}


def ids_on(run_dir, position: int) -> list[int]:
    with open_video_store(run_dir) as store:
        return store.labels(position, include_rejected=True)[1].tolist()


def test_review_and_class_edits_last_and_mark_the_track_edited(run):
    with open_video_store(run) as store:
        store.set_track_review(1, "accepted")
        store.set_track_class(2, 2)
    assert spans(run) == {1: (0, 0, 11, "accepted", True, 12), 2: (2, 0, 11, "pending", True, 12),
                          3: (2, 8, 11, "pending", False, 4)}
    with open_video_store(run) as store:
        assert store.labels(5)[0].class_ids.tolist() == [0, 2]
        for bad in (3, -1, True, "1"):
            with pytest.raises(StoreError, match="class must be one of 0..2"):
                store.set_track_class(1, bad)
        with pytest.raises(StoreError, match="review must be"):
            store.set_track_review(1, "maybe")
        for edit in (lambda: store.set_track_review(9, "accepted"), lambda: store.set_track_class(9, 0),
                     lambda: store.delete_track(9), lambda: store.split_track(9, 3), lambda: store.merge_tracks(1, 9)):
            with pytest.raises(StoreError, match="no track 9"):
                edit()


def test_delete_removes_every_label_and_the_id_is_never_reused(run):
    with open_video_store(run) as store:
        store.delete_track(3)
        assert store.next_track_id() == 4  # 3 was the highest id
    assert set(spans(run)) == {1, 2}
    assert ids_on(run, 9) == [1, 2]


def test_split_moves_the_later_frames_to_a_new_track(run):
    with open_video_store(run) as store:
        store.set_track_review(1, "rejected")
        assert store.split_track(1, 5) == 4
        for position in (0, 12):  # nothing before the first frame / after the last one
            with pytest.raises(StoreError, match="no labels on one side"):
                store.split_track(2, position)
    tracks = spans(run)
    assert tracks[1] == (0, 0, 4, "rejected", True, 5) and tracks[4] == (0, 5, 11, "rejected", True, 7)
    assert ids_on(run, 4) == [1, 2] and ids_on(run, 5) == [2, 4]


def test_merge_joins_tracks_that_never_share_a_frame(run):
    with open_video_store(run) as store:
        store.split_track(1, 6)  # 1: 0-5, 4: 6-11
        with pytest.raises(StoreError, match="overlap in time"):
            store.merge_tracks(1, 2)
        with pytest.raises(StoreError, match="itself"):
            store.merge_tracks(1, 1)
        store.set_track_class(4, 1)
        store.merge_tracks(1, 4)
    tracks = spans(run)
    assert 4 not in tracks and tracks[1] == (0, 0, 11, "pending", True, 12)  # keeps its own class
    with open_video_store(run) as store:
        dets, ids = store.labels(8)
        assert ids.tolist() == [1, 2, 3] and dets.class_ids.tolist() == [0, 1, 2]
        assert store.next_track_id() == 5


def test_exports_follow_deleted_split_and_merged_tracks(run, tmp_path):
    with open_video_store(run) as store:
        store.split_track(1, 4)  # 1: 0-3, 4: 4-11
        store.delete_track(2)
        store.merge_tracks(1, 3)  # 1: 0-3 and 8-11 (a gap)
    mot = export_video_run(run, "mot", tmp_path / "mot")
    rows = [tuple(map(int, line.split(",")[:2])) for line in (mot / "gt" / "gt.txt").read_text().splitlines()]
    assert sorted({tid for _, tid in rows}) == [1, 4]
    assert [frame for frame, tid in rows if tid == 1] == [1, 2, 3, 4, 9, 10, 11, 12]
    assert [frame for frame, tid in rows if tid == 4] == list(range(5, 13))

    cvat = export_video_run(run, "cvat-video", tmp_path / "cvat")
    tracks = ET.parse(cvat / "annotations.xml").getroot().findall("track")
    assert len(tracks) == 2
    assert [(b.get("frame"), b.get("outside")) for b in tracks[0].findall("box")] == [
        ("0", "0"), ("1", "0"), ("2", "0"), ("3", "0"), ("4", "1"), ("8", "0"), ("9", "0"), ("10", "0"), ("11", "0")]
    assert [b.get("frame") for b in tracks[1].findall("box")] == [str(i) for i in range(4, 12)]

    coco = json.loads((export_video_run(run, "coco-video", tmp_path / "coco") / "annotations.json").read_text())
    assert [t["id"] for t in coco["tracks"]] == [1, 4]
    by_frame = {}
    for a in coco["annotations"]:
        by_frame.setdefault(a["image_id"] - 1, []).append(a["track_id"])
    assert by_frame[2] == [1] and by_frame[5] == [4] and by_frame[9] == [1, 4]


class Stop(Exception):
    pass


def stop_at(position: int):
    def progress(at: int) -> None:
        if at == position:
            raise Stop

    return progress


def test_a_resumed_run_keeps_edited_tracks_as_they_are(clip, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Stop):
        label_clip(clip, run, progress=stop_at(9))  # chunks of 4: positions 0-7 committed
    assert spans(run) == {1: (0, 0, 7, "pending", False, 8), 2: (1, 0, 7, "pending", False, 8)}
    with open_video_store(run) as store:
        before = store.labels(7)
        store.set_track_review(1, "accepted")
        store.delete_track(2)
    summary = label_clip(clip, run)
    assert summary.resumed_at == 7 and summary.frames == 4
    tracks = spans(run)
    # The edited track ends where the person saw it; the objects go on in new tracks from the next
    # keyframe (8); the deleted track's id is not given out again.
    assert tracks == {1: (0, 0, 7, "accepted", True, 8), 3: (0, 8, 11, "pending", False, 4),
                      4: (1, 8, 11, "pending", False, 4), 5: (2, 8, 11, "pending", False, 4)}
    with open_video_store(run) as store:
        after = store.labels(7)
        assert after[1].tolist() == [1] and after[0].xyxy.tolist() == before[0].xyxy[:1].tolist()
        store.merge_tracks(1, 3)  # what the person does next: one red track again
    assert spans(run)[1] == (0, 0, 11, "accepted", True, 12)


def test_a_run_never_writes_into_an_edited_track(run):
    """A chunk that still carries an edited or deleted track (a tracker that was running during the
    edit) leaves it as the person left it."""
    with open_video_store(run) as store:
        store.set_track_class(1, 2)
        store.delete_track(3)
        dets, ids = store.labels(11)
        frame = store.frames()[11]
        moved = dets.xyxy + 5
        changed = Detections(moved, dets.scores, dets.class_ids, dets.prompt_ids, dets.masks)
        tracks = {s.id: s.track for s in store.tracks()}
        ghost = Track(3, 2, 0.9, 8, 11)  # the deleted one
        store.write_chunk([FrameLabels(11, frame.index, frame.timestamp, frame.size, changed, ids, False)],
                          [tracks[1], tracks[2], ghost])
        after, after_ids = store.labels(11)
    assert after_ids.tolist() == [1, 2]
    assert after.xyxy[0].tolist() == dets.xyxy[0].tolist()  # edited: unchanged
    assert after.xyxy[1].tolist() == moved[1].tolist()  # the model's own track: rewritten
    assert set(spans(run)) == {1, 2}
