from __future__ import annotations

import numpy as np
import pytest

from autolabel.errors import AutolabelError, ConfigError
from autolabel.geometry import Size
from autolabel.testing.video_scenes import (GREEN, RED, Scene, Shape, color_mask, mask_box, two_movers, write_clip,
                                             write_frame_folder)
from autolabel.video.decode import FrameSelection, VideoLoadError, VideoSource, is_readable_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "movers.mp4", two_movers())


def test_streams_every_frame_with_timestamps_and_sizes(clip):
    source = VideoSource(clip)
    assert source.info.size == Size(96, 64)
    assert source.info.fps == pytest.approx(10)
    frames = list(source.frames())
    assert [f.index for f in frames] == list(range(12))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10 for i in range(12)])
    # Lossless x264 round trip: the red box is where the scene put it.
    assert mask_box(color_mask(frames[3].pixels, RED)) == (10.0, 8.0, 26.0, 20.0)
    assert source.stopped_early is None


def test_frames_are_a_stream_not_a_list(clip):
    frames = VideoSource(clip).frames()
    assert next(iter(frames)).index == 0  # a generator: nothing decoded beyond what is asked


@pytest.mark.parametrize("rotation, expected_size", [(90, Size(64, 96)), (-90, Size(64, 96)), (180, Size(96, 64))])
def test_rotation_metadata_is_applied_like_exif(tmp_path, rotation, expected_size):
    scene = Scene(Size(96, 64), (Shape(RED, 0, 0, 8, 8),), 2)  # red box at the top-left corner
    source = VideoSource(write_clip(tmp_path / "rot.mp4", scene, rotation=rotation))
    assert source.info.size == expected_size
    assert source.info.rotation == rotation % 360
    pixels = next(iter(source.frames())).pixels
    assert (pixels.shape[1], pixels.shape[0]) == expected_size
    # counter-clockwise 90: the top-left corner goes to the bottom-left; -90: to the top-right.
    corner = {90: (0, 88, 8, 96), -90: (56, 0, 64, 8), 180: (88, 56, 96, 64)}[rotation]
    assert mask_box(color_mask(pixels, RED)) == corner


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize("hflip, vflip", [(False, False), (True, False), (False, True), (True, True)])
def test_all_eight_orientations(tmp_path, rotation, hflip, vflip):
    """Each display matrix (rotation, then mirrors) gives the frame a player shows."""
    scene = Scene(Size(48, 32), (Shape(RED, 0, 0, 8, 8), Shape(GREEN, 40, 0, 8, 8)), 1)
    path = write_clip(tmp_path / "o.mp4", scene, rotation=rotation, hflip=hflip, vflip=vflip)
    expected = np.rot90(scene.pixels(0), k=rotation // 90)
    expected = expected[::-1] if vflip else expected
    expected = expected[:, ::-1] if hflip else expected
    pixels = next(iter(VideoSource(path).frames())).pixels
    assert pixels.shape == expected.shape
    for color in (RED, GREEN):
        assert mask_box(color_mask(pixels, color)) == mask_box(color_mask(expected, color))


def test_variable_frame_rate_keeps_real_times_and_fps_selection_uses_them(tmp_path):
    scene = Scene(Size(32, 32), (Shape(GREEN, 0, 0, 4, 4, dx=1),), 8)
    # frame times (rate 10): 0, .1, .2, .5, .6, .7, 1.0, 1.1
    path = write_clip(tmp_path / "vfr.mkv", scene, pts_steps=[1, 1, 3, 1, 1, 3, 1, 1])
    frames = list(VideoSource(path).frames())
    assert [f.timestamp for f in frames] == pytest.approx([0, .1, .2, .5, .6, .7, 1.0, 1.1])
    picked = list(VideoSource(path).frames(FrameSelection(fps=2)))  # one per half second
    assert [f.index for f in picked] == [0, 3, 6]


def test_every_n(clip):
    assert [f.index for f in VideoSource(clip).frames(FrameSelection(every=5))] == [0, 5, 10]


@pytest.mark.parametrize("kwargs", [dict(fps=1, every=2), dict(fps=0), dict(every=0), dict(every=1.5)])
def test_bad_selection_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        FrameSelection(**kwargs)


def test_frame_folder_is_a_video(tmp_path):
    folder = write_frame_folder(tmp_path / "frames", two_movers(frames=4))
    (folder / "notes.txt").write_text("ignored")
    source = VideoSource(folder, folder_fps=5)
    frames = list(source.frames())
    assert source.is_folder and source.info.frame_count == 4
    assert [f.timestamp for f in frames] == pytest.approx([0, .2, .4, .6])
    assert mask_box(color_mask(frames[2].pixels, RED)) == (8.0, 8.0, 24.0, 20.0)


def test_frame_folder_with_a_broken_frame_ends_at_it(tmp_path):
    folder = write_frame_folder(tmp_path / "frames", two_movers(frames=4))
    (folder / "frame_0002.png").write_bytes(b"\x89PNG broken")
    source = VideoSource(folder)
    assert [f.index for f in source.frames()] == [0, 1]
    assert "frame_0002.png" in source.stopped_early


def _audio_only(path):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("case", ["empty", "text", "truncated_header", "audio_only", "missing"])
def test_unreadable_inputs_are_one_line_errors(tmp_path, clip, case):
    path = tmp_path / "bad.mp4"
    if case == "empty":  # a zero-length file
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("not a video at all\n" * 10)
    elif case == "truncated_header":  # the first bytes of a real clip only
        path.write_bytes(clip.read_bytes()[:200])
    elif case == "audio_only":
        path = _audio_only(tmp_path / "audio.m4a")
    else:
        path = tmp_path / "missing.mp4"
    with pytest.raises(VideoLoadError) as info:
        list(VideoSource(path).frames())
    assert isinstance(info.value, AutolabelError)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("damage", ["cut", "zeroed"])
def test_damaged_data_mid_clip_ends_the_clip_cleanly(tmp_path, damage):
    good = write_clip(tmp_path / "good.mkv", two_movers(frames=30))
    data = bytearray(good.read_bytes())
    middle = len(data) // 2
    if damage == "cut":  # a download that stopped half way
        del data[middle:]
    else:
        data[middle:middle + 300] = bytes(300)
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(data))
    frames = list(VideoSource(bad).frames())
    assert 0 < len(frames) < 30
    assert all(f.pixels.shape == (64, 96, 3) for f in frames)


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_frame_at_seeks_to_the_frame_the_stream_gives(tmp_path, codec):
    """Seeking (key frames every 4 frames here) lands on the same pixels as decoding from the start."""
    scene = two_movers(frames=12)
    path = tmp_path / f"clip-{codec}.mp4"
    write_clip(path, scene, codec=codec, gop=4)
    source = VideoSource(path)
    streamed = list(source.frames(FrameSelection(every=3)))
    for frame in reversed(streamed):
        found = source.frame_at(frame.index, frame.timestamp)
        assert found.index == frame.index and np.array_equal(found.pixels, frame.pixels)


def test_frame_at_in_a_frame_folder(tmp_path):
    source = VideoSource(write_frame_folder(tmp_path / "frames", two_movers(frames=5)))
    last = list(source.frames())[-1]
    assert np.array_equal(source.frame_at(4, last.timestamp).pixels, last.pixels)
    with pytest.raises(VideoLoadError, match="no frame 5"):
        source.frame_at(5, 0.0)


def test_readable_video_by_name_and_content(tmp_path, clip):
    renamed = tmp_path / "clip.txt"
    renamed.write_bytes(clip.read_bytes())
    page = tmp_path / "page.mp4"
    page.write_text("<html><script>alert(1)</script></html>")
    assert is_readable_video(clip)
    assert not is_readable_video(renamed)  # content alone is not enough
    assert not is_readable_video(page)  # nor is the name
    assert not is_readable_video(_audio_only(tmp_path / "audio.mp4"))
