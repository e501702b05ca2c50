"""settings: AUTOLABEL_* environment and .env, flag overrides, defaults shared with the library,
device choice (precision choice: tests/models/test_precision.py)."""

from __future__ import annotations

import os

import pytest

from autolabel.errors import ConfigError
from autolabel.images import DEFAULT_MAX_PIXELS
from autolabel.pipeline import DetectConfig
from autolabel.settings import load_settings, resolve_device


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No AUTOLABEL_* variable or .env file of the machine running the tests leaks in."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("AUTOLABEL_")]:
        monkeypatch.delenv(name)


def test_defaults_are_the_library_defaults():
    settings = load_settings()
    assert (settings.threshold, settings.nms_iou) == (DetectConfig().threshold, DetectConfig().nms_iou)
    assert settings.max_image_pixels == DEFAULT_MAX_PIXELS


def test_environment_then_dotenv_then_flags(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("AUTOLABEL_THRESHOLD=0.3\nAUTOLABEL_BATCH_SIZE=2\n")
    monkeypatch.setenv("AUTOLABEL_BATCH_SIZE", "8")
    settings = load_settings(threshold=None, model="./owlv2")  # None: the flag was not given
    assert (settings.threshold, settings.batch_size, settings.model) == (0.3, 8, "./owlv2")
    assert load_settings(threshold=0.2).threshold == 0.2


@pytest.mark.parametrize("overrides, field", [
    ({"threshold": 1.5}, "threshold"),  # outside [0, 1]
    ({"nms_iou": 0.0}, "nms_iou"),  # NMS at IoU 0 would keep one box per class
    ({"precision": "float8"}, "precision"),
    ({"batch_size": 0}, "batch_size"),
])
def test_invalid_values_are_one_readable_config_error(overrides, field):
    with pytest.raises(ConfigError, match=f"^invalid settings: {field}: "):
        load_settings(**overrides)


def test_device_choice():
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_precision_from_environment_and_flag(monkeypatch):
    assert load_settings().precision == "auto"
    monkeypatch.setenv("AUTOLABEL_PRECISION", "int8")
    assert load_settings().precision == "int8"
    assert load_settings(precision="bf16").precision == "bf16"
