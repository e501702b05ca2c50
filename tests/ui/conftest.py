"""Fixtures of the web UI tests: tiny checkpoints, a few photos, a UiConfig in temp folders, a browser."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ui_helpers import CHROMIUM, CHROMIUM_ARGS, need_browser, write_photos


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> list[Path]:
    return write_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def corrupt_image(tmp_path_factory) -> Path:
    """A JPEG cut in half: its header passes the upload check, its decoding fails."""
    folder = tmp_path_factory.mktemp("bad")
    (whole,) = write_photos(folder, 1, seed=9)
    path = folder / "broken.jpg"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    return path


@pytest.fixture
def ui_config(tiny_owlv2, tiny_sam2, tmp_path):
    from autolabel.ui.session import UiConfig

    (tmp_path / "work").mkdir()
    return UiConfig(model=str(tiny_owlv2), sam_model=str(tiny_sam2), runs_dir=tmp_path / "runs",
                    work_dir=tmp_path / "work", device="cpu", threshold=0.0, batch_size=2)


@pytest.fixture
def models(ui_config):
    from autolabel.ui.session import ModelHandles

    return ModelHandles(ui_config.model, ui_config.sam_model, device="cpu")


@pytest.fixture(scope="session", autouse=True)
def no_gradio_environment_leaks():
    """Launching the UI sets GRADIO_* variables process-wide: every test must undo that."""
    before = {k: v for k, v in os.environ.items() if k.startswith("GRADIO_")}
    yield
    after = {k: v for k, v in os.environ.items() if k.startswith("GRADIO_")}
    assert after == before, "a UI test left GRADIO_* environment variables behind"


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for the module's tests (skipped without one, failed under CI)."""
    need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
