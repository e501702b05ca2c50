"""Fixtures for fine-tuning tests: a tiny OWLv2 (128 px, 8x8 patches) and a synthetic dataset of
coloured shapes whose boxes are known exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from autolabel.finetune.synthetic import build_calibrated_owlv2, make_shapes_dataset


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread():
    """Tiny models are all overhead: one intra-op thread is faster, and on a busy 2-core machine
    several threads spin-wait for each other (3x slower here). Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def owlv2_128(tmp_path_factory) -> Path:
    return build_calibrated_owlv2(tmp_path_factory.mktemp("owlv2-128"))


@pytest.fixture(scope="session")
def shapes_coco(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n_images=8)
