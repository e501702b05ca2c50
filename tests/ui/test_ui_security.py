"""ui.security: login parsing, name sanitising, server folders, and the launch options."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autolabel.errors import ConfigError
from autolabel.ui import security


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, None),  # no login configured
        ("", None),
        ("   ", None),
        ("admin:secret", ("admin", "secret")),
        ("admin:pa:ss:word", ("admin", "pa:ss:word")),  # only the first ':' separates
        (" admin :secret", ("admin", "secret")),  # spaces around the user are trimmed
    ],
)
def test_parse_auth(text, expected):
    assert security.parse_auth(text) == expected


@pytest.mark.parametrize("text", ["admin", "admin:", ":secret", " :x"])
def test_parse_auth_refuses_half_credentials(text):
    # A typo must never silently turn the login off.
    with pytest.raises(ConfigError, match="user:password"):
        security.parse_auth(text)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("photo.JPG", "photo.JPG"),  # the user's name is kept
        ("Straße – Köln.jpeg", "Straße – Köln.jpeg"),  # letters of every script stay
        ("写真 (1).png", "写真 (1).png"),
        ("../../etc/passwd", "passwd"),  # directory parts dropped
        ("..\\..\\windows\\win.ini", "win.ini"),  # Windows separators too
        ("/abs/path/img.png", "img.png"),
        (".hidden.png", "hidden.png"),  # no dotfiles
        ("..", "image"),
        ("", "image"),
        (None, "image"),
        ("my photo (1).jpeg", "my photo (1).jpeg"),
        ("a\x00b.jpg", "a_b.jpg"),  # control characters replaced
        ("evil\u202egpj.exe", "evil_gpj.exe"),  # a bidi override that would disguise the extension
        ("<img src=x onerror=alert(1)>.png", "<img src=x onerror=alert(1)>.png"),  # pages escape names
        ("x" * 500 + ".jpg", "x" * 116 + ".jpg"),  # bounded length
    ],
)
def test_sanitize_filename(name, expected):
    out = security.sanitize_filename(name)
    assert out == expected
    assert "/" not in out and "\\" not in out and not out.startswith(".")


@pytest.mark.parametrize(
    "name, expected",
    [("street", "street"), ("my run", "my run"), ("../evil", "_evil"), ("a/b", "a_b"), ("ok_name.v2", "ok_name.v2"),
     ("Überprüfung 2024", "Überprüfung 2024"), (".hidden", "hidden"), ("tab\there", "tab_here")],
)
def test_sanitize_run_name(name, expected):
    assert security.sanitize_run_name(name) == expected


@pytest.mark.parametrize("name", ["", "..", "///", "   "])
def test_sanitize_run_name_refuses_empty(name):
    with pytest.raises(ConfigError):
        security.sanitize_run_name(name)


def test_safe_child_and_unique_child(tmp_path):
    assert security.safe_child(tmp_path, "a.jpg") == (tmp_path / "a.jpg").resolve()
    for bad in ("../a.jpg", "sub/a.jpg", "..", "/etc/passwd"):
        with pytest.raises(ConfigError):
            security.safe_child(tmp_path, bad)
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "a_1.jpg").write_bytes(b"x")
    assert security.unique_child(tmp_path, "a.jpg").name == "a_2.jpg"


def test_resolve_server_folder(tmp_path):
    allowed = tmp_path / "data"
    (allowed / "photos").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", allowed / "link-out")
    assert security.resolve_server_folder(str(allowed / "photos"), [allowed]) == (allowed / "photos").resolve()
    assert security.resolve_server_folder("photos", [allowed]) == (allowed / "photos").resolve()  # relative
    for bad in (str(tmp_path / "secret"), str(allowed / ".." / "secret"), str(allowed / "link-out"), "/"):
        with pytest.raises(ConfigError, match="outside the allowed folders"):
            security.resolve_server_folder(bad, [allowed])
    with pytest.raises(ConfigError, match="does not exist"):
        security.resolve_server_folder(str(allowed / "nope"), [allowed])
    with pytest.raises(ConfigError, match="off"):
        security.resolve_server_folder(str(allowed), [])  # off unless the operator allows folders


def test_launch_kwargs_are_locked_down(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    model = tmp_path / "owlv2"
    model.mkdir()
    work, runs = tmp_path / "work", tmp_path / "runs"
    work.mkdir()
    kwargs = security.launch_kwargs(work_dir=work, runs_dir=runs, model_paths=[str(model), "google/owlv2-x", None])
    assert kwargs["server_name"] == "127.0.0.1"
    assert kwargs["server_port"] == 7860
    assert kwargs["share"] is False
    assert kwargs["ssr_mode"] is False
    assert kwargs["auth"] is None
    assert kwargs["max_file_size"]
    assert kwargs["show_error"] is False
    assert kwargs["enable_monitoring"] is False and kwargs["mcp_server"] is False
    # Only the work folder's exports are allowed, as an absolute path: never Gradio's uploads.
    assert kwargs["allowed_paths"] == [str(work.resolve() / "exports")]
    blocked = kwargs["blocked_paths"]
    assert all(Path(p).is_absolute() for p in blocked)
    for path in (runs, tmp_path / ".env", tmp_path / "hf", model):
        assert str(path.resolve()) in blocked
    assert not any(Path(str(work.resolve())).is_relative_to(p) for p in blocked)


def test_launch_kwargs_pass_host_and_auth(tmp_path):
    kwargs = security.launch_kwargs(work_dir=tmp_path, runs_dir=tmp_path / "runs", host="0.0.0.0", port=8080,
                                    auth=("u", "p"), max_file_size="10mb")
    assert (kwargs["server_name"], kwargs["server_port"], kwargs["auth"], kwargs["max_file_size"]) == \
        ("0.0.0.0", 8080, ("u", "p"), "10mb")
    assert kwargs["share"] is False and kwargs["ssr_mode"] is False


def test_blocked_paths_when_work_dir_is_inside_runs(tmp_path):
    # Blocking the whole runs root would block our own downloads: block each database instead.
    from autolabel.store import open_store

    runs = tmp_path / "runs"
    open_store(runs / "a").close()
    blocked = security.blocked_paths(runs, runs / "work")
    assert str((runs / "a" / "autolabel.db").resolve()) in blocked
    assert str((runs / "a" / "autolabel.db-wal").resolve()) in blocked
    assert str(runs.resolve()) not in blocked


def test_warn_if_exposed():
    assert security.warn_if_exposed("127.0.0.1", None) is None
    assert security.warn_if_exposed("0.0.0.0", ("u", "p")) is None
    assert "AUTOLABEL_UI_AUTH" in security.warn_if_exposed("0.0.0.0", None)


def test_prepare_gradio_environment(tmp_path, monkeypatch):
    env = security.gradio_environment(tmp_path)
    for key in env:
        monkeypatch.setenv(key, "before")  # registered, so the change below is undone
    security.prepare_gradio_environment(tmp_path)
    assert os.environ["GRADIO_TEMP_DIR"] == str(tmp_path.resolve() / "gradio")
    assert Path(os.environ["GRADIO_TEMP_DIR"]).is_dir()
    assert Path(os.environ["GRADIO_EXAMPLES_CACHE"]).is_relative_to(tmp_path.resolve())
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert {key: os.environ[key] for key in env} == env


def test_importing_the_ui_and_the_cli_changes_no_environment_variable():
    """Process-wide changes belong to entry points: importing the UI's and the CLI's modules leaves
    os.environ as the third-party imports left it (cv2 sets LD_LIBRARY_PATH itself)."""
    import subprocess
    import sys

    code = """
import importlib, os, pkgutil
import cv2, gradio
before = dict(os.environ)
import autolabel.cli, autolabel.ui
for package in (autolabel.cli, autolabel.ui):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
print("CHANGED", changed)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "CHANGED []" in out.stdout, out.stdout
