"""Helpers shared by the web UI tests (a module of its own: ``conftest`` is not importable by name
when the suite has several conftest files)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_photos(folder: Path, count: int = 3, seed: int = 0) -> list[Path]:
    """Random-noise JPEGs, landscape and portrait alternating (160x120, 120x170)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        w, h = (160, 120) if i % 2 else (120, 170)
        path = folder / f"img_{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    app: object  # the AutolabelApp, so tests can look at its model counters and stores
    url: str
    config: object


@contextmanager
def live_server(config, auth=None, max_file_size="5mb", **launch_options):
    """The real app (``ui.app.launch``) serving on a free localhost port in this process, so tests
    can both drive it over HTTP/a browser and look at its model counters. The environment
    variables ``launch`` sets are registered with a monkeypatch first, so they are undone after."""
    from autolabel.ui.app import launch
    from autolabel.ui.security import gradio_environment

    port = free_port()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in gradio_environment(config.work_dir).items():
            mp.setenv(key, value)
        app = launch(config, host="127.0.0.1", port=port, auth=auth, max_file_size=max_file_size, block=False,
                     **launch_options)
        try:
            yield LiveServer(app, f"http://127.0.0.1:{port}/", config)
        finally:
            app.demo.close()


def make_config(root: Path, owlv2: Path, sam2: Path, **kwargs):
    from autolabel.ui.session import UiConfig

    (root / "work").mkdir(parents=True, exist_ok=True)
    return UiConfig(model=str(owlv2), sam_model=str(sam2), runs_dir=(root / "runs").resolve(),
                    work_dir=(root / "work").resolve(), device="cpu", threshold=0.1, batch_size=2, **kwargs)


# -- the browser (Debian's chromium driven by Playwright) ----------------------------------------

CHROMIUM = os.environ.get("AUTOLABEL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Screenshots: test-artifacts/ui/ (git-ignored) unless AUTOLABEL_SCREENSHOTS names another folder.
ARTIFACTS = Path(os.environ.get("AUTOLABEL_SCREENSHOTS", Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"))
TIMEOUT = 30_000  # ms, per wait
VIEWPORT = {"width": 1366, "height": 768}  # a common laptop screen: the layout must hold there


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_browser() -> None:
    problem = None
    if not Path(CHROMIUM).exists():
        problem = (f"{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`, which "
                   "`make test` does when missing); do not use `playwright install`")
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright Python package is missing (pip install -e '.[dev]')"
    if problem:
        if in_ci():
            pytest.fail(f"browser tests cannot run: {problem}", pytrace=False)
        pytest.skip(problem)


def shot(page, name: str, full_page: bool = True) -> Path:
    """A screenshot ``ARTIFACTS/<name>.png``: the whole page, or what the window shows."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path


def wait_text(page, selector: str, text: str) -> str:
    """Wait until the element's text contains ``text`` (and no progress overlay is shown)."""
    page.wait_for_function(
        """([sel, text]) => { const el = document.querySelector(sel);
               return el && el.innerText.includes(text) && !el.innerText.includes('processing'); }""",
        arg=[selector, text])
    return page.inner_text(selector)


def toast(page, text: str) -> str:
    """The text of the error/warning message that contains ``text``."""
    item = page.locator("[data-testid='toast-body']", has_text=text).first
    item.wait_for()
    return item.inner_text()


def set_slider(page, elem_id: str, value: float) -> None:
    """Move a Gradio slider the way a drag does (input + change events on the range input)."""
    page.locator(f"#{elem_id} input[type=range]").fill(str(value))


def choose(page, elem_id: str, value: str) -> None:
    """Pick ``value`` in a Gradio dropdown."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    page.locator(f"#{elem_id} [data-testid=dropdown-option][aria-label='{value}']").click()
    page.wait_for_function("([sel, v]) => document.querySelector(sel).value === v", arg=[f"#{elem_id} input", value])


def download(page, elem_id: str, dest: Path) -> Path:
    with page.expect_download() as info:
        page.click(f"#{elem_id}")
    info.value.save_as(dest)
    return dest


def table_rows(page, elem_id: str) -> list[list[str]]:
    """The rows a Gradio Dataframe shows (its virtualised body: ``[role=row]`` of ``[role=gridcell]``)."""
    return page.eval_on_selector_all(
        f"#{elem_id} .virtual-row",
        "rows => rows.map(r => Array.from(r.querySelectorAll('[role=gridcell]')).map(c => c.innerText.trim()))")
