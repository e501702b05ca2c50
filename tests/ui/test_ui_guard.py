"""ui.guard: what the live server refuses (foreign origins, non-images, a full work folder, login
floods) and how it serves files, over HTTP against one launched app; and its helpers."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from starlette.datastructures import Headers

from autolabel.errors import ConfigError
from autolabel.ui import guard

from ui_helpers import live_server, make_config

pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated:Warning"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning")]

USER, PASSWORD = "admin", "s3cret"
HTML = b"<html><script>fetch('/config').then(r => r.text()).then(alert)</script></html>"
SVG = b"<svg xmlns='http://www.w3.org/2000/svg'><script>fetch('/config')</script></svg>"


def _jpeg(side: int = 32, seed: int = 0) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def _png_noise(side: int, seed: int) -> bytes:
    out = io.BytesIO()  # noise does not compress: about side * side * 3 bytes
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def server(tiny_owlv2, tiny_sam2, tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("guard"), tiny_owlv2, tiny_sam2)
    throttle = guard.LoginThrottle(max_failures=3, lockout_s=1.0)
    with live_server(config, auth=(USER, PASSWORD), max_file_size="5mb", max_work_size="2mb",
                     login_throttle=throttle) as live:
        yield live


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url) as client:
        assert client.post("login", data={"username": USER, "password": PASSWORD}).status_code == 200
        yield client


def _upload(client, name: str, data: bytes, mime: str, **headers) -> httpx.Response:
    return client.post("gradio_api/upload", files={"files": (name, data, mime)}, headers=headers)


def _upload_dir(server) -> Path:
    return server.config.work_dir / "gradio"


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


@pytest.mark.parametrize("name, data, mime", [("page.html", HTML, "text/html"), ("logo.svg", SVG, "image/svg+xml"),
                                              ("photo.jpg", HTML, "image/jpeg")])  # a lying name or type too
def test_uploads_that_are_not_images_are_refused_and_deleted(server, client, name, data, mime):
    before = _files(_upload_dir(server))
    response = _upload(client, name, data, mime)
    assert response.status_code == 415, response.text
    assert _files(_upload_dir(server)) == before


def test_uploaded_images_are_served_inline_and_anything_else_only_as_a_download(server, client):
    response = _upload(client, "photo.jpg", _jpeg(), "image/jpeg")
    assert response.status_code == 200, response.text
    image = client.get(f"gradio_api/file={response.json()[0]}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.headers["x-content-type-options"] == "nosniff"
    # A page or SVG in Gradio's folder (however it got there) is never a page on the UI's origin.
    for name, data in (("page.html", HTML), ("logo.svg", SVG)):
        planted = _upload_dir(server) / "planted" / name
        planted.parent.mkdir(parents=True, exist_ok=True)
        planted.write_bytes(data)
        served = client.get(f"gradio_api/file={planted}")
        assert served.status_code == 200, name
        assert served.headers["content-type"] == "application/octet-stream", name
        assert served.headers["content-disposition"].startswith("attachment"), name
        assert served.headers["x-content-type-options"] == "nosniff", name
    assert server.app.demo.allowed_paths == [str(server.config.work_dir / "exports")]


def test_uploads_from_another_site_are_refused(server, client):
    before = _files(_upload_dir(server))
    foreign = _upload(client, "photo.jpg", _jpeg(seed=2), "image/jpeg", origin="https://evil.example")
    assert foreign.status_code == 403
    assert _files(_upload_dir(server)) == before
    assert client.post("gradio_api/queue/join", json={}, headers={"origin": "null"}).status_code == 403
    own = _upload(client, "photo.jpg", _jpeg(seed=2), "image/jpeg", origin=server.url.rstrip("/"))
    assert own.status_code == 200


def test_the_work_folder_is_capped_and_pruned(server, client):
    # About 1.15 MB each of a 2 MB cap; different content (Gradio names upload folders by content).
    first = _upload(client, "big.png", _png_noise(620, seed=1), "image/png")
    assert first.status_code == 200, first.text
    second = _upload(client, "big2.png", _png_noise(620, seed=2), "image/png")
    assert second.status_code == 507  # full, and nothing old enough to prune
    first_folder = Path(first.json()[0]).parent
    old = time.time() - 3600
    os.utime(first_folder, (old, old))
    third = _upload(client, "big3.png", _png_noise(620, seed=3), "image/png")
    assert third.status_code == 200  # the hour-old upload made room
    assert not first_folder.exists()


def test_failed_logins_lock_the_client_out_for_a_while(server):
    with httpx.Client(base_url=server.url) as client:
        def login(password):
            return client.post("login", data={"username": USER, "password": password}).status_code

        assert [login("wrong") for _ in range(3)] == [400, 400, 400]
        assert login(PASSWORD) == 429  # locked: even the right password waits
        time.sleep(1.1)
        assert login(PASSWORD) == 200


# -- helpers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [("20gb", 20 * 10**9), ("500MB", 500 * 10**6), ("1.5kb", 1500),
                                            ("123", 123), (7, 7)])
def test_parse_size(text, expected):
    assert guard.parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "5xb", ""])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(ConfigError):
        guard.parse_size(text)


@pytest.mark.parametrize("headers, same", [
    ({"host": "127.0.0.1:7860"}, True),  # no Origin: not a cross-site browser request
    ({"host": "127.0.0.1:7860", "origin": "http://127.0.0.1:7860"}, True),
    ({"host": "127.0.0.1:8000", "x-forwarded-host": "labels.example.com", "origin": "https://labels.example.com"},
     True),  # behind a reverse proxy
    ({"host": "127.0.0.1:7860", "origin": "http://localhost:7860"}, False),
    ({"host": "127.0.0.1:7860", "origin": "https://evil.example"}, False),
    ({"host": "127.0.0.1:7860", "origin": "null"}, False),
])
def test_is_same_origin(headers, same):
    assert guard.is_same_origin(Headers(headers)) is same


def test_login_throttle_locks_doubles_and_forgives():
    throttle = guard.LoginThrottle(max_failures=2, window_s=10, lockout_s=5)
    throttle.failed("a", now=0)
    assert throttle.retry_after("a", now=0) == 0
    throttle.failed("a", now=1)
    assert throttle.retry_after("a", now=1) == 5 and throttle.retry_after("b", now=1) == 0
    throttle.failed("a", now=7)
    throttle.failed("a", now=8)
    assert throttle.retry_after("a", now=8) == 10  # the second lockout is twice as long
    throttle.succeeded("a")
    assert throttle.retry_after("a", now=8) == 0
    throttle.failed("c", now=0)
    throttle.failed("c", now=20)  # outside the window: the first one no longer counts
    assert throttle.retry_after("c", now=20) == 0


def test_prune_folder_removes_the_oldest_old_entries(tmp_path):
    for i, age in enumerate((4000, 3000, 10)):
        folder = tmp_path / f"u{i}"
        folder.mkdir()
        (folder / "f.bin").write_bytes(b"x" * 100)
        os.utime(folder, (time.time() - age, time.time() - age))
    assert guard.prune_folder(tmp_path, 150, min_age_s=60) == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u2"]  # the young one stays even if over
    assert guard.prune_folder(tmp_path, 0, min_age_s=60) == 100


def test_is_image_file(tmp_path):
    good, fake, named = tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.svg"
    good.write_bytes(_jpeg())
    fake.write_bytes(HTML)
    named.write_bytes(_jpeg())
    assert guard.is_image_file(good) and not guard.is_image_file(fake) and not guard.is_image_file(named)
