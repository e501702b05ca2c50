"""OWLv2: our batched, text-cached detection equals the plain transformers recipe."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel.errors import ModelLoadError
from autolabel.models.owlv2 import Owlv2Detector
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig, Labeler


def _images():
    rng = np.random.default_rng(0)
    # Non-square on purpose: landscape, portrait, and a size that is not a multiple of the patch grid.
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in [(120, 80), (70, 130), (97, 61)]]


def _reference(path, image, queries):
    """The recipe from the transformers docs, one image at a time."""
    from transformers import Owlv2ForObjectDetection, Owlv2Processor

    processor = Owlv2Processor.from_pretrained(path)
    model = Owlv2ForObjectDetection.from_pretrained(path).eval()
    inputs = processor(text=[queries], images=image, return_tensors="pt", truncation=True)
    with torch.inference_mode():
        outputs = model(**inputs)
    result = processor.post_process_grounded_object_detection(
        outputs, threshold=0.0, target_sizes=[(image.height, image.width)]
    )[0]
    return result["boxes"].numpy(), result["scores"].numpy(), result["labels"].numpy()


def test_batched_cached_detection_equals_plain_recipe(tiny_owlv2):
    ontology = Ontology.from_prompts(["cat=cat,kitten", "dog"])
    detector = Owlv2Detector.from_pretrained(str(tiny_owlv2), exact=True)
    images = _images()
    # No NMS and threshold 0: every box the recipe returns must come back, in the same frame.
    config = DetectConfig(threshold=0.0, nms_iou=None)
    ours = Labeler(ontology, detector=detector, config=config).label_images(images)
    for image, dets in zip(images, ours):
        boxes, scores, labels = _reference(tiny_owlv2, image, ontology.queries)
        # The recipe does not clip; clip it the obvious way and drop boxes wholly outside the image.
        clipped = np.clip(boxes, 0, [image.width, image.height, image.width, image.height])
        inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        order = np.argsort(-scores[inside], kind="stable")
        assert len(dets) == inside.sum()
        np.testing.assert_allclose(dets.xyxy, clipped[inside][order], atol=1e-4)
        np.testing.assert_allclose(dets.scores, scores[inside][order], atol=1e-4)
        np.testing.assert_array_equal(dets.prompt_ids, labels[inside][order])
        np.testing.assert_array_equal(dets.class_ids, ontology.query_class_ids[labels[inside][order]])


def test_text_embeddings_are_computed_once_per_prompt_set(tiny_owlv2, monkeypatch):
    detector = Owlv2Detector.from_pretrained(str(tiny_owlv2))
    calls = []
    original = detector.model.owlv2.get_text_features
    monkeypatch.setattr(detector.model.owlv2, "get_text_features", lambda **kw: calls.append(1) or original(**kw))
    ontology = Ontology.from_prompts(["cat"])
    labeler = Labeler(ontology, detector=detector)
    for image in _images():
        labeler.label_images([image])
    assert len(calls) == 1


def test_long_prompt_is_truncated_with_a_warning(tiny_owlv2, caplog):
    detector = Owlv2Detector.from_pretrained(str(tiny_owlv2))
    long_prompt = "a very long description of a yellow industrial forklift carrying pallets in a warehouse"
    with caplog.at_level(logging.WARNING):
        text = detector.encode_text([long_prompt, "cat"])
    assert text.embeds.shape[0] == 2 and bool(text.mask.all())
    assert any("reads only the first 16" in r.message for r in caplog.records)


@pytest.mark.parametrize("case", ["missing", "pickle_only"])
def test_bad_checkpoints_raise_model_load_error(tmp_path, tiny_owlv2, case):
    if case == "missing":  # neither a local folder nor a reachable hub id
        target = tmp_path / "nope"
    else:  # a checkpoint with weights only as a pickle: refused, never unpickled
        import shutil

        target = tmp_path / "pickled"
        shutil.copytree(tiny_owlv2, target)
        from safetensors.torch import load_file

        torch.save(load_file(target / "model.safetensors"), target / "pytorch_model.bin")
        (target / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError):
        Owlv2Detector.from_pretrained(str(target))
