"""The one load path refuses checkpoints that would leave weights at their random initial values."""

import pytest
from safetensors.torch import load_file, save_file

from autolabel.errors import ModelLoadError
from autolabel.models.registry import load_detector
from autolabel.testing.owlv2_checkpoint import build_owlv2_checkpoint


def test_a_checkpoint_missing_weights_is_refused_with_their_names(tmp_path):
    path = build_owlv2_checkpoint(tmp_path / "owl")
    assert load_detector(str(path), "cpu", "fp32") is not None  # complete: loads
    weights = load_file(path / "model.safetensors")
    dropped = sorted(k for k in weights if "class_head" in k)
    assert dropped
    save_file({k: v for k, v in weights.items() if k not in dropped}, path / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="not a complete checkpoint.*class_head"):
        load_detector(str(path), "cpu", "fp32")


def test_a_folder_without_its_processor_file_names_the_file(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "owlv2"}')
    with pytest.raises(ModelLoadError) as raised:
        load_detector(str(folder), "cpu", "fp32")
    assert str(raised.value).endswith("the folder has no preprocessor_config.json")
