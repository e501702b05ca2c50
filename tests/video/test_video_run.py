"""A video run into its store: chunks, configuration binding, resume after kill -9."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from autolabel.errors import StoreError
from autolabel.testing.video_scenes import label_clip, two_movers, write_frame_folder
from autolabel.video.decode import FrameSelection
from autolabel.video.store import open_video_store


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_frame_folder(tmp_path_factory.mktemp("clip") / "frames", two_movers(frames=14, late_first=5))


label = label_clip


def contents(run_dir):
    with open_video_store(run_dir) as store:
        frames = store.frames()
        labels = [store.labels(f.position) for f in frames]
        return (frames, store.tracks(),
                [(d.xyxy.tolist(), d.class_ids.tolist(), ids.tolist(), d.masks) for d, ids in labels])


def test_a_run_stores_frames_tracks_and_labels(clip, tmp_path):
    summary = label(clip, tmp_path / "run")
    assert summary.frames == 14 and summary.tracks == 3 and summary.resumed_at is None
    with open_video_store(tmp_path / "run") as store:
        assert store.finished and store.committed == 13
        frames = store.frames()
        assert [f.index for f in frames] == list(range(14))
        assert frames[1].timestamp == pytest.approx(1 / 30) and frames[0].size == (96, 64)
        assert [f.keyframe for f in frames] == [p % 4 == 0 for p in range(14)]
        tracks = {s.id: (s.track.class_id, s.track.first, s.track.last, s.review) for s in store.tracks()}
        assert tracks == {1: (0, 0, 13, "pending"), 2: (1, 0, 13, "pending"), 3: (2, 8, 13, "pending")}
        dets, ids = store.labels(9)
        assert ids.tolist() == [1, 2, 3]
        np.testing.assert_allclose(dets.xyxy[0], two_movers().shapes[0].box(9))
        assert dets.masks is not None and dets.masks[0]["size"] == [64, 96]
        store.set_track_review(3, "rejected")
        assert store.labels(9)[1].tolist() == [1, 2]
        with pytest.raises(StoreError):
            store.set_track_review(99, "accepted")
    # A finished run is not labelled again.
    assert label(clip, tmp_path / "run").frames == 0


def test_another_configuration_is_refused(clip, tmp_path):
    label(clip, tmp_path / "run")
    with pytest.raises(StoreError):
        label(clip, tmp_path / "run", selection=FrameSelection(every=2))


_KILLED_RUN = """
import os, signal
from autolabel.testing.video_scenes import label_clip as label
from pathlib import Path

def die(position):
    if position == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)

label(Path({clip!r}), Path({run!r}), progress=die)
"""


def test_resume_after_kill_9_continues_at_the_last_committed_chunk(clip, tmp_path):
    label(clip, tmp_path / "whole")
    script = _KILLED_RUN.format(clip=str(clip), run=str(tmp_path / "cut"), kill_at=10)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    with open_video_store(tmp_path / "cut") as store:
        assert store.committed == 7 and not store.finished  # chunks of 4: positions 0-3, 4-7 committed
    summary = label(clip, tmp_path / "cut")
    assert summary.resumed_at == 7 and summary.frames == 6
    assert contents(tmp_path / "cut") == contents(tmp_path / "whole")
