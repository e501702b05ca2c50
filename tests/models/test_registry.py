"""The family registry: a checkpoint's config.json picks its family, wrong kinds and unknown types
are refused with one readable line, and the loaders name real classes."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

from autolabel.errors import ConfigError, ModelLoadError
from autolabel.models.registry import (FAMILIES, KINDS, checkpoint_model_type, families, family_for, family_named,
                                       load_detector, load_preprocessor, load_segmenter)


def test_detectors_and_segmenters_are_picked_from_their_config(tiny_owlv2, tiny_sam2):
    assert family_for(str(tiny_owlv2), "detector").name == "owlv2"
    assert family_for(str(tiny_sam2), "segmenter").name == "sam2"
    from autolabel.models.owlv2 import Owlv2Detector
    from autolabel.models.sam2 import Sam2Segmenter

    assert isinstance(load_detector(str(tiny_owlv2)), Owlv2Detector)
    assert isinstance(load_segmenter(str(tiny_sam2)), Sam2Segmenter)


def test_a_checkpoint_of_the_other_kind_is_refused_naming_the_right_option(tiny_owlv2, tiny_sam2):
    with pytest.raises(ConfigError, match="detector checkpoint .owlv2.*--model"):
        family_for(str(tiny_owlv2), "segmenter")
    with pytest.raises(ConfigError, match="segmenter checkpoint .sam2.*--sam-model"):
        family_for(str(tiny_sam2), "detector")


def test_an_unknown_model_type_names_the_supported_families(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError) as err:
        family_for(str(tmp_path), "detector")
    message = str(err.value)
    assert "'bert'" in message and "\n" not in message
    for family in families("detector"):
        assert family.name in message


@pytest.mark.parametrize("case", ["no_config", "no_model_type", "missing_hub_id"])
def test_unreadable_checkpoints_raise_model_load_error(tmp_path, case):
    target = tmp_path
    if case == "no_model_type":
        (tmp_path / "config.json").write_text("{}")
    elif case == "missing_hub_id":  # not cached, and tests run with HF_HUB_OFFLINE=1
        target = "acme/not-a-cached-model"
    with pytest.raises(ModelLoadError):
        family_for(str(target), "detector")


def test_a_hub_id_is_read_from_the_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    repo = tmp_path / "models--acme--tiny-owl"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abc")
    (repo / "snapshots" / "0123abc").mkdir(parents=True)
    (repo / "snapshots" / "0123abc" / "config.json").write_text(json.dumps({"model_type": "owlvit"}))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert checkpoint_model_type("acme/tiny-owl") == "owlvit"
    assert family_for("acme/tiny-owl", "detector").name == "owlvit"


def test_sam3_release_config_serves_as_detector_and_as_segmenter(tmp_path):
    # facebook/sam3's config.json is the video model's (model_type sam3_video); the image model
    # and the tracker both load from it.
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "sam3_video"}))
    assert family_for(str(tmp_path), "detector").name == "sam3"
    assert family_for(str(tmp_path), "segmenter").name == "sam3-tracker"


@pytest.mark.parametrize("build, family, image_class", [
    ("sam2_video_checkpoint:build_sam2_video_checkpoint", "sam2", "Sam2Model"),
    ("edgetam_video_checkpoint:build_edgetam_video_checkpoint", "edgetam", "EdgeTamModel"),
])
def test_published_video_configs_load_whole_as_image_segmenters(tmp_path, build, family, image_class):
    # facebook/sam2.1-hiera-* and the EdgeTAM checkpoint say sam2_video / edgetam_video; the image
    # model must load from them with every weight (the load path refuses missing ones).
    import importlib

    import transformers

    module, function = build.split(":")
    path = getattr(importlib.import_module(f"autolabel.testing.{module}"), function)(tmp_path / family)
    assert family_for(str(path), "segmenter").name == family
    segmenter = load_segmenter(str(path))
    plain = getattr(transformers, image_class).from_pretrained(str(path)).state_dict()
    got = segmenter.model.state_dict()
    assert got.keys() == plain.keys() and all(torch.equal(got[k], plain[k]) for k in got)


def test_records_are_complete_and_loaders_that_exist_resolve():
    names = [f.name for f in FAMILIES]
    assert len(names) == len(set(names))
    assert {f.kind for f in FAMILIES} == set(KINDS)
    for kind in KINDS:  # a model_type loads as at most one family of each kind
        types = [t for f in families(kind) for t in f.model_types]
        assert len(types) == len(set(types)), kind
    assert families("detector")[0].name == "owlv2" and families("segmenter")[0].name == "sam2"
    resolved = 0
    for family in FAMILIES:
        assert family.default_checkpoint and family.licence and family.input_size and family.pick_when
        module, _, attr = family.loader.partition(":")
        if importlib.util.find_spec(module) is None:
            continue  # a family whose module is not written yet
        cls = family.load_class()
        assert cls.__name__ == attr and callable(cls.from_pretrained)
        resolved += 1
    assert resolved >= 3  # owlv2, owlvit, sam2 at least
    assert family_named("owlvit").gated is False and family_named("sam3").gated is True
    with pytest.raises(ConfigError, match="unknown model family"):
        family_named("yolo")


@pytest.fixture(scope="module")
def checkpoints(tiny_owlv2, tiny_sam2, tmp_path_factory) -> dict:
    from autolabel.testing.grounding_dino_checkpoint import build_grounding_dino_checkpoint
    from autolabel.testing.sam_v1_checkpoint import build_sam_checkpoint

    return {"detector": [tiny_owlv2, build_grounding_dino_checkpoint(tmp_path_factory.mktemp("gdino"))],
            "segmenter": [tiny_sam2, build_sam_checkpoint(tmp_path_factory.mktemp("sam"))]}


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_a_preprocessor_from_the_processor_files_alone_equals_the_loaded_models(checkpoints, kind, exact, tmp_path):
    """Decode workers build preprocessors without weights: the same decode rule and the same inputs."""
    load = load_detector if kind == "detector" else load_segmenter
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (90, 140, 3), dtype=np.uint8))
    for i, checkpoint in enumerate(checkpoints[kind]):
        no_weights = shutil.copytree(checkpoint, tmp_path / str(i), ignore=shutil.ignore_patterns("*.safetensors"))
        alone = load_preprocessor(str(no_weights), kind, exact)
        loaded = load(str(checkpoint), exact=exact).preprocessor
        assert type(alone) is type(loaded)
        assert alone.decode_side((4000, 3000)) == loaded.decode_side((4000, 3000))
        torch.testing.assert_close(alone(pixels, (140, 90)), loaded(pixels, (140, 90)), rtol=0, atol=0, equal_nan=True)
