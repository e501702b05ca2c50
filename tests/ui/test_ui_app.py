"""ui.app without a browser: error mapping, the handlers behind each tab, the CLI command, and the
live server's security (what it serves, refuses and asks a login for)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import gradio as gr
import httpx
import pytest
from click.testing import CliRunner

from autolabel.errors import ConfigError, ImageLoadError
from autolabel.ui.app import ADD_MODE, MOVE_MODE, AutolabelApp, ReviewState, ui_errors

from ui_helpers import LiveServer, make_config

# Gradio 6.31's queue calls pandas options that pandas 3 deprecates (not our code).
pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated:Warning"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning")]


# -- error mapping ----------------------------------------------------------------------------------


def test_ui_errors_turns_domain_errors_into_one_line_messages():
    @ui_errors
    def bad():
        raise ImageLoadError("photo.jpg: not an image <b>\nsecond line")

    with pytest.raises(gr.Error) as info:
        bad()
    assert info.value.message == "photo.jpg: not an image &lt;b&gt;"  # first line, HTML-escaped
    assert info.value.print_exception is False


def test_ui_errors_wraps_generators_and_leaves_bugs_alone():
    @ui_errors
    def gen():
        yield 1
        raise ConfigError("no prompts")

    out = gen()
    assert next(out) == 1
    with pytest.raises(gr.Error, match="no prompts"):
        next(out)

    @ui_errors
    def bug():
        raise KeyError("a bug keeps its traceback")

    with pytest.raises(KeyError):
        bug()


# -- handlers ---------------------------------------------------------------------------------------


@pytest.fixture
def app(tiny_owlv2, tiny_sam2, tmp_path):
    return AutolabelApp(make_config(tmp_path, tiny_owlv2, tiny_sam2))


def test_build_registers_private_listeners(app):
    demo = app.build()
    ids = {block.elem_id for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    for elem_id in ("test-upload", "test-threshold", "batch-start", "review-image", "review-next", "export-button"):
        assert elem_id in ids
    assert demo.fns and all(fn.api_visibility == "private" for fn in demo.fns.values())


def test_test_query_shows_loading_then_result(app, photos):
    steps = list(app.test_query(str(photos[0]), "car=car,van\nperson", 0.0, "detect"))
    assert "Loading the model" in steps[0][2]  # first use: a visible status while loading
    image, table, timing, status = steps[-1]
    assert max(image.size) == 512 and len(table) > 0 and list(table.columns)[:2] == ["#", "class"]
    assert "backbone passes so far: 1" in timing and "ready" in status
    # Threshold moves re-use the features: one step, no backbone pass.
    (again,) = list(app.test_query(str(photos[0]), "car=car,van\nperson", 0.9, "detect", explicit=False))
    assert "no backbone pass" in again[2] and app.models.detector.backbone_calls == 1


def test_test_query_without_image_or_prompts(app, photos):
    with pytest.raises(gr.Error, match="upload an image"):
        list(ui_errors(app.test_query)(None, "person", 0.1, "detect"))
    # Background re-queries (slider, mode) stay silent until there is something to query.
    assert list(app.test_query(None, "person", 0.1, "detect", explicit=False)) == [(gr.skip(),) * 4]
    assert list(app.test_query(str(photos[0]), "  ", 0.1, "detect", explicit=False)) == [(gr.skip(),) * 4]
    with pytest.raises(gr.Error, match="at least one class"):
        list(ui_errors(app.test_query)(str(photos[0]), "", 0.1, "detect"))


def test_model_load_failure_updates_status_then_errors(tmp_path, photos):
    app = AutolabelApp(make_config(tmp_path, tmp_path / "missing-owl", tmp_path / "missing-sam"))
    out = ui_errors(app.test_query)(str(photos[0]), "person", 0.1, "detect")
    steps = []
    with pytest.raises(gr.Error, match="cannot load the OWLv2"):
        for step in out:
            steps.append(step)
    assert "failed to load" in steps[-1][3]


def _select(x, y):
    return gr.SelectData(None, {"index": [x, y], "value": None})


def test_batch_review_export_handlers(app, photos):
    steps = list(app.batch_start([str(p) for p in photos], "", "car=car,van\nperson", 0.0, "detect", "flow", "64"))
    assert "Loading the model" in steps[0][0]  # first use
    progress, run, shown, timer, zip_button, status = steps[-1]
    assert run == "flow" and "data-state" in progress
    app.batch.current().thread.join(60)
    tick = app.batch_tick("flow", -1)
    assert "data-state='finished'" in tick[0] and len(tick[1]) == 3 and Path(tick[4]["value"]).exists()

    state, image, table, select, classes, pos, hint, summary = app.review_load("flow", "all", 0.3)
    assert pos.startswith("Image 1 of 3") and "flow" in summary and state.selected is not None
    first = state.selected
    state, *_ , hint = app.review_action(state, first, "reject")
    assert "Saved: reject" in hint
    # Two clicks on the displayed image draw a box (display px -> original px).
    with app.open_run("flow") as store:
        _, scale = app.display.get(store.image(state.image_id))
    state, *_ , hint = app.review_click(state, state.selected, ADD_MODE, "person", _select(30, 40))
    assert state.pending == (30.0, 40.0) and "opposite corner" in hint
    state, *_ , hint = app.review_click(state, state.selected, ADD_MODE, "person", _select(150, 200))
    assert "Saved: added" in hint and state.pending is None
    added = state.selected
    state, *_ = app.review_click(state, added, MOVE_MODE, "person", _select(60, 60))
    state, *_ , hint = app.review_click(state, added, MOVE_MODE, "person", _select(120, 150))
    assert f"moved #{added}" in hint
    state, *_ = app.review_accept_image(state)
    assert state.pos == 1

    download, text, per_class = app.export("flow", "coco", "", "polygon")
    path = Path(download["value"])
    assert path.is_relative_to(app.config.work_dir) and "rejected labels excluded" in text
    with zipfile.ZipFile(path) as z:
        coco = json.loads(z.read("coco_export.json"))
    human = [a for a in coco["annotations"] if "score" not in a]
    assert len(human) == 1
    x, y, w, h = human[0]["bbox"]
    assert (x, y, x + w, y + h) == pytest.approx((60 / scale, 60 / scale, 120 / scale, 150 / scale), abs=0.02)


def test_review_needs_a_loaded_run(app):
    with pytest.raises(gr.Error, match="load a run first"):
        ui_errors(app.review_nav)(ReviewState(), 1)
    with pytest.raises(gr.Error, match="choose a run"):
        ui_errors(app.review_load)(None, "all", 0.3)
    with pytest.raises(gr.Error, match="not a run name"):
        ui_errors(app.export)("../../etc", "coco", "", "polygon")
    with pytest.raises(gr.Error, match="ground truth"):
        ui_errors(app.evaluate)("a", None)
    with pytest.raises(gr.Error, match="another run"):
        ui_errors(app.evaluate)("a", "a")


# -- the command ------------------------------------------------------------------------------------


@pytest.fixture
def gradio_env(monkeypatch):
    """`autolabel ui` points Gradio's folders at its work folder (process-wide): undo it afterwards."""
    import os

    for key in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE", "GRADIO_ANALYTICS_ENABLED"):
        old = os.environ.get(key)
        monkeypatch.setenv(key, old if old is not None else "unset")
        if old is None:
            monkeypatch.delenv(key)


def test_cli_ui_defaults_and_cleanup(monkeypatch, tmp_path, gradio_env):
    from autolabel.cli import main

    seen = {}

    def fake_launch(config, **kwargs):
        import os

        seen.update(kwargs, config=config, gradio_temp=os.environ["GRADIO_TEMP_DIR"])
        assert config.work_dir.is_dir()

    monkeypatch.setattr("autolabel.ui.app.launch", fake_launch)
    monkeypatch.delenv("AUTOLABEL_UI_AUTH", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["ui", "--model", "m", "--runs-dir", "myruns", "--allow-folder", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (seen["host"], seen["port"], seen["auth"]) == ("127.0.0.1", 7860, None)
    config = seen["config"]
    assert config.runs_dir == (tmp_path / "myruns").resolve() and config.runs_dir.is_dir()
    assert config.allow_folders == (tmp_path.resolve(),)
    assert not config.work_dir.exists()  # the temporary work folder is removed on exit
    assert seen["gradio_temp"].startswith(str(config.work_dir))  # Gradio's uploads went there
    assert "127.0.0.1:7860" in result.output


def test_cli_ui_auth_and_exposure(monkeypatch, tmp_path, gradio_env):
    from autolabel.cli import main

    seen = {}
    monkeypatch.setattr("autolabel.ui.app.launch", lambda config, **kw: seen.update(kw))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOLABEL_UI_AUTH", "admin:s3cret")
    result = CliRunner().invoke(main, ["ui", "--host", "0.0.0.0", "--port", "8081"])
    assert result.exit_code == 0 and seen["auth"] == ("admin", "s3cret") and "warning" not in result.output
    monkeypatch.setenv("AUTOLABEL_UI_AUTH", "admin")
    result = CliRunner().invoke(main, ["ui"])
    assert result.exit_code == 1 and "user:password" in result.output and "Traceback" not in result.output
    monkeypatch.delenv("AUTOLABEL_UI_AUTH")
    result = CliRunner().invoke(main, ["ui", "--host", "0.0.0.0"])
    assert "without a login" in result.output


# -- the live server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tiny_owlv2, tiny_sam2, tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    server = LiveServer(make_config(root, tiny_owlv2, tiny_sam2))
    yield server
    server.close()


def test_server_serves_the_app_but_not_our_files(live, photos, monkeypatch):
    from autolabel.store import open_store

    with open_store(live.config.runs_dir / "r") as store:
        db = store.run_dir / "autolabel.db"
    secret = Path.cwd() / ".env"
    assert httpx.get(live.url).status_code == 200
    for path in (db, live.config.runs_dir / "r", Path(live.config.model) / "config.json", photos[0],
                 Path("/etc/passwd")):
        response = httpx.get(f"{live.url}gradio_api/file={path}")
        assert response.status_code in (403, 404), (path, response.status_code)
    if secret.exists():
        assert httpx.get(f"{live.url}gradio_api/file={secret}").status_code in (403, 404)
    # The launch really used our options.
    demo = live.app.demo
    assert demo.ssr_mode is False and demo.share is False
    assert demo.allowed_paths == [str(live.config.work_dir)]
    assert str(live.config.runs_dir) in demo.blocked_paths


def test_server_refuses_uploads_over_the_limit(live):
    big = b"\xff\xd8" + b"0" * (6 * 1024 * 1024)
    response = httpx.post(f"{live.url}gradio_api/upload", files={"files": ("big.jpg", big, "image/jpeg")})
    assert response.status_code == 413


def test_login_is_required_when_configured(tiny_owlv2, tiny_sam2, tmp_path):
    server = LiveServer(make_config(tmp_path, tiny_owlv2, tiny_sam2), auth=("admin", "s3cret"))
    try:
        assert httpx.get(f"{server.url}config").status_code == 401
        assert httpx.get(f"{server.url}gradio_api/info").status_code == 401
        assert httpx.post(f"{server.url}login", data={"username": "admin", "password": "nope"}).status_code == 400
        with httpx.Client() as client:
            ok = client.post(f"{server.url}login", data={"username": "admin", "password": "s3cret"})
            assert ok.status_code == 200
            assert client.get(f"{server.url}config").status_code == 200
    finally:
        server.close()


def test_cli_ui_port_in_use_is_one_line(tiny_owlv2, tmp_path, monkeypatch, gradio_env):
    import socket

    from autolabel.cli import main

    monkeypatch.chdir(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["ui", "--model", str(tiny_owlv2), "--port", str(port)])
    assert result.exit_code == 1, result.output
    assert f"cannot start the UI on 127.0.0.1:{port}" in result.output and "Traceback" not in result.output
