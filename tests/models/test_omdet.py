"""OmDet-Turbo: equal to the plain transformers recipe (its NMS included), prompts cached, boxes on
the right original pixels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel.errors import ModelLoadError
from autolabel.geometry import Size
from autolabel.models.omdet import OmDetTurboDetector
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig, Labeler
from autolabel.testing.omdet_checkpoint import build_omdet_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_omdet_checkpoint(tmp_path_factory.mktemp("omdet"))


@pytest.fixture(scope="module")
def detector(checkpoint):
    return OmDetTurboDetector.from_pretrained(str(checkpoint))


def _images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in [(130, 50), (60, 140)]]


def test_equal_to_plain_recipe(checkpoint):
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    detector = OmDetTurboDetector.from_pretrained(str(checkpoint), exact=True)
    ontology = Ontology.from_prompts(["cat", "remote control", "dog"])
    images = _images()
    ours = Labeler(ontology, detector=detector, config=DetectConfig(threshold=0.0, nms_iou=0.5)).label_images(images)
    processor = AutoProcessor.from_pretrained(checkpoint)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(checkpoint).eval()
    for image, dets in zip(images, ours):
        inputs = processor(images=image, text=ontology.queries, return_tensors="pt")
        with torch.inference_mode():
            outputs = model(**inputs)
        plain = processor.post_process_grounded_object_detection(
            outputs, text_labels=ontology.queries, threshold=0.0, nms_threshold=0.5,
            target_sizes=[(image.height, image.width)])[0]
        order = np.argsort(-plain["scores"].numpy(), kind="stable")
        assert len(dets) == len(order)
        np.testing.assert_allclose(dets.xyxy, plain["boxes"].numpy()[order], atol=1e-3)
        np.testing.assert_allclose(dets.scores, plain["scores"].numpy()[order], atol=1e-4)
        np.testing.assert_array_equal(dets.prompt_ids, plain["labels"].numpy()[order])


def test_prompts_are_encoded_once(detector, monkeypatch):
    calls = []
    original = detector.model.get_language_embedding
    monkeypatch.setattr(detector.model, "get_language_embedding", lambda *a: calls.append(1) or original(*a))
    first = detector.encode_text(["zebra", "yak"])
    assert detector.encode_text(["zebra", "yak"]) is first
    assert len(calls) == 1


@pytest.mark.parametrize("size", [
    Size(1000, 400),  # landscape
    Size(300, 900),   # portrait
    Size(2000, 300),  # panorama
])
def test_known_boxes_land_on_original_pixels(detector, monkeypatch, size):
    boxes = torch.tensor([[[0.25, 0.5, 0.1, 0.2],    # inside
                           [1.5, 0.5, 0.2, 0.2],     # wholly right of the image: dropped
                           [0.95, 0.95, 0.2, 0.2]]])  # across the corner: clipped
    logits = torch.full((1, 3, 1), 3.0)

    def decoder(states, class_features, task_features, task_mask, return_dict=True):
        b = states[0].shape[0]
        return SimpleNamespace(decoder_classes=[logits.expand(b, -1, -1)], decoder_coords=[boxes.expand(b, -1, -1)])

    monkeypatch.setattr(detector.model.decoder, "forward", decoder)
    ontology = Ontology.from_prompts(["cat"])
    image = Image.new("RGB", tuple(size), (120, 80, 40))
    dets = Labeler(ontology, detector=detector, config=DetectConfig(threshold=0.5, nms_iou=None)).label_images([image])[0]
    w, h = size
    expected = np.array([[0.2 * w, 0.4 * h, 0.3 * w, 0.6 * h], [0.85 * w, 0.85 * h, w, h]])
    np.testing.assert_allclose(dets.xyxy[np.argsort(dets.xyxy[:, 0])], expected, atol=1e-3 * max(w, h))


def test_other_model_types_are_refused(tiny_owlv2):
    with pytest.raises(ModelLoadError, match="owlv2"):
        OmDetTurboDetector.from_pretrained(str(tiny_owlv2))
