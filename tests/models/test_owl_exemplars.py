"""Exemplar (visual) prompts and negative prompts on the OWL families, on tiny random checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel.errors import ConfigError
from autolabel.models.owlv2 import Owlv2Detector, boxes_to_pixels
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig, Encoded, Labeler

CONFIG = DetectConfig(threshold=0.0, nms_iou=None)


def _photo(path, size, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def owlv2(tiny_owlv2):
    return Owlv2Detector.from_pretrained(str(tiny_owlv2), exact=True)


@pytest.fixture(scope="module")
def owlvit(tmp_path_factory):
    from autolabel.models.owlvit import OwlVitDetector
    from autolabel.testing.owlvit_checkpoint import build_owlvit_checkpoint

    return OwlVitDetector.from_pretrained(str(build_owlvit_checkpoint(tmp_path_factory.mktemp("owlvit"))), exact=True)


def _exemplar_ontology(image, box, name="widget"):
    return Ontology.from_data([{"name": name, "exemplars": [{"image": str(image), "box": list(box)}]}])


def _features(labeler, path):
    prepared = labeler.prepare(path)
    return prepared, labeler.encode([prepared]).features


@pytest.mark.parametrize("family", ["owlv2", "owlvit"])
def test_the_exemplar_query_is_the_predicted_box_it_matches(family, request, tmp_path):
    # Known answer: an exemplar drawn exactly on predicted box j picks box j's class embedding.
    detector = request.getfixturevalue(family)
    photo = _photo(tmp_path / "q.png", (90, 60), seed=1)
    labeler = Labeler(Ontology.from_prompts(["x"]), detector=detector)
    prepared, features = _features(labeler, photo)
    width, height = prepared.size
    pred = features.pred_boxes[0].numpy()
    if family == "owlv2":
        pixels = boxes_to_pixels(pred, width, height)
    else:  # OWL-ViT's boxes are normalised per axis
        cx, cy, w, h = pred.T
        pixels = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * [width, height, width, height]
    inside = np.flatnonzero((pixels[:, 0] >= 0) & (pixels[:, 1] >= 0) & (pixels[:, 2] <= width)
                            & (pixels[:, 3] <= height) & (pixels[:, 2] > pixels[:, 0] + 1) & (pixels[:, 3] > pixels[:, 1] + 1))
    assert len(inside)
    j = int(inside[len(inside) // 2])
    embeds = detector.embed_exemplars(features, pixels[j : j + 1], prepared.size)
    with torch.inference_mode():
        _, class_embeds = detector.model.class_predictor(features.image_feats)
    torch.testing.assert_close(embeds[0], class_embeds[0, j].float())


def test_an_exemplar_class_detects_as_the_image_guided_recipe(owlv2, tiny_owlv2, tmp_path, monkeypatch):
    """The class-head logits and boxes of an exemplar-only class equal transformers'
    ``image_guided_detection`` given the same query embedding (its own picks the most object-like
    box of the query image, which is not the box the user drew)."""
    from transformers import Owlv2ForObjectDetection, Owlv2Processor

    query = _photo(tmp_path / "query.png", (80, 50), seed=2)
    target = _photo(tmp_path / "target.png", (70, 90), seed=3)
    ontology = _exemplar_ontology(query, (10, 5, 50, 40))
    labeler = Labeler(ontology, detector=owlv2, config=CONFIG)
    prepared, features = _features(labeler, query)
    chosen = owlv2.embed_exemplars(features, np.array([[10, 5, 50, 40]], dtype=np.float32), prepared.size)

    launched = labeler.launch([labeler.prepare(target)])
    [dets] = labeler.finish(launched)

    processor = Owlv2Processor.from_pretrained(tiny_owlv2)
    model = Owlv2ForObjectDetection.from_pretrained(tiny_owlv2).eval()
    monkeypatch.setattr(model, "embed_image_query", lambda *a, **k: (chosen[None], None, None))
    with torch.inference_mode():
        outputs = model.image_guided_detection(
            pixel_values=processor(images=Image.open(target), return_tensors="pt")["pixel_values"],
            query_pixel_values=processor(images=Image.open(query), return_tensors="pt")["pixel_values"])
    torch.testing.assert_close(launched.scores.logits, outputs.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(launched.scores.pred_boxes, outputs.target_pred_boxes)
    assert len(dets) and (dets.class_ids == 0).all() and (dets.prompt_ids == -1).all()
    # Every box of the recipe that is not wholly in the padding, scored sigmoid(logit).
    boxes = np.clip(boxes_to_pixels(outputs.target_pred_boxes[0].numpy(), 70, 90), 0, [70, 90, 70, 90])
    inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    expected = torch.sigmoid(outputs.logits[0, :, 0]).numpy()[inside]
    np.testing.assert_allclose(np.sort(dets.scores), np.sort(expected), atol=1e-5)


def test_exemplars_and_text_mix_and_average(owlv2, tmp_path, monkeypatch):
    a = _photo(tmp_path / "a.png", (60, 60), seed=4)
    b = _photo(tmp_path / "b.png", (50, 40), seed=5)
    ontology = Ontology.from_data([
        {"name": "cat", "prompts": ["cat"], "negatives": ["toy cat"]},
        {"name": "widget", "exemplars": [{"image": str(a), "box": [0, 0, 30, 30]},
                                         {"image": str(b), "box": [10, 10, 40, 30]},
                                         {"image": str(b), "box": [0, 0, 20, 20], "negative": True}]},
    ])
    labeler = Labeler(ontology, detector=owlv2, config=CONFIG)
    calls = []
    encode_images = owlv2.encode_images
    monkeypatch.setattr(owlv2, "encode_images", lambda pixels: calls.append(len(pixels)) or encode_images(pixels))
    prepared = labeler.prepare(a)
    first = labeler.score(labeler.encode([prepared]))
    second = labeler.score(labeler.encode([prepared]))
    assert calls == [1, 1, 1, 1]  # each exemplar image once (a, b), then the batch twice
    # Columns: "cat", widget's exemplars, "toy cat", widget's negative exemplar.
    assert first.scores.logits.shape[-1] == 4
    torch.testing.assert_close(first.scores.logits, second.scores.logits)

    def embedding(path, box):
        p, features = _features(Labeler(Ontology.from_prompts(["x"]), detector=owlv2), path)
        return owlv2.embed_exemplars(features, np.array([box], dtype=np.float32), p.size)[0]

    mean = (torch.nn.functional.normalize(torch.stack([embedding(a, [0, 0, 30, 30]), embedding(b, [10, 10, 40, 30])]),
                                          dim=-1).mean(0))
    text = owlv2.encode_text(["cat", "toy cat"])
    with torch.inference_mode():
        logits, _ = owlv2.model.class_predictor(first.encoded.features.image_feats, mean[None, None])
    torch.testing.assert_close(first.scores.logits[..., 1], logits[..., 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(first.scores.logits[..., [0, 2]], owlv2.score(first.encoded.features, text).logits)


def test_exemplar_embeddings_are_remembered_per_detector(owlv2, tiny_owlv2, tmp_path, monkeypatch):
    """A UI makes a Labeler per query: the exemplar image is encoded once per detector object, by
    content and box, whatever the labeler's tiling; another detector object has its own memo."""
    import gc
    import weakref

    from autolabel.models.owl_exemplars import ExemplarMemo

    image = _photo(tmp_path / "m.png", (64, 48), seed=11)

    def ontology(box):
        return Ontology.from_data([{"name": "widget", "exemplars": [
            {"image": str(image), "box": box}, {"image": str(image), "box": [5, 5, 40, 40], "negative": True}]}])

    def counted(detector):
        calls, encode_images = [], detector.encode_images
        monkeypatch.setattr(detector, "encode_images", lambda pixels: calls.append(len(pixels)) or encode_images(pixels))
        return calls

    calls = counted(owlv2)
    first = Labeler(ontology([0, 0, 30, 30]), detector=owlv2, config=CONFIG)._queries()
    second = Labeler(ontology([0, 0, 30, 30]), detector=owlv2, config=CONFIG, tiles="2x2")._queries()
    assert calls == [1]  # one pass for both exemplars of the image, then none
    torch.testing.assert_close(first.embeds, second.embeds)
    Labeler(ontology([1, 1, 30, 30]), detector=owlv2, config=CONFIG)._queries()
    assert calls == [1, 1]  # a moved box is a new exemplar (the negative one is remembered)

    other = Owlv2Detector.from_pretrained(str(tiny_owlv2), exact=True)
    torch.testing.assert_close(Labeler(ontology([0, 0, 30, 30]), detector=other)._queries().embeds, first.embeds)
    assert calls == [1, 1] and other in ExemplarMemo._memos  # its own memo, its own pass
    gone = weakref.ref(other)
    del other
    gc.collect()
    assert gone() is None  # the memo does not keep a detector alive; its entry went with it


def test_the_exemplar_memo_keeps_the_most_recently_used(monkeypatch):
    from types import SimpleNamespace

    from autolabel.models.owl_exemplars import ExemplarMemo

    monkeypatch.setattr(ExemplarMemo, "KEPT", 2)
    a, b, c = (SimpleNamespace(sha256=f"{i}", box=(0, 0, 1, 1), negative=False) for i in "abc")
    memo = ExemplarMemo()
    memo.put({ExemplarMemo.key(a): "row a", ExemplarMemo.key(b): "row b"})
    assert memo.get([a]) == {ExemplarMemo.key(a): "row a"}  # a is now the most recent
    memo.put({ExemplarMemo.key(c): "row c"})
    assert memo.get([a, b, c]) == {ExemplarMemo.key(a): "row a", ExemplarMemo.key(c): "row c"}
    negative_a = SimpleNamespace(sha256="a", box=(0, 0, 1, 1), negative=True)
    assert memo.get([negative_a]) == {}  # a negative example is another exemplar


def test_a_negative_prompt_drops_exactly_the_boxes_it_wins(owlv2, tmp_path):
    photo = _photo(tmp_path / "t.png", (90, 70), seed=6)
    plain = Ontology.from_prompts(["cat=cat,kitten", "dog"])
    negative = Ontology.from_prompts(["cat=cat,kitten;not=tiger", "dog"])
    base = Labeler(plain, detector=owlv2, config=CONFIG)
    encoded = base.encode([base.prepare(photo)])
    [without] = base.label(encoded)
    [with_negative] = Labeler(negative, detector=owlv2, config=CONFIG).label(encoded)
    logits = owlv2.score(encoded.features, owlv2.encode_text(["cat", "kitten", "dog", "tiger"])).logits[0].numpy()
    best = logits[:, :3].argmax(1)
    tiger_wins = (best < 2) & (logits[:, 3] > logits[:, :2].max(1))
    boxes = np.clip(boxes_to_pixels(encoded.features.pred_boxes[0].numpy(), 90, 70), 0, [90, 70, 90, 70])

    def by_box(dets):
        return {tuple(np.round(b, 3)): (int(c), float(s)) for b, c, s in zip(dets.xyxy, dets.class_ids, dets.scores)}

    before, after = by_box(without), by_box(with_negative)
    assert before.keys() == after.keys()
    changed = 0
    for i, box in enumerate(boxes):
        key = tuple(np.round(box.astype(np.float64), 3))
        if key not in after:
            continue  # wholly in the padding
        if tiger_wins[i]:  # no longer a cat: the dog prompt is its best left
            assert after[key] == (1, pytest.approx(1 / (1 + np.exp(-logits[i, 2])), rel=1e-5))
            changed += 1
        else:
            assert after[key] == before[key]
    assert changed and changed < len(after)  # the random weights give both cases


def test_families_without_support_say_so(tmp_path):
    photo = _photo(tmp_path / "a.png", (20, 20), seed=7)

    class TextOnly:  # a detector with neither negatives nor exemplars
        family = "Text-Only"
        name, device, yields_masks, compiled = "text-only", "cpu", False, False

        def encode_text(self, queries):
            return queries

    batch_encoded = Encoded([object()])
    for ontology, message in [
        (Ontology.from_prompts(["cat;not=tiger"]), "negative prompts are not supported by Text-Only"),
        (_exemplar_ontology(photo, (0, 0, 9, 9)), "exemplars .* not supported by Text-Only"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Labeler(ontology, detector=TextOnly()).score(batch_encoded)
