"""The Video tab's engine (``ui/video.py``) with the controlled colour detector and propagator: runs
in the background on the shared model handles, stops and resumes, frames drawn with their tracks, and
track edits; uploads must be videos."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from autolabel.errors import AutolabelError, ConfigError
from autolabel.testing.video_scenes import CLASSES_RGB, ColorDetector, ColorPropagator, two_movers, write_clip
from autolabel.ui.session import ModelHandles, UiConfig, parse_prompts
from autolabel.ui.video import VideoRunner, edit_track, list_video_runs, render_frame, video_run_dir, view_run
from autolabel.video.store import open_video_store
from ui_helpers import TIMEOUT, VIEWPORT, choose, shot, table_rows

PROMPTS = "red\ngreen\nblue"

# Gradio 6.31's queue calls pandas options that pandas 3 deprecates (not our code).
pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated:Warning"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning")]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "movers.mp4", two_movers(frames=12, late_first=5))


class ColorVideoModel:
    """A loaded "video model" whose sessions are colour propagators."""

    def fresh(self) -> ColorPropagator:
        return ColorPropagator()


def color_models(video_model: str | None = None) -> ModelHandles:
    """Handles whose detector is the colour detector (what the Test and Batch tabs would share) and,
    with ``video_model``, whose video model under that name is ``ColorVideoModel``; ``loads``
    lists what they loaded."""
    loads = []

    def load(name, device, precision):
        loads.append(name)
        return ColorDetector(CLASSES_RGB, name=name)

    def load_video(name, device, precision):
        loads.append(name)
        return ColorVideoModel()

    models = ModelHandles("color", video_model, device="cpu", loaders={"detector": load, "video": load_video})
    models.loads = loads
    return models


@pytest.fixture
def runner(tmp_path, clip) -> VideoRunner:
    (tmp_path / "work").mkdir()
    allowed = clip.parent
    config = UiConfig(model="color", sam_model=None, runs_dir=tmp_path / "runs", work_dir=tmp_path / "work",
                      device="cpu", threshold=0.1, allow_folders=(allowed,))
    return VideoRunner(config, color_models(), make_propagator=ColorPropagator, chunk_frames=2)


def finish(job):
    job.thread.join(timeout=60)
    assert not job.running
    assert job.error is None, job.error
    return job


def test_a_clip_runs_in_the_background_on_the_shared_detector(runner, clip):
    runner.models.detector  # the Test tab loaded it already
    job = finish(runner.start("cars", parse_prompts(PROMPTS), 0.1, upload=str(clip), keyframe_every=4))
    assert runner.models.loads == ["color"]  # no copy of its own
    assert job.processed == 12 and job.total == 12 and job.summary.tracks == 3
    assert job.status_text().startswith("run cars (movers.mp4): finished 12 frames, 3 tracks")
    assert list_video_runs(runner.config.runs_dir) == ["cars"]
    folder = video_run_dir(runner.config.runs_dir, "cars")
    assert (folder / "clip" / "movers.mp4").read_bytes() == clip.read_bytes()
    with open_video_store(folder) as store:
        view = view_run(store)
    assert view.frames == 12 and view.names == ["red", "green", "blue"]
    assert view.track_rows() == [[1, "red", 12, 0, 11, "pending"], [2, "green", 12, 0, 11, "pending"],
                                 [3, "blue", 4, 8, 11, "pending"]]
    assert "movers.mp4" in view.summary() and str(clip.parent) not in view.summary()


def test_a_clip_on_the_server_only_inside_the_allowed_folders(runner, clip, tmp_path):
    job = finish(runner.start("", parse_prompts("red"), 0.1, clip_path=clip.name, fps=5))
    assert job.run.startswith("video-") and job.processed == 6  # 10 fps clip at 5 fps
    outside = tmp_path / "elsewhere.mp4"
    outside.write_bytes(clip.read_bytes())
    with pytest.raises(ConfigError, match="outside the allowed folders"):
        runner.start("x", parse_prompts("red"), 0.1, clip_path=str(outside))
    with pytest.raises(ConfigError, match="one of them"):
        runner.start("x", parse_prompts("red"), 0.1, upload=str(clip), clip_path=clip.name)
    with pytest.raises(ConfigError, match="one of them"):
        runner.start("x", parse_prompts("red"), 0.1)


@pytest.mark.parametrize("name, data", [("page.mp4", b"<html></html>"), ("movers.txt", None)])
def test_uploads_that_are_not_videos_are_refused(runner, clip, tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if data is not None else clip.read_bytes())
    with pytest.raises(ConfigError, match="not a video"):
        runner.start("x", parse_prompts("red"), 0.1, upload=str(path))
    assert list_video_runs(runner.config.runs_dir) == []


class GatedPropagator(ColorPropagator):
    """Waits at the fifth frame until the test lets it go on."""

    def __init__(self, gate: threading.Event, reached: threading.Event):
        super().__init__()
        self.gate, self.reached, self.seen = gate, reached, 0

    def propagate(self, frame):
        self.seen += 1
        if self.seen == 5:
            self.reached.set()
            self.gate.wait(timeout=30)
        return super().propagate(frame)


def test_stop_resume_and_no_edits_while_the_clip_is_labelled(runner, clip):
    gate, reached = threading.Event(), threading.Event()
    runner.make_propagator = lambda: GatedPropagator(gate, reached)
    job = runner.start("run", parse_prompts(PROMPTS), 0.1, upload=str(clip), keyframe_every=4)
    assert reached.wait(timeout=30)
    with pytest.raises(ConfigError, match="being labelled"):
        with runner.editing("run"):
            pass
    with pytest.raises(ConfigError, match="still being labelled"):
        runner.start("other", parse_prompts(PROMPTS), 0.1, upload=str(clip))
    runner.stop()
    gate.set()
    job.thread.join(timeout=30)
    assert job.stopped and "Resume continues" in job.status_text()
    runner.make_propagator = ColorPropagator
    resumed = finish(runner.resume("run"))
    assert resumed.summary.resumed_at == 3 and resumed.processed == 8 and resumed.summary.tracks == 3
    with runner.editing("run") as store:
        assert store.finished


def test_a_frame_is_drawn_with_its_tracks(runner, clip):
    finish(runner.start("run", parse_prompts(PROMPTS), 0.1, upload=str(clip), keyframe_every=4))
    with runner.editing("run") as store:
        image, caption = render_frame(store, 9, side=1024)
        assert caption == "frame 9 · 0.90 s · 3 tracks"
        assert image.size == (512, 341)  # a small clip is enlarged so labels stay legible
        edit_track(store, "reject", 1)
        rejected, _ = render_frame(store, 9, side=1024)
        selected, _ = render_frame(store, 9, side=1024, selected=2)
    pixels, after = np.asarray(image, np.int16), np.asarray(rejected, np.int16)
    red_box = two_movers().shapes[0].box(9)
    inside = tuple(round(v * 512 / 96) for v in red_box)
    centre = (inside[1] + inside[3]) // 2, (inside[0] + inside[2]) // 2
    assert not np.array_equal(pixels[centre], after[centre])  # its mask is no longer blended in
    assert not np.array_equal(np.asarray(selected), np.asarray(rejected))


def test_track_edits_from_the_tab(runner, clip):
    finish(runner.start("run", parse_prompts(PROMPTS), 0.1, upload=str(clip), keyframe_every=4))
    with runner.editing("run") as store:
        assert edit_track(store, "accept", "2") == "track 2: accepted"
        assert edit_track(store, "class", 3, class_name="green") == "track 3 is now green"
        assert edit_track(store, "split", 1, position=6) == "track 1 split: from this frame on it is track 4"
        assert edit_track(store, "merge", 1, other=4) == "track 4 merged into track 1"
        assert edit_track(store, "delete", 3) == "track 3 deleted"
        for kwargs, message in ((dict(action="class", track_id=1, class_name="pink"), "run's classes"),
                                (dict(action="accept", track_id=None), "choose a track"),
                                (dict(action="merge", track_id=1, other=None), "the track to merge"),
                                (dict(action="split", track_id=1), "scrub"),
                                (dict(action="merge", track_id=1, other=2), "overlap in time")):
            with pytest.raises(AutolabelError, match=message):
                edit_track(store, **kwargs)
        rows = view_run(store).track_rows()
    assert rows == [[1, "red", 12, 0, 11, "pending (edited)"], [2, "green", 12, 0, 11, "accepted (edited)"]]


def test_sam2_video_loads_once_from_the_uis_segmentation_checkpoint(tmp_path, clip):
    from autolabel.testing.sam2_video_checkpoint import build_sam2_video_checkpoint

    checkpoint = build_sam2_video_checkpoint(tmp_path / "sam2-video")
    (tmp_path / "work").mkdir()
    models = color_models()
    models.sam_model = str(checkpoint)
    config = UiConfig(model="color", sam_model=str(checkpoint), runs_dir=tmp_path / "runs", work_dir=tmp_path / "work",
                      device="cpu")
    runner = VideoRunner(config, models)
    first = finish(runner.start("a", parse_prompts(PROMPTS), 0.1, upload=str(clip), fps=2))
    loaded = models.video_model
    second = finish(runner.start("b", parse_prompts(PROMPTS), 0.1, upload=str(clip), fps=2))
    assert models.video_model is loaded and first.processed == second.processed == 3
    assert f"**Video model** `{Path(checkpoint).name}`: ready on cpu" in models.status()
    with runner.editing("b") as store:
        assert store.config["video"]["propagator"] == str(checkpoint) and store.finished


def test_the_video_model_shows_in_the_status_line_loading_then_loaded_and_is_reused(tmp_path, clip):
    from autolabel.ui.app import AutolabelApp

    (tmp_path / "work").mkdir()
    config = UiConfig(model="color", sam_model="color-video", runs_dir=tmp_path / "runs", work_dir=tmp_path / "work",
                      device="cpu", threshold=0.1)
    models = color_models("color-video")
    app = AutolabelApp(config, models)
    app.build()
    tab = app.video
    assert "Video model" not in app.status()  # until the Video tab asks for it
    loading, started = tab.start(str(clip), "", PROMPTS, 0.1, 4, None, "first")
    assert "**Video model** `color-video`: loading…" in loading[app.status_box]
    assert "data-state='loading'" in loading[tab.progress]
    finish(tab.runner.current())
    assert "**Video model** `color-video`: ready on cpu" in started[app.status_box]
    (again,) = tab.start(str(clip), "", PROMPTS, 0.1, 4, None, "second")  # nothing to load: no loading step
    assert finish(tab.runner.current()).summary.tracks == 3
    assert models.loads == ["color", "color-video"] and models.is_loaded("video")
    assert "**Video model** `color-video`: ready" in app.status()  # the other tabs' line shows it too
    with pytest.raises(ConfigError, match="--sam-model"):
        color_models().video_model  # no segmentation checkpoint: nothing to track with


def test_uploads_pass_the_guard_as_images_or_readable_videos(clip, tmp_path):
    from autolabel.ui.guard import is_allowed_upload

    page = tmp_path / "page.mp4"
    page.write_text("<html><script>alert(1)</script></html>")
    renamed = tmp_path / "clip.html"
    renamed.write_bytes(clip.read_bytes())
    assert is_allowed_upload(clip)
    assert not is_allowed_upload(page) and not is_allowed_upload(renamed)


# -- in a browser --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def video_server(tmp_path_factory):
    from ui_helpers import live_server

    root = tmp_path_factory.mktemp("ui-video")
    (root / "work").mkdir()
    config = UiConfig(model="color", sam_model=None, runs_dir=(root / "runs").resolve(),
                      work_dir=(root / "work").resolve(), device="cpu", threshold=0.1)
    from autolabel.ui.app import AutolabelApp

    if not hasattr(AutolabelApp(config, color_models()), "video"):
        pytest.skip("the Video tab is not part of the app's page (ui/app.py)")
    with live_server(config, models=color_models(), max_file_size="5mb") as live:
        live.app.video.runner.make_propagator = ColorPropagator
        yield live


def video_shot(page, name: str) -> Path:
    return shot(page, f"video-{name}")


def open_video_tab(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Video").click()
    page.wait_for_selector("#video-start")


def track_rows(page) -> list[list[str]]:
    return table_rows(page, "video-tracks")


def test_browser_upload_run_scrub_reject_and_reload(video_server, browser, tmp_path):
    clip = write_clip(tmp_path / "street.mp4", two_movers(frames=12, late_first=5))
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    try:
        open_video_tab(page, video_server.url)
        page.set_input_files("#video-upload input[type=file], input[type=file][accept*='.mp4']", str(clip))
        page.wait_for_function("() => document.querySelector('#video-clip-name').innerText.includes('street.mp4')")
        page.fill("#video-prompts textarea", PROMPTS)
        page.fill("#video-keyframe-every input", "4")
        page.fill("#video-run-name textarea, #video-run-name input", "street")
        page.click("#video-start")
        page.wait_for_selector("#video-progress-inner[data-state=finished]")
        page.wait_for_function("() => document.querySelectorAll('#video-tracks .virtual-row').length === 3")
        assert [row[:3] for row in track_rows(page)] == [["1", "red", "12"], ["2", "green", "12"], ["3", "blue", "4"]]
        page.locator("#video-scrubber input[type=range]").fill("9")
        page.locator("#video-scrubber input[type=range]").dispatch_event("pointerup")
        page.wait_for_function("() => document.querySelector('#video-caption').innerText.includes('frame 9 ')")
        assert "3 tracks" in page.inner_text("#video-caption")
        video_shot(page, "scrubbed")
        choose(page, "video-track", "1 · red")
        page.click("#video-reject")
        page.wait_for_function("() => [...document.querySelectorAll('#video-tracks .virtual-row')]"
                               ".some(r => r.innerText.includes('rejected'))")
        assert track_rows(page)[0][-1] == "rejected (edited)"
        video_shot(page, "rejected")
        text = page.inner_text("body")
        assert str(tmp_path) not in text and str(video_server.config.runs_dir) not in text
        page.reload()
        page.get_by_role("tab", name="Video").click()
        page.wait_for_function("() => document.querySelectorAll('#video-tracks .virtual-row').length === 3")
        assert track_rows(page)[0][-1] == "rejected (edited)"
        assert page.locator("#video-frame img").get_attribute("src")
        video_shot(page, "reloaded")
    finally:
        context.close()
