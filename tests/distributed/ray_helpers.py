"""Helpers for the Ray engine's tests. Ray is optional: without it these tests skip locally and
fail under CI (``CI=true``)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        problem = "Ray Data is not installed (pip install -e '.[ray]')"
        if _in_ci():
            pytest.fail(f"Ray tests cannot run: {problem}", pytrace=False)
        pytest.skip(problem, allow_module_level=True)
    return ray


def write_photos(folder, count, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        w, h = (160, 120) if i % 2 else (120, 170)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"img_{i:03d}.jpg", quality=90)
    return folder


def coco_export(run_dir, out_dir) -> str:
    """The run's COCO export (with masks as RLE when it has them), as text."""
    from autolabel.export import export_dataset
    from autolabel.store import open_store

    with open_store(run_dir, create=False) as store:
        export_dataset(store, out_dir, "coco")
    text = (out_dir / "coco_export.json").read_text()
    assert json.loads(text)["annotations"], "the comparison needs labels"
    return text
