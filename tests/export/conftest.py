"""Synthetic runs shared by the export tests: real image files, labels we choose, no model."""

from __future__ import annotations

import pytest

from autolabel.testing.synthetic import CLASSES, detection_images, make_run, segmentation_images


@pytest.fixture()
def det_run(tmp_path):
    store = make_run(tmp_path / "det-run", tmp_path / "src", CLASSES, detection_images())
    yield store
    store.close()


@pytest.fixture()
def seg_run(tmp_path):
    store = make_run(tmp_path / "seg-run", tmp_path / "seg-src", CLASSES, segmentation_images())
    yield store
    store.close()
