"""Grounding DINO / MM-Grounding-DINO: equal to the plain transformers recipe, prompts mapped by
token span, long ontologies split into passes, boxes on the right original pixels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel.errors import ConfigError, ModelLoadError
from autolabel.geometry import Size
from autolabel.models.base import model_inputs
from autolabel.models.deformable import GatheredDeformableAttention
from autolabel.models.grounding_dino import CanvasPreprocessor, GroundingDinoDetector, boxes_to_pixels, phrase
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig, Labeler
from autolabel.testing.grounding_dino_checkpoint import build_grounding_dino_checkpoint

@pytest.fixture(scope="module", params=["grounding-dino", "mm-grounding-dino"])
def any_variant(request, tmp_path_factory):
    return build_grounding_dino_checkpoint(tmp_path_factory.mktemp(request.param), variant=request.param)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_grounding_dino_checkpoint(tmp_path_factory.mktemp("gdino"))


@pytest.fixture(scope="module")
def detector(checkpoint):
    return GroundingDinoDetector.from_pretrained(str(checkpoint))


@pytest.fixture(scope="module")
def short_text_detector(tmp_path_factory):
    """A model that reads 16 text tokens, so a few prompts need several passes."""
    path = build_grounding_dino_checkpoint(tmp_path_factory.mktemp("gdino-16"), max_text_len=16)
    return GroundingDinoDetector.from_pretrained(str(path))


def _images():
    rng = np.random.default_rng(0)
    # Landscape and portrait, neither a multiple of the backbone's stride.
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in [(130, 50), (60, 140)]]


def _plain_recipe(path, images, queries):
    """The recipe from the transformers docs, one image at a time: (boxes, scores, best token) each."""
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(path).eval()
    results = []
    for image in images:
        inputs = processor(images=image, text=queries, return_tensors="pt")
        with torch.inference_mode():
            outputs = model(**inputs)
        result = processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=0.0, text_threshold=0.0,
            target_sizes=[(image.height, image.width)])[0]
        results.append((result["boxes"].numpy(), result["scores"].numpy(), outputs.logits[0].argmax(-1).numpy()))
    return results


def test_equal_to_plain_recipe(any_variant):
    detector = GroundingDinoDetector.from_pretrained(str(any_variant), exact=True)
    ontology = Ontology.from_prompts(["cat=a cat", "catfish=a catfish", "remote=remote control"])
    text = detector.encode_text(ontology.queries)
    spans = text.passes[0].spans
    images = _images()
    scores = detector.score(detector.encode_images(model_inputs(detector.preprocessor, images)), text)
    config = DetectConfig(threshold=0.0, nms_iou=None)
    dets = Labeler(ontology, detector=detector, config=config).label_images(images)  # mixed sizes, one batch
    for i, (image, (boxes, plain_scores, best_token)) in enumerate(
            zip(images, _plain_recipe(any_variant, images, ontology.queries))):
        # Candidates: every box of the recipe, in its order.
        np.testing.assert_allclose(boxes_to_pixels(scores.pred_boxes[i].numpy(), Size(image.width, image.height)),
                                   boxes, atol=1e-3)
        logits = scores.logits[i].numpy()
        our_scores = 1 / (1 + np.exp(-logits.max(axis=1).astype(np.float64)))
        # The recipe's score is the best of all tokens, [CLS], "." and [SEP] included; ours the best
        # token inside a prompt. They agree whenever the best token lies in a prompt.
        in_prompt = np.array([any(a <= t < b for a, b in spans) for t in best_token])
        assert in_prompt.sum() >= 3
        np.testing.assert_allclose(our_scores[in_prompt], plain_scores[in_prompt], atol=1e-4)
        assert (our_scores[~in_prompt] <= plain_scores[~in_prompt] + 1e-6).all()
        winner = logits.argmax(axis=1)
        for t, q in zip(best_token[in_prompt], winner[in_prompt]):
            assert spans[q][0] <= t < spans[q][1]
        # Detections: the candidates clipped to the image, empty ones dropped, by score.
        clipped = np.clip(boxes, 0, [image.width, image.height, image.width, image.height])
        inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        order = np.argsort(-our_scores[inside], kind="stable")
        assert len(dets[i]) == inside.sum()
        np.testing.assert_allclose(dets[i].xyxy, clipped[inside][order], atol=1e-3)
        np.testing.assert_allclose(dets[i].scores, our_scores[inside][order], atol=1e-6)
        np.testing.assert_array_equal(dets[i].prompt_ids, winner[inside][order])


def test_text_backbone_runs_once_per_text(checkpoint, monkeypatch):
    """The equality test above runs through the cache and the gathered deformable attention;
    here the backbone is counted: once per distinct text, whatever the batches."""
    detector = GroundingDinoDetector.from_pretrained(str(checkpoint))
    assert any(isinstance(m, GatheredDeformableAttention) for m in detector.model.modules())
    backbone = detector.model.model.text_backbone.backbone
    rows = []
    original = backbone.forward
    monkeypatch.setattr(backbone, "forward", lambda input_ids, *a, **k: rows.append(len(input_ids)) or original(
        input_ids, *a, **k))
    config = DetectConfig(threshold=0.0, nms_iou=None)
    images = _images()
    cached = Labeler(Ontology.from_prompts(["cat", "dog"]), detector=detector, config=config)
    first = cached.label_images(images)
    again = cached.label_images(images[:1] * 3)
    Labeler(Ontology.from_prompts(["fish"]), detector=detector, config=config).label_images(images)
    assert rows == [1, 1]  # "cat. dog." once, "fish." once, each on one row
    np.testing.assert_allclose(again[2].xyxy, first[0].xyxy, atol=1e-3)  # another batch size: float rounding
    np.testing.assert_allclose(again[2].scores, first[0].scores, atol=1e-5)


def test_images_per_forward_does_not_change_detections(checkpoint, monkeypatch):
    detector = GroundingDinoDetector.from_pretrained(str(checkpoint))
    assert detector.images_per_forward == 1  # on the CPU
    forwards = []
    original = detector.model.forward
    monkeypatch.setattr(detector.model, "forward", lambda **k: forwards.append(len(k["pixel_values"])) or original(**k))
    config = DetectConfig(threshold=0.0, nms_iou=None)
    images = [_images()[0]] * 2 + _images()[1:]  # two of one extent, one of another
    one_by_one = Labeler(Ontology.from_prompts(["cat"]), detector=detector, config=config).label_images(images)
    detector.images_per_forward = None
    grouped = Labeler(Ontology.from_prompts(["cat"]), detector=detector, config=config).label_images(images)
    assert forwards == [1, 1, 1, 2, 1]
    for a, b in zip(one_by_one, grouped):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_fast_preprocessing_equals_exact_on_the_same_pixels(detector):
    exact = CanvasPreprocessor(detector.processor.image_processor, draft=False)
    fast = detector.preprocessor
    images = _images()
    a, b = model_inputs(exact, images), model_inputs(fast, images)
    assert a.shape == (2, 3, 96, 96)  # the canvas: the processor's longest edge
    torch.testing.assert_close(a, b, equal_nan=True)
    assert fast.decode_side(Size(4000, 3000)) is not None and exact.decode_side(Size(4000, 3000)) is None


def test_prompts_are_joined_the_way_the_model_reads_them(detector):
    text = detector.encode_text(["A Cat", "remote   control", "St. Bernard?"])
    assert text.passes[0].text == "a cat. remote control. st bernard."
    assert phrase("A St. Bernard?") == "a st bernard"


def _fake_model(logits, boxes):
    """Stands in for the model: fixed per-token logits (N, T) and boxes (N, 4) for every image."""
    def forward(pixel_values, pixel_mask, input_ids, **_):
        b = pixel_values.shape[0]
        full = torch.full((b, logits.shape[0], 256), -torch.inf)
        full[:, :, : logits.shape[1]] = torch.as_tensor(logits, dtype=torch.float32)
        return SimpleNamespace(logits=full, pred_boxes=torch.as_tensor(boxes, dtype=torch.float32).expand(b, -1, -1))
    return forward


def test_sub_words_shared_with_another_prompt_map_to_their_own_prompt(detector, monkeypatch):
    ontology = Ontology.from_prompts(["cat=a cat", "catfish=a catfish"])
    # "[CLS] a cat . a cat ##fish . [SEP]": "cat" is token 2 in the first phrase, 5 in the second.
    tokens = detector.processor.tokenizer.convert_ids_to_tokens(
        detector.encode_text(ontology.queries).passes[0].tokens["input_ids"][0])
    assert tokens == ["[CLS]", "a", "cat", ".", "a", "cat", "##fish", ".", "[SEP]"]
    logits = np.full((3, 9), -9.0)
    logits[0, 2] = 3.0  # the first prompt's "cat"
    logits[1, 5] = 3.0  # the second prompt's "cat"
    logits[2, 6] = 3.0  # "##fish"
    boxes = [[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]]
    monkeypatch.setattr(detector, "model", _fake_model(logits, boxes))
    dets = Labeler(ontology, detector=detector, config=DetectConfig(threshold=0.5)).label_images(_images()[:1])[0]
    by_x = np.argsort(dets.xyxy[:, 0])
    np.testing.assert_array_equal(dets.class_ids[by_x], [0, 1, 1])


@pytest.mark.parametrize("size", [
    Size(1000, 400),  # landscape
    Size(300, 900),   # portrait
    Size(2000, 300),  # panorama
])
def test_known_boxes_land_on_original_pixels(detector, monkeypatch, size):
    ontology = Ontology.from_prompts(["cat=a cat"])
    logits = np.full((3, 5), -9.0)
    logits[:, 2] = 3.0
    boxes = [[0.25, 0.5, 0.1, 0.2],   # inside: (200, 160, 300, 240) on 1000 x 400
             [1.5, 0.5, 0.2, 0.2],    # wholly right of the image: dropped
             [0.95, 0.95, 0.2, 0.2]]  # across the corner: clipped
    monkeypatch.setattr(detector, "model", _fake_model(logits, boxes))
    image = Image.new("RGB", tuple(size), (120, 80, 40))
    dets = Labeler(ontology, detector=detector, config=DetectConfig(threshold=0.5, nms_iou=None)).label_images([image])[0]
    w, h = size
    expected = np.array([[0.2 * w, 0.4 * h, 0.3 * w, 0.6 * h], [0.85 * w, 0.85 * h, w, h]])
    got = dets.xyxy[np.argsort(dets.xyxy[:, 0])]
    np.testing.assert_allclose(got, expected, atol=1e-3 * max(w, h))


def test_long_ontology_is_split_and_equals_separate_calls(short_text_detector):
    detector = short_text_detector
    names = ["red cat", "blue dog", "red fish", "blue car", "the person", "a remote control"]
    ontology = Ontology.from_prompts(names)
    text = detector.encode_text(ontology.queries)
    assert len(text.passes) > 1
    assert all(p.tokens["input_ids"].shape[1] <= 16 for p in text.passes)
    assert sorted(i for p in text.passes for i in p.query_index) == list(range(len(names)))
    config = DetectConfig(threshold=0.0, nms_iou=None)
    images = _images()[1:]
    together = Labeler(ontology, detector=detector, config=config).label_images(images)
    separate_calls = [Labeler(Ontology.from_prompts([names[q] for q in p.query_index]), detector=detector,
                              config=config).label_images(images) for p in text.passes]
    for i in range(len(images)):
        parts = []
        for prompt_pass, dets in zip(text.passes, separate_calls):
            d = dets[i]
            parts.append(np.column_stack([d.xyxy, d.scores, np.asarray(prompt_pass.query_index)[d.class_ids]]))
        separate = np.concatenate(parts)
        separate = separate[np.lexsort(separate.T[::-1])]
        joined = np.column_stack([together[i].xyxy, together[i].scores, together[i].class_ids])
        np.testing.assert_allclose(joined[np.lexsort(joined.T[::-1])], separate, atol=1e-5)


def test_a_prompt_longer_than_the_model_reads_is_refused(short_text_detector):
    with pytest.raises(ConfigError, match="tokens"):
        short_text_detector.encode_text(["a very long prompt about a red cat and a blue dog and a fish"])


def test_other_model_types_are_refused(tiny_owlv2):
    with pytest.raises(ModelLoadError, match="owlv2"):
        GroundingDinoDetector.from_pretrained(str(tiny_owlv2))


def test_a_negative_phrase_drops_the_boxes_it_matches_better(detector, monkeypatch):
    ontology = Ontology.from_prompts(["cat=cat;not=a cat"])
    tokens = detector.processor.tokenizer.convert_ids_to_tokens(
        detector.encode_text(ontology.queries + ontology.negative_queries).passes[0].tokens["input_ids"][0])
    assert tokens == ["[CLS]", "cat", ".", "a", "cat", ".", "[SEP]"]
    logits = np.full((3, 7), -9.0)
    logits[:, 1] = [3.0, 2.0, 4.0]  # "cat"
    logits[:, 3:5] = np.array([[-2.0], [4.0], [2.0]])  # "a cat": wins only on the second box
    boxes = [[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]]
    monkeypatch.setattr(detector, "model", _fake_model(logits, boxes))
    dets = Labeler(ontology, detector=detector, config=DetectConfig(threshold=0.5)).label_images(_images()[:1])[0]
    centres = np.sort((dets.xyxy[:, 0] + dets.xyxy[:, 2]) / 2 / _images()[0].width)
    np.testing.assert_allclose(centres, [0.2, 0.8], atol=1e-3)
    assert dets.class_ids.tolist() == [0, 0]
