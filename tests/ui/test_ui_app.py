"""ui.app and its tabs without a browser: the page, the handlers behind each tab, the CLI command,
and the live server's security (what it serves, refuses and asks a login for)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import gradio as gr
import httpx
import pytest
from click.testing import CliRunner

from autolabel.ui.app import AutolabelApp
from autolabel.ui.events import ui_errors
from autolabel.ui.tab_review import ReviewState

from ui_helpers import live_server, make_config

# Gradio 6.31's queue calls pandas options that pandas 3 deprecates (not our code).
pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated:Warning"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning")]


# -- the page ---------------------------------------------------------------------------------------


@pytest.fixture
def app(tiny_owlv2, tiny_sam2, tmp_path):
    app = AutolabelApp(make_config(tmp_path, tiny_owlv2, tiny_sam2))
    app.build()
    return app


def test_build_keeps_element_ids_and_private_listeners(app):
    ids = [block.elem_id for block in app.demo.blocks.values() if getattr(block, "elem_id", None)]
    assert len(ids) == len(set(ids))  # the browser tests and the keyboard shortcuts find them by id
    for elem_id in ("model-status", "test-upload", "test-threshold", "batch-start", "batch-progress", "batch-stop",
                    "batch-failed", "batch-retry", "review-next", "review-accept-image", "export-button",
                    "eval-gt-run"):
        assert elem_id in ids
    assert app.demo.fns and all(fn.api_visibility == "private" for fn in app.demo.fns.values())


def test_every_handler_output_is_a_registered_output(app):
    # A handler may only return components its event lists as outputs: Gradio drops the others.
    outputs = {id(block) for fn in app.demo.fns.values() for block in fn.outputs}
    on_load = app.on_load()
    assert set(on_load) and all(id(component) in outputs for component in on_load)
    load_fn = next(fn for fn in app.demo.fns.values() if fn.name == "on_load")
    assert {id(b) for b in load_fn.outputs} == {id(c) for c in on_load}


# -- Test tab ---------------------------------------------------------------------------------------


def test_test_query_shows_loading_then_result(app, photos):
    tab = app.test
    steps = list(tab.query(str(photos[0]), "car=car,van\nperson", 0.0, "detect"))
    assert "Loading the model" in steps[0][tab.timing]  # first use: a visible status while loading
    result = steps[-1]
    assert max(result[tab.image].size) == 512
    assert len(result[tab.table]) > 0 and list(result[tab.table].columns)[:2] == ["#", "class"]
    assert "backbone passes so far: 1" in result[tab.timing] and "ready" in result[app.status_box]
    # Threshold moves re-use the features: one step, no backbone pass.
    (again,) = list(tab.requery(str(photos[0]), "car=car,van\nperson", 0.9, "detect"))
    assert "no backbone pass" in again[tab.timing] and app.models.detector.backbone_calls == 1


def test_test_tab_calls_of_different_users_run_side_by_side(app):
    """Gradio's default runs one call per event at a time: a slow image would hold up every user."""
    from autolabel.ui.tab_test import TEST_CONCURRENCY

    names = ("query", "requery", "preview", "on_canvas", "remove_example", "clear_examples")
    calls = [fn for fn in app.demo.fns.values() if fn.fn.__qualname__ in [f"TestTab.{n}" for n in names]]
    # query, 7 requery events, upload and clear, 3 edits of the example boxes (each queries too)
    assert len(calls) == 13 and TEST_CONCURRENCY > 1
    assert {(fn.concurrency_id, fn.concurrency_limit) for fn in calls} == {("test-tab", TEST_CONCURRENCY)}


def test_model_picker_and_side_by_side_test(tiny_owlv2, tiny_sam2, tmp_path, photos):
    """The picker lists the models folder and sets the Batch tab's detector; the Test tab shows a
    second detector's result beside the first."""
    from autolabel.testing.owlv2_checkpoint import build_owlv2_checkpoint

    second = build_owlv2_checkpoint(tmp_path / "models" / "owl-b", seed=1)
    app = AutolabelApp(make_config(tmp_path, tiny_owlv2, tiny_sam2, models_dir=(tmp_path / "models").resolve()))
    app.build()
    tab = app.test
    assert ("owlv2: owl-b", "owl-b") in app.model_picker.choices and ("none", "") in tab.compare.choices
    *_, result = tab.query(str(photos[0]), "person", 0.0, "detect", tiny_owlv2.name, "owl-b")
    assert "`owl-b`" in result[tab.second_timing] and f"`{tiny_owlv2.name}`" in result[tab.timing]
    assert result[tab.second_image] is not None and len(result[tab.second_table]) > 0
    *_, alone = tab.query(str(photos[0]), "person", 0.0, "detect", "owl-b", "")
    assert alone[tab.second_image] is None and alone[tab.table].equals(result[tab.second_table])
    assert "owl-b" in app.select_model("owl-b")[app.status_box]
    assert app.on_load()[app.model_picker].value == "owl-b"  # a reloaded page shows the selection
    assert app.runner.models.detector.name == str(second.resolve())  # what a batch's Labeler gets


def test_test_query_without_image_or_prompts(app, photos):
    tab = app.test
    with pytest.raises(gr.Error, match="upload an image"):
        list(ui_errors(tab.query)(None, "person", 0.1, "detect"))
    # Background re-queries (slider, mode) stay silent until there is something to query.
    assert list(tab.requery(None, "person", 0.1, "detect")) == [gr.skip()]
    assert list(tab.requery(str(photos[0]), "  ", 0.1, "detect")) == [gr.skip()]
    with pytest.raises(gr.Error, match="at least one class"):
        list(ui_errors(tab.query)(str(photos[0]), "", 0.1, "detect"))


def test_model_load_failure_updates_status_then_errors(tmp_path, photos):
    app = AutolabelApp(make_config(tmp_path, tmp_path / "missing-owl", tmp_path / "missing-sam"))
    app.build()
    steps = []
    with pytest.raises(gr.Error, match="cannot load .*missing-owl"):
        for step in ui_errors(app.test.query)(str(photos[0]), "person", 0.1, "detect"):
            steps.append(step)
    assert "failed to load" in steps[-1][app.status_box]


# -- Batch -> Review -> Export ----------------------------------------------------------------------


def test_batch_review_export_handlers(app, photos):
    batch, rev, exp = app.batch, app.review, app.export
    steps = list(batch.start_new([str(p) for p in photos], "", "car=car,van\nperson", 0.0, "detect", "flow", "64"))
    assert "Loading the model" in steps[0][batch.progress]  # first use
    assert steps[-1][batch.run_state] == "flow" and "data-state" in steps[-1][batch.progress]
    app.runner.current().thread.join(60)
    tick = batch.tick("flow", -1)
    assert "data-state='finished'" in tick[batch.progress] and len(tick[batch.gallery]) == 3
    assert Path(tick[batch.zip]["value"]).exists()
    assert tick[rev.run].value == "flow" and tick[exp.run].value == "flow"  # the new run is listed

    out = rev.load("flow", "all", 0.3)
    state = out[rev.state]
    assert "flow" in out[rev.summary] and state.selected is not None
    with app.open_run("flow") as store:
        labels_before = sum(len(store.labels(r.id)) for r in store.images("done"))
    rev.edit(state, state.selected, action="reject")  # the Review tab's own tests cover its editing

    out = exp.export("flow", "coco", "", "polygon")
    path = Path(out[exp.download]["value"])
    assert path.is_relative_to(app.config.work_dir) and "rejected labels excluded" in out[exp.summary]
    with zipfile.ZipFile(path) as z:
        coco = json.loads(z.read("coco_export.json"))
    assert len(coco["annotations"]) == labels_before - 1


def test_export_prunes_old_export_folders(app, photos):
    import os

    from autolabel.ui.downloads import KEEP_EXPORTS, MIN_EXPORT_AGE_S

    list(app.batch.start_new([str(photos[0])], "", "person", 0.0, "detect", "small", ""))
    app.runner.current().thread.join(60)
    exports = app.config.work_dir / "exports"
    served = [Path(app.export.export("small", "coco", "", "polygon")[app.export.download]["value"]).parent
              for _ in range(KEEP_EXPORTS + 1)]
    old = served[0]
    os.utime(old, (old.stat().st_atime, old.stat().st_mtime - MIN_EXPORT_AGE_S - 1))
    newest = app.export.export("small", "coco", "", "polygon")[app.export.download]["value"]
    assert not old.exists() and Path(newest).exists()
    assert len(list(exports.iterdir())) == KEEP_EXPORTS + 2  # the batch ZIP and the younger ones stay


def test_review_and_export_refuse_bad_input(app):
    with pytest.raises(gr.Error, match="load a run first"):
        ui_errors(app.review.step)(ReviewState(), 1)
    with pytest.raises(gr.Error, match="choose a run"):
        ui_errors(app.review.load)(None, "all", 0.3)
    with pytest.raises(gr.Error, match="not a run name"):
        ui_errors(app.export.export)("../../etc", "coco", "", "polygon")
    with pytest.raises(gr.Error, match="ground truth"):
        ui_errors(app.export.evaluate)("a", None)
    with pytest.raises(gr.Error, match="another run"):
        ui_errors(app.export.evaluate)("a", "a")


# -- the command ------------------------------------------------------------------------------------


@pytest.fixture
def gradio_env(monkeypatch, tmp_path):
    """`autolabel ui` sets Gradio's variables process-wide: registering them here undoes that."""
    from autolabel.ui.security import gradio_environment

    for key, value in gradio_environment(tmp_path).items():
        monkeypatch.setenv(key, value)


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
    result = CliRunner().invoke(main, ["ui", "--model", "m", "--runs-dir", "myruns", "--allow-folder", str(tmp_path),
                                       "--models-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (seen["host"], seen["port"], seen["auth"]) == ("127.0.0.1", 7860, None)
    config = seen["config"]
    assert config.runs_dir == (tmp_path / "myruns").resolve() and config.runs_dir.is_dir()
    assert config.allow_folders == (tmp_path.resolve(),) and config.models_dir == tmp_path.resolve()
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
    config = make_config(tmp_path_factory.mktemp("live"), tiny_owlv2, tiny_sam2)
    with pytest.MonkeyPatch.context() as mp:
        # Started inside its work folder, the server must block that folder's .env although the
        # work folder itself is allowed: blocked wins.
        mp.chdir(config.work_dir)
        (config.work_dir / ".env").write_text("AUTOLABEL_UI_AUTH=admin:s3cret\n")
        with live_server(config) as server:
            yield server


def _fetch(live, path: Path) -> httpx.Response:
    return httpx.get(f"{live.url}gradio_api/file={path}")


def test_server_serves_its_work_folder_but_not_our_files(live, photos):
    from autolabel.store import open_store

    with open_store(live.config.runs_dir / "r") as store:
        db = store.run_dir / "autolabel.db"
    run_file = live.config.runs_dir / "r" / "uploads" / photos[0].name
    run_file.parent.mkdir()
    run_file.write_bytes(photos[0].read_bytes())
    served = live.config.work_dir / "exports" / "r-1" / "r_coco.zip"
    served.parent.mkdir(parents=True)
    served.write_bytes(b"PK the export")

    assert httpx.get(live.url).status_code == 200
    ok = _fetch(live, served)  # what our download buttons hand out: the route must exist and serve it
    assert ok.status_code == 200 and ok.content == b"PK the export"
    refused = {"run database": db, "run folder file": run_file, ".env": live.config.work_dir / ".env",
               "model file": Path(live.config.model) / "config.json", "photo elsewhere": photos[0],
               "system file": Path("/etc/passwd")}
    for what, path in refused.items():
        assert path.is_file(), what  # a missing file would be refused anyway and prove nothing
        assert _fetch(live, path).status_code == 403, what
    # The launch really used our options.
    demo = live.app.demo
    assert demo.ssr_mode is False and demo.share is False
    assert demo.allowed_paths == [str(live.config.work_dir / "exports")]
    assert str(live.config.runs_dir) in demo.blocked_paths


def test_server_refuses_uploads_over_the_limit(live):
    big = b"\xff\xd8" + b"0" * (6 * 1024 * 1024)
    response = httpx.post(f"{live.url}gradio_api/upload", files={"files": ("big.jpg", big, "image/jpeg")})
    assert response.status_code == 413


def test_login_is_required_when_configured(tiny_owlv2, tiny_sam2, tmp_path):
    with live_server(make_config(tmp_path, tiny_owlv2, tiny_sam2), auth=("admin", "s3cret")) as server:
        assert httpx.get(f"{server.url}config").status_code == 401
        assert httpx.get(f"{server.url}gradio_api/info").status_code == 401
        assert httpx.post(f"{server.url}login", data={"username": "admin", "password": "nope"}).status_code == 400
        with httpx.Client() as client:
            ok = client.post(f"{server.url}login", data={"username": "admin", "password": "s3cret"})
            assert ok.status_code == 200
            assert client.get(f"{server.url}config").status_code == 200


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


def test_cli_ui_removes_its_work_folder_on_sigterm(tiny_owlv2, tmp_path):
    """A service manager stops the UI with SIGTERM: uploads and exports must not stay behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from ui_helpers import free_port

    port, tmp = free_port(), tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")} | {"TMPDIR": str(tmp)}
    process = subprocess.Popen([sys.executable, "-m", "autolabel", "ui", "--model", str(tiny_owlv2), "--port",
                                str(port), "--runs-dir", str(tmp_path / "runs")], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read().decode()[-2000:]
            time.sleep(0.3)
        assert [p.name for p in tmp.iterdir() if p.name.startswith("autolabel-ui-")]  # the work folder exists
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-2000:]
    assert not [p.name for p in tmp.iterdir() if p.name.startswith("autolabel-ui-")], output[-2000:]
