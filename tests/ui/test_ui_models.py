"""ui.session's model picker: the listed detectors (configured, family defaults, the models folder),
switching between them, and the Test tab's side-by-side query against each model's own Labeler."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from autolabel.errors import ConfigError
from autolabel.models.registry import families
from autolabel.ui.session import ModelCatalog, ModelHandles, PromptTester, make_labeler, parse_prompts


def _config_folder(folder: Path, model_type: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


@pytest.fixture
def models_dir(tmp_path) -> Path:
    """Detector folders (one nested), a segmenter, a folder without config, and two symlink escapes."""
    root = tmp_path / "models"
    _config_folder(root / "owl-a", "owlv2")
    _config_folder(root / "org" / "dino", "grounding-dino")
    _config_folder(root / "sam", "sam2")  # a segmenter: not a detector choice
    (root / "empty").mkdir()
    outside = _config_folder(tmp_path / "outside", "owlv2")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "config-link").mkdir()
    (root / "config-link" / "config.json").symlink_to(outside / "config.json")
    return root


def test_catalog_lists_configured_defaults_and_model_folders(models_dir):
    catalog = ModelCatalog("google/owlv2-base-patch16", models_dir)
    choices = catalog.choices()
    defaults = [f.default_checkpoint for f in families("detector")]
    assert [c.key for c in choices] == ["google/owlv2-base-patch16", *defaults, "org/dino", "owl-a"]
    by_key = {c.key: c for c in choices}
    assert by_key["owl-a"].family == "owlv2" and by_key["org/dino"].family == "grounding-dino"
    assert by_key["owl-a"].checkpoint == str((models_dir / "owl-a").resolve())
    assert by_key["owl-a"].label == "owlv2: owl-a"  # the browser sees names inside the folder only
    assert all(str(models_dir) not in c.key and str(models_dir) not in c.label for c in choices)


def test_catalog_refuses_anything_not_listed(models_dir, tmp_path):
    catalog = ModelCatalog("owl", models_dir)
    assert catalog.checkpoint("owl-a") == str((models_dir / "owl-a").resolve())
    for key in ("escape", "config-link", "sam", "empty", str(tmp_path / "outside"), "../outside", "/etc"):
        with pytest.raises(ConfigError, match="unknown detector"):
            catalog.checkpoint(key)


def test_a_link_out_of_the_models_folder_is_logged_once(models_dir, caplog):
    catalog = ModelCatalog("owl", models_dir)
    with caplog.at_level("WARNING", logger="autolabel.ui.session"):
        for _ in range(3):  # every page load and query lists the folder again
            assert "escape" not in [c.key for c in catalog.choices()]
    refused = [r.getMessage() for r in caplog.records if "outside the models directory" in r.getMessage()]
    assert sorted(refused) == ["not listing config-link: it leads outside the models directory",
                               "not listing escape: it leads outside the models directory"]


def test_configured_default_is_listed_once_and_a_new_folder_shows_next_time(tmp_path):
    default = families("detector")[0].default_checkpoint
    catalog = ModelCatalog(default, tmp_path)
    assert [c.key for c in catalog.choices()].count(default) == 1 and catalog.choices()[0].family == "owlv2"
    _config_folder(tmp_path / "late", "owlvit")
    assert catalog.checkpoint("late") == str((tmp_path / "late").resolve())


def _fake_models(models_dir: Path, cache_size: int = 2):
    loads = []

    def fake(name, device, precision):
        loads.append(name)
        return SimpleNamespace(name=name, device=device, preprocessor=None, compiled=False, yields_masks=False)

    handles = ModelHandles("owl", None, device="cpu", loaders={"detector": fake}, models_dir=models_dir,
                           cache_size=cache_size)
    return handles, loads


def test_switching_models_loads_lazily_and_keeps_a_bounded_cache(models_dir, ui_config):
    handles, loads = _fake_models(models_dir)
    owl_a, dino = str((models_dir / "owl-a").resolve()), str((models_dir / "org" / "dino").resolve())
    assert handles.select("owl-a") == owl_a and loads == []  # chosen, not loaded yet
    labeler = make_labeler(ui_config, handles, parse_prompts("person"), "detect", 0.1)
    assert labeler.model == owl_a and "`owl-a`: ready" in handles.status()
    assert make_labeler(ui_config, handles, parse_prompts("person"), "detect", 0.1, model="org/dino").model == dino
    assert handles.detector_for("owl-a") is labeler.detector and loads == [owl_a, dino]  # cached
    handles.select("owl")
    assert handles.detector.name == "owl" and not handles.is_loaded("detector", "org/dino")  # evicted: LRU of 2
    assert handles.is_loaded("detector", "owl-a") and loads == [owl_a, dino, "owl"]
    with pytest.raises(ConfigError, match="unknown detector"):
        handles.select("escape")
    assert handles.model == "owl"


def test_cache_size_must_be_positive():
    with pytest.raises(ValueError, match="cache_size"):
        ModelHandles("owl", None, cache_size=0)


def test_side_by_side_results_equal_each_models_own_labeler(ui_config, tiny_owlv2, photos, tmp_path):
    """Two detectors on one image, each from its own features, give what each gives alone."""
    from autolabel.pipeline import DetectConfig, Encoded, Labeler
    from autolabel.testing.owlv2_checkpoint import build_owlv2_checkpoint

    models_dir = tmp_path / "models"
    second = build_owlv2_checkpoint(models_dir / "owl-b", seed=1)
    handles = ModelHandles(ui_config.model, None, device="cpu", models_dir=models_dir)
    tester = PromptTester(ui_config, handles)
    prompts = "car=car,van\nperson"
    first, other = (tester.query(photos[0], prompts, 0.0, "detect", key) for key in (None, "owl-b"))
    assert other.model == "owl-b" and "`owl-b`" in other.timing_text()
    assert handles.detector_for(None).backbone_calls == 1 and handles.detector_for("owl-b").backbone_calls == 1
    for result, checkpoint in ((first, tiny_owlv2), (other, second)):
        alone = Labeler(parse_prompts(prompts), model=str(checkpoint), device="cpu",
                        config=DetectConfig(threshold=0.0, nms_iou=ui_config.nms_iou))
        (expected,) = alone.label(Encoded([alone.prepare(photos[0], ui_config.max_image_pixels)]))
        np.testing.assert_array_equal(result.detections.xyxy, expected.xyxy)
        np.testing.assert_array_equal(result.detections.scores, expected.scores)
    assert not np.array_equal(first.detections.scores, other.detections.scores)  # two different models
    again = tester.query(photos[0], prompts, 0.5, "detect", "owl-b")  # re-queried from its own cached features
    assert again.backbone_seconds is None and handles.detector_for("owl-b").backbone_calls == 1
