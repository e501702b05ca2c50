"""Helpers shared by the web UI tests (a module of its own: ``conftest`` is not importable by name
when the suite has several conftest files)."""

from __future__ import annotations

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
