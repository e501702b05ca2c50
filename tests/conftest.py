"""Shared fixtures. No test reaches the network: models are tiny random checkpoints built here and
loaded through the same path as a hub id (a local directory)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# Real JPEGs carrying every EXIF orientation (0-8), landscape and portrait; MIT licence beside them.
EXIF_DIR = Path(__file__).resolve().parent / "data" / "exif"


@pytest.fixture(scope="session")
def tiny_owlv2(tmp_path_factory) -> Path:
    """A 64 px OWLv2 (4x4 patches) with random weights, saved as a checkpoint directory."""
    from autolabel.testing.owlv2_checkpoint import build_owlv2_checkpoint

    return build_owlv2_checkpoint(tmp_path_factory.mktemp("owlv2-tiny"))


@pytest.fixture(scope="session")
def exif_dir() -> Path:
    return EXIF_DIR


@pytest.fixture(scope="session")
def tiny_sam2(tmp_path_factory) -> Path:
    """A 128 px SAM2 with random weights, saved as a checkpoint directory."""
    from autolabel.testing.sam2_checkpoint import build_sam2_checkpoint

    return build_sam2_checkpoint(tmp_path_factory.mktemp("sam2-tiny"))
