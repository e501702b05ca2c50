"""``cli/video.py``: the function ``autolabel label --mode track`` calls, its options, video export."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from autolabel.cli.video import export_video, label_videos, plan_videos, track_options
from autolabel.errors import ConfigError
from autolabel.ontology import Ontology
from autolabel.pipeline import Labeler
from autolabel.testing.video_scenes import (CLASSES_RGB, ONTOLOGY_RGB, ColorDetector, ColorPropagator, two_movers,
                                             write_clip, write_frame_folder)
from autolabel.video.store import open_video_store


def labeler(**kwargs) -> Labeler:
    return Labeler(Ontology.from_prompts(list(ONTOLOGY_RGB)), detector=ColorDetector(CLASSES_RGB), **kwargs)


def test_labels_each_clip_into_its_run_folder_and_skips_broken_ones(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "a.mp4", two_movers(frames=6))
    write_clip(clips / "b.mkv", two_movers(frames=8))
    (clips / "broken.mp4").write_bytes(b"\x00" * 100)
    (clips / "notes.txt").write_text("not a clip")
    lines = []
    results = label_videos([clips], tmp_path / "runs", labeler(), video_every=2, keyframe_every=2,
                           make_propagator=ColorPropagator, quiet=True, echo=lambda m, err=False: lines.append(m))
    assert [(job.source.name, summary is not None) for job, summary in results] == [
        ("a.mp4", True), ("b.mkv", True), ("broken.mp4", False)]
    with open_video_store(tmp_path / "runs" / "b") as store:
        assert [f.index for f in store.frames()] == [0, 2, 4, 6]
        assert store.config["video"]["selection"] == {"fps": None, "every": 2}
        assert store.config["video"]["track"]["keyframe_every"] == 2
    assert any("failed" in line and "broken.mp4" in line for line in lines)
    out = export_video(tmp_path / "runs" / "a", "mot", tmp_path / "mot", echo=lambda m: None)
    assert (out / "gt" / "gt.txt").read_text().startswith("1,1,")


def test_a_frame_folder_with_video_flag(tmp_path):
    folder = write_frame_folder(tmp_path / "seq", two_movers(frames=5))
    results = label_videos([folder], tmp_path / "run", labeler(), frame_folders=True, folder_fps=5,
                           make_propagator=ColorPropagator, quiet=True, echo=lambda m, err=False: None)
    assert results[0][0].run_dir == tmp_path / "run" and results[0][1].frames == 5
    with pytest.raises(ConfigError):  # without --video a folder is searched for video files
        plan_videos([folder], tmp_path / "run2", frame_folders=False)


def test_bad_frame_choice_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError):
        label_videos([tmp_path], tmp_path / "run", labeler(), video_fps=2, video_every=3,
                     make_propagator=ColorPropagator)


def test_track_options_parse():
    seen = {}

    @click.command()
    @track_options
    def command(**kwargs):
        seen.update(kwargs)

    result = CliRunner().invoke(command, ["--fps", "2.5", "--keyframe-every", "5", "--video", "--video-model", "m"])
    assert result.exit_code == 0, result.output
    assert seen == {"video_fps": 2.5, "video_every": None, "keyframe_every": 5, "frame_folders": True,
                    "video_model": "m"}


def test_with_the_sam2_video_model(tmp_path):
    """End to end with a tiny random SAM2 video checkpoint loaded by name (the real load path)."""
    from autolabel.testing.sam2_video_checkpoint import build_sam2_video_checkpoint

    checkpoint = build_sam2_video_checkpoint(tmp_path / "sam2-video")
    clip = write_clip(tmp_path / "clip.mp4", two_movers(frames=3))
    results = label_videos([clip], tmp_path / "run", labeler(device="cpu"), video_model=str(checkpoint),
                           keyframe_every=2, quiet=True, echo=lambda m, err=False: None)
    summary = results[0][1]
    assert summary.frames == 3
    with open_video_store(tmp_path / "run") as store:
        assert store.config["video"]["propagator"] == str(checkpoint)
        assert len(store.tracks()) >= 2  # random weights: masks are noise, but tracks start from the detections
