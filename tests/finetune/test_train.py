"""The fine-tuning loop on a tiny OWLv2 and synthetic shapes: it learns, the result loads through
the normal path, resume continues where it stopped, ensembling mixes weights as specified."""

from __future__ import annotations

import json
import math

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel

from autolabel.errors import ConfigError
from autolabel.finetune import TrainConfig, finetune, load_examples
from autolabel.finetune.data import AugmentConfig
from autolabel.finetune.metrics import coco_map


@pytest.fixture(scope="module")
def shapes(shapes_coco):
    return load_examples(shapes_coco)


def _heads(path):
    weights = load_file(str(path / "model.safetensors"))
    return {k: v for k, v in weights.items() if k.startswith(("class_head", "box_head"))}


def test_cheap_mode_learns_the_shapes_and_the_checkpoint_labels_like_any_model(tmp_path, owlv2_128, shapes):
    from autolabel.images import load_image
    from autolabel.models.owlv2 import Owlv2Detector
    from autolabel.pipeline import DetectConfig, Labeler

    out = tmp_path / "shapes-owlv2"
    config = TrainConfig(steps=400, mode="heads", lr=1e-2, batch_size=4, val_every=0, save_every=0, workers=1)
    result = finetune(shapes, out, base_model=str(owlv2_128), config=config, val=shapes, device="cpu")

    print(f"\nloss {result.first_loss:.3f} -> {result.last_loss:.3f}; train-set mAP "
          f"{result.val_before['map']:.4f} -> {result.val_final['map']:.4f} (mAP50 "
          f"{result.val_before['map50']:.4f} -> {result.val_final['map50']:.4f}) in {result.seconds:.1f}s")
    assert result.last_loss < 0.5 * result.first_loss
    assert result.val_before["map"] < 0.02
    assert result.val_final["map"] > result.val_before["map"] + 0.2

    # A normal checkpoint directory: safetensors weights + processor, and the training log.
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    assert (out / "processor_config.json").exists() and (out / "tokenizer_config.json").exists()
    assert not (out / "train_state").exists()
    log = json.loads((out / "training_log.json").read_text())
    assert log["finished"] and log["steps_done"] == 400 and len(log["history"]) == 400
    assert [v["step"] for v in log["validations"]] == [0, 400]

    # It loads through the normal path and labels images; the mAP of those labels is the one the
    # training loop measured (same preprocessing and post-processing as inference).
    Owlv2Detector.from_pretrained(str(out))
    labeler = Labeler(shapes.ontology, model=str(out), device="cpu", config=DetectConfig(threshold=0.0, nms_iou=0.5))
    predictions = [labeler.label_images([load_image(e.path).image])[0] for e in shapes.examples]
    relabelled = coco_map(shapes, predictions, shapes.ontology.names)
    assert relabelled["map"] == pytest.approx(result.val_final["map"], abs=0.03)
    # And a score threshold gives real detections of the right classes.
    labeler = Labeler(shapes.ontology, model=str(out), device="cpu", config=DetectConfig(threshold=0.3))
    found = labeler.label_images([load_image(shapes.examples[0].path).image])[0]
    assert len(found) >= 1


def test_resume_continues_from_the_saved_step_and_ends_where_an_uninterrupted_run_does(tmp_path, owlv2_128, shapes,
                                                                                       monkeypatch):
    config = TrainConfig(steps=6, mode="heads", lr=1e-2, save_every=2, workers=1, cache_views=2)
    base = str(owlv2_128)
    reference = finetune(shapes, tmp_path / "a", base_model=base, config=config, device="cpu")
    assert reference.resumed_from == 0

    out = tmp_path / "b"
    # Ctrl-C (or a UI stop button) after step 3: a checkpoint of step 3 is written, then it stops.
    seen: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        finetune(shapes, out, base_model=base, config=config, device="cpu",
                 on_step=lambda info: seen.append(info["step"]), should_stop=lambda: len(seen) >= 3)
    assert json.loads((out / "train_state" / "state.json").read_text())["step"] == 3

    def crash_at_5(info):
        if info["step"] == 5:
            raise RuntimeError("power cut")

    # A crash (no chance to save) at step 5: the last checkpoint is step 4 (save_every=2).
    with pytest.raises(RuntimeError, match="power cut"):
        finetune(shapes, out, base_model=base, config=config, device="cpu", on_step=crash_at_5)
    assert json.loads((out / "train_state" / "state.json").read_text())["step"] == 4

    steps_seen = []
    resumed = finetune(shapes, out, base_model=base, config=config, device="cpu",
                       on_step=lambda info: steps_seen.append(info["step"]))
    assert resumed.resumed_from == 4 and steps_seen == [5, 6]
    log = json.loads((out / "training_log.json").read_text())
    assert [h["step"] for h in log["history"]] == [1, 2, 3, 4, 5, 6]
    ref_log = json.loads((tmp_path / "a" / "training_log.json").read_text())
    np.testing.assert_allclose([h["loss"] for h in log["history"]], [h["loss"] for h in ref_log["history"]], rtol=1e-5)
    ours, theirs = _heads(out), _heads(tmp_path / "a")
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6)

    # Finished: running it again returns the recorded result before loading the model or any image;
    # other settings into the same folder are refused.
    def no_loading(*args, **kwargs):
        raise AssertionError("a finished run loaded the model or an image")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(no_loading))
    monkeypatch.setattr(PIL.Image, "open", no_loading)
    again = finetune(shapes, out, base_model=base, config=config, device="cpu", on_step=crash_at_5)
    assert again.steps == 6 and again.resumed_from == 4 and again.last_loss == resumed.last_loss
    with pytest.raises(ConfigError, match="other settings"):
        finetune(shapes, out, base_model=base, config=TrainConfig(steps=7, mode="heads"), device="cpu")


def test_full_mode_lower_text_lr_and_weight_space_ensembling(tmp_path, owlv2_128, shapes):
    from transformers import Owlv2ForObjectDetection

    small = type(shapes)(shapes.examples[:4], shapes.ontology, "4 shapes")
    config = TrainConfig(steps=3, mode="full", lr=1e-3, text_lr=1e-5, batch_size=2, save_every=0, workers=1,
                         augment=AugmentConfig(hflip=0.5, crop=0.5), warmup_steps=0)
    plain = finetune(small, tmp_path / "plain", base_model=str(owlv2_128), config=config, device="cpu")
    assert math.isfinite(plain.last_loss)
    from dataclasses import replace

    mixed = finetune(small, tmp_path / "mixed", base_model=str(owlv2_128), config=replace(config, ensemble_alpha=0.25),
                     device="cpu")
    assert "ensembled" in mixed.weights

    base = load_file(str(owlv2_128 / "model.safetensors"))
    tuned = load_file(str(tmp_path / "plain" / "model.safetensors"))
    ens = load_file(str(tmp_path / "mixed" / "model.safetensors"))

    def change(prefix):
        return max(float((tuned[k] - base[k]).abs().max()) for k in base if k.startswith(prefix))

    # Adam moves each weight by about lr per step: the text tower barely, the vision tower and heads a lot.
    assert 0 < change("owlv2.text_model.") < 1e-4
    assert change("owlv2.vision_model.") > 1e-3 and change("class_head.") > 1e-3
    assert change("objectness_head.") == 0  # never trained
    for k in base:
        torch.testing.assert_close(ens[k], 0.25 * tuned[k] + 0.75 * base[k], rtol=1e-5, atol=1e-6)
    # The output loads like any checkpoint.
    Owlv2ForObjectDetection.from_pretrained(tmp_path / "mixed", use_safetensors=True)


def test_full_mode_training_loss_decreases(tmp_path, owlv2_128, shapes):
    # Every tower trains, on freshly augmented images each step (crops and flips).
    config = TrainConfig(steps=40, mode="full", lr=1e-3, batch_size=4, save_every=0, workers=2)
    result = finetune(shapes, tmp_path / "full", base_model=str(owlv2_128), config=config, device="cpu")
    print(f"\nfull mode: loss {result.first_loss:.3f} -> {result.last_loss:.3f} in {result.seconds:.1f}s")
    assert result.last_loss < 0.7 * result.first_loss


def test_gradient_checkpointing_keeps_the_numbers_and_accumulation_steps_once(tmp_path, owlv2_128, shapes):
    """Checkpointing only recomputes activations: the same losses and weights. With accumulation,
    one optimizer step (one history record) takes several micro-batches."""
    from dataclasses import replace

    base = TrainConfig(steps=2, mode="full", lr=1e-3, batch_size=4, save_every=0, workers=1, warmup_steps=0,
                       augment=AugmentConfig.none(), num_negatives=0)
    runs = {}
    configs = {"plain": base, "ckpt": replace(base, gradient_checkpointing=True),
               "accum": replace(base, batch_size=2, grad_accum=2)}
    for name, cfg in configs.items():
        finetune(shapes, tmp_path / name, base_model=str(owlv2_128), config=cfg, device="cpu")
        runs[name] = json.loads((tmp_path / name / "training_log.json").read_text())["history"]
    np.testing.assert_allclose([h["loss"] for h in runs["ckpt"]], [h["loss"] for h in runs["plain"]], rtol=1e-5)
    plain, ckpt = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("plain", "ckpt"))
    base = load_file(str(owlv2_128 / "model.safetensors"))
    for k, v in plain.items():  # every tower got its gradients through the recomputation
        torch.testing.assert_close(ckpt[k], v, rtol=1e-4, atol=1e-7)
    assert not torch.equal(ckpt["owlv2.text_model.encoder.layers.0.mlp.fc1.weight"],
                           base["owlv2.text_model.encoder.layers.0.mlp.fc1.weight"])
    # Same 4 images per step as the plain run (2 x 2), normalised per micro-batch: close, not equal.
    assert [h["step"] for h in runs["accum"]] == [1, 2]
    np.testing.assert_allclose(runs["accum"][0]["loss"], runs["plain"][0]["loss"], rtol=0.5)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_keep_best_returns_the_best_validated_weights(tmp_path, owlv2_128, shapes):
    # A learning rate this high wrecks the heads from the first step: every later validation is
    # worse than the starting weights, so the output must be the starting heads, not the last ones.
    config = TrainConfig(steps=3, mode="heads", lr=1.0, warmup_steps=0, max_grad_norm=0, val_every=1,
                         save_every=0, workers=1, cache_views=1)
    result = finetune(shapes, tmp_path / "out", base_model=str(owlv2_128), config=config, val=shapes, device="cpu")
    log = json.loads((tmp_path / "out" / "training_log.json").read_text())
    maps = {v["step"]: v["map"] for v in log["validations"]}
    assert sorted(maps) == [0, 1, 2, 3] and max(maps[s] for s in (1, 2, 3)) < maps[0]
    assert result.best_step == 0 and result.val_final["map"] == maps[0] and "step 0" in result.weights
    base = load_file(str(owlv2_128 / "model.safetensors"))
    for name, value in _heads(tmp_path / "out").items():
        torch.testing.assert_close(value, base[name], rtol=0, atol=0)


def test_out_dir_must_be_new_or_ours(tmp_path, owlv2_128, shapes):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        finetune(shapes, tmp_path / "busy", base_model=str(owlv2_128), config=TrainConfig(steps=1, mode="heads"))


def test_half_precision_needs_cuda(tmp_path, owlv2_128, shapes):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ConfigError, match="CUDA"):
        finetune(shapes, tmp_path / "o", base_model=str(owlv2_128), config=TrainConfig(steps=1, precision="bf16"),
                 device="cpu")
