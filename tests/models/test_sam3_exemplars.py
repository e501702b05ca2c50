"""SAM 3 exemplars (box prompts): on their own image a class's text and boxes equal the recipe with
``text`` + ``input_boxes`` + ``input_boxes_labels`` (1 positive, 0 negative); on another image their
tokens are the ones computed on their own; negative text prompts are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel.errors import ConfigError
from autolabel.geometry import rle_to_mask
from autolabel.models.base import model_inputs
from autolabel.models.sam3 import Sam3Detector
from autolabel.ontology import Exemplar, Ontology, OntologyClass
from autolabel.pipeline import DetectConfig, Labeler

ALL = DetectConfig(threshold=0.0, nms_iou=None)  # every candidate comes back
BOX = (12.0, 8.0, 70.0, 50.0)


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory) -> Path:
    from autolabel.testing.sam3_checkpoint import build_sam3_checkpoint

    return build_sam3_checkpoint(tmp_path_factory.mktemp("sam3-tiny"))


@pytest.fixture(scope="module")
def detector(sam3_dir) -> Sam3Detector:
    return Sam3Detector.from_pretrained(str(sam3_dir), exact=True)


@pytest.fixture(scope="module")
def recipe(sam3_dir):
    from transformers import Sam3Model, Sam3Processor

    return Sam3Model.from_pretrained(sam3_dir).eval(), Sam3Processor.from_pretrained(sam3_dir)


def _photo(path: Path, size: tuple[int, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _rgb(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def _run_recipe(recipe, image: Image.Image, **prompt):
    """Boxes, scores and masks of one image for one prompt (``text=`` and/or ``input_boxes=``)."""
    model, processor = recipe
    inputs = processor(images=image, return_tensors="pt", **prompt)
    with torch.inference_mode():
        outputs = model(**inputs)
    result = processor.post_process_instance_segmentation(
        outputs, threshold=0.0, mask_threshold=0.5, target_sizes=[(image.height, image.width)])[0]
    boxes = np.clip(result["boxes"].numpy(), 0, [image.width, image.height] * 2)  # the recipe does not clip
    return boxes, result["scores"].numpy(), result["masks"].numpy().astype(bool)


def _assert_same(dets, boxes, scores, masks=None):
    order = np.argsort(-scores, kind="stable")  # ours come by score
    assert len(dets) == len(scores)
    np.testing.assert_allclose(dets.xyxy, boxes[order], atol=1e-4)
    # Tight: a box's label (positive or negative) moves the tiny model's scores by ~1e-5.
    np.testing.assert_allclose(dets.scores, scores[order], atol=1e-6)
    if masks is not None:
        for rle, index in zip(dets.masks, order):
            np.testing.assert_array_equal(rle_to_mask(rle), masks[index])


def _exemplars(image: Path, *boxes, negative=()) -> list[dict]:
    return ([{"image": str(image), "box": list(b)} for b in boxes]
            + [{"image": str(image), "box": list(b), "negative": True} for b in negative])


def test_an_exemplar_on_its_own_image_equals_the_recipe_with_input_boxes(detector, recipe, tmp_path):
    photo = _photo(tmp_path / "a.png", (90, 60), seed=1)
    ontology = Ontology.from_data([{"name": "widget", "exemplars": _exemplars(photo, BOX)}])
    [dets] = Labeler(ontology, detector=detector, mode="segment", config=ALL).label_images([_rgb(photo)])
    # No text: the processor prompts with "visual" and the box.
    _assert_same(dets, *_run_recipe(recipe, Image.open(photo), input_boxes=[[list(BOX)]]))
    assert (dets.class_ids == 0).all() and (dets.prompt_ids == -1).all()  # found through the exemplar


@pytest.mark.parametrize("negative", [False, True], ids=["positive box", "negative box"])
def test_text_and_a_box_of_a_class_are_one_prompt_as_in_the_recipe(detector, recipe, tmp_path, negative):
    photo = _photo(tmp_path / "b.png", (70, 100), seed=2)
    exemplars = _exemplars(photo, negative=[BOX]) if negative else _exemplars(photo, BOX)
    ontology = Ontology.from_data([{"name": "cat", "prompts": ["cat"], "exemplars": exemplars}])
    [dets] = Labeler(ontology, detector=detector, mode="segment", config=ALL).label_images([_rgb(photo)])
    _assert_same(dets, *_run_recipe(recipe, Image.open(photo), text="cat", input_boxes=[[list(BOX)]],
                                    input_boxes_labels=[[0 if negative else 1]]))
    assert (dets.class_ids == 0).all() and (dets.prompt_ids == 0).all()  # found through the text prompt


def _tokens_hook(model):
    """Collects the geometry encoder's output tokens of each ``forward``."""
    seen = []
    handle = model.geometry_encoder.register_forward_hook(lambda m, a, out: seen.append(out.last_hidden_state))
    return seen, handle


def test_exemplar_tokens_are_the_geometry_encoders_one_box_at_a_time_with_either_label(detector, recipe, tmp_path):
    photo = _photo(tmp_path / "c.png", (120, 80), seed=3)
    image = Image.open(photo)
    other = (40.0, 30.0, 110.0, 75.0)
    features = detector.encode_images(model_inputs(detector.preprocessor, [image]))
    tokens = detector.embed_exemplars(features, np.array([BOX, other], dtype=np.float32), (120, 80))
    # Per box, per label (0 negative, 1 positive): the box's token and CLS.
    assert tokens.shape == (2, 2, 2, detector.model.config.geometry_encoder_config.hidden_size)
    seen, handle = _tokens_hook(recipe[0])
    try:
        for box in (BOX, other):
            for label in (0, 1):
                _run_recipe(recipe, image, input_boxes=[[list(box)]], input_boxes_labels=[[label]])
    finally:
        handle.remove()
    for ours, theirs in zip(tokens.flatten(0, 1), seen):
        torch.testing.assert_close(ours, theirs[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(tokens[:, 0], tokens[:, 1], atol=1e-3)  # the label is part of the encoding


def _run_prompt(recipe, image: Image.Image, text: str, tokens: list[torch.Tensor]):
    """Scores of one image for a prompt made by hand: ``text``'s features, then ``tokens``."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    model, processor = recipe
    encoded = processor(text=text, return_tensors="pt")
    with torch.inference_mode():
        features = model.get_text_features(**encoded).pooler_output
        prompt = torch.cat([features[0], *tokens])[None]
        mask = torch.cat([encoded["attention_mask"][0], torch.ones(sum(map(len, tokens)), dtype=torch.long)])[None]
        outputs = model(pixel_values=processor(images=image, return_tensors="pt")["pixel_values"],
                        attention_mask=mask, text_embeds=BaseModelOutputWithPooling(pooler_output=prompt))
    size = (image.height, image.width)
    result = processor.post_process_instance_segmentation(outputs, threshold=0.0, target_sizes=[size])[0]
    return np.clip(result["boxes"].numpy(), 0, [image.width, image.height] * 2), result["scores"].numpy()


def test_a_positive_and_a_negative_box_are_encoded_one_by_one_not_jointly(detector, recipe, tmp_path):
    photo = _photo(tmp_path / "d.png", (90, 60), seed=7)
    image = Image.open(photo)
    other = (30.0, 20.0, 80.0, 55.0)
    exemplars = _exemplars(photo, BOX, negative=[other])
    ontology = Ontology.from_data([{"name": "cat", "prompts": ["cat"], "exemplars": exemplars}])
    [dets] = Labeler(ontology, detector=detector, config=ALL).label_images([_rgb(photo)])
    # Each box's tokens as the recipe makes them for that box alone, joined after the text.
    seen, handle = _tokens_hook(recipe[0])
    try:
        _run_recipe(recipe, image, input_boxes=[[list(BOX)]], input_boxes_labels=[[1]])
        _run_recipe(recipe, image, input_boxes=[[list(other)]], input_boxes_labels=[[0]])
    finally:
        handle.remove()
    _assert_same(dets, *_run_prompt(recipe, image, "cat", [tokens[0] for tokens in seen]))
    # The recipe given both boxes at once encodes them together (one CLS, attention between them).
    joint = _run_recipe(recipe, image, text="cat", input_boxes=[[list(BOX), list(other)]], input_boxes_labels=[[1, 0]])
    assert not np.allclose(np.sort(dets.scores), np.sort(joint[1]), atol=1e-6)


def test_each_column_gives_its_class_and_prompt(detector, recipe, tmp_path):
    photo = _photo(tmp_path / "e.png", (80, 90), seed=8)
    image = Image.open(photo)
    # One box, an exemplar of three classes: a negative one of "dog", a positive one of "cat" and "widget".
    ontology = Ontology.from_data([
        {"name": "dog", "prompts": ["puppy"], "exemplars": _exemplars(photo, negative=[BOX])},
        {"name": "cat", "prompts": ["cat", "kitten"], "exemplars": _exemplars(photo, BOX)},
        {"name": "widget", "exemplars": _exemplars(photo, BOX)},
        {"name": "bird", "prompts": ["bird"]},  # a shorter prompt than the others: padded, masked
    ])
    [dets] = Labeler(ontology, detector=detector, config=ALL).label_images([_rgb(photo)])
    boxes = {"input_boxes": [[list(BOX)]]}
    expected = [  # (prompt id, class id, the recipe's prompt)
        (0, 0, {"text": "puppy", **boxes, "input_boxes_labels": [[0]]}),
        (1, 1, {"text": "cat", **boxes, "input_boxes_labels": [[1]]}),
        (2, 1, {"text": "kitten", **boxes, "input_boxes_labels": [[1]]}),
        (3, 3, {"text": "bird"}),
        (-1, 2, {**boxes, "input_boxes_labels": [[1]]}),  # "visual" and the box
    ]
    for prompt_id, class_id, prompt in expected:
        chosen = dets.prompt_ids == prompt_id
        _assert_same(dets[chosen], *_run_recipe(recipe, image, **prompt)[:2])
        assert (dets.class_ids[chosen] == class_id).all()
    assert sorted(set(dets.prompt_ids.tolist())) == [-1, 0, 1, 2, 3]


def test_an_exemplar_on_another_image_prompts_with_its_own_images_tokens(detector, recipe, tmp_path):
    query = _photo(tmp_path / "q.png", (90, 60), seed=4)
    target = _photo(tmp_path / "t.png", (80, 80), seed=5)
    second = (30.0, 20.0, 80.0, 55.0)
    ontology = Ontology.from_data([{"name": "widget", "exemplars": _exemplars(query, BOX, second)}])
    [dets] = Labeler(ontology, detector=detector, config=ALL).label_images([_rgb(target)])

    # By hand: "visual", then each exemplar's tokens from the query image, as one prompt on the target.
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    model, processor = recipe
    features = detector.encode_images(model_inputs(detector.preprocessor, [Image.open(query)]))
    rows = detector.embed_exemplars(features, np.array([BOX, second], dtype=np.float32), (90, 60))
    tokens = rows[:, 1].flatten(0, 1)  # as positive boxes
    visual = processor(text="visual", return_tensors="pt")
    with torch.inference_mode():
        text = model.get_text_features(**visual).pooler_output
        prompt = torch.cat([text[0], tokens])[None]
        mask = torch.cat([visual["attention_mask"][0], torch.ones(len(tokens), dtype=torch.long)])[None]
        inputs = processor(images=Image.open(target), return_tensors="pt")
        outputs = model(pixel_values=inputs["pixel_values"], attention_mask=mask,
                        text_embeds=BaseModelOutputWithPooling(pooler_output=prompt))
    result = processor.post_process_instance_segmentation(outputs, threshold=0.0, target_sizes=[(80, 80)])[0]
    _assert_same(dets, np.clip(result["boxes"].numpy(), 0, 80), result["scores"].numpy())
    # Not the same box re-encoded on the target's pixels.
    reencoded = _run_recipe(recipe, Image.open(target), input_boxes=[[list(BOX), list(second)]])[1]
    assert not np.allclose(np.sort(dets.scores), np.sort(reencoded), atol=1e-4)


def test_negative_exemplars_alone_and_negative_prompts_are_refused(detector, tmp_path):
    photo = _photo(tmp_path / "n.png", (90, 60), seed=6)
    # The ontology refuses such a class; a detector given one refuses it too.
    with pytest.raises(ConfigError, match="has no prompts"):
        Ontology((OntologyClass("cat", (), exemplars=(Exemplar(str(photo), BOX, negative=True),)),))
    features = detector.encode_images(model_inputs(detector.preprocessor, [Image.open(photo)]))
    [row] = detector.embed_exemplars(features, np.array([BOX], dtype=np.float32), (90, 60))
    text = detector.encode_text(("dog",))
    with pytest.raises(ConfigError, match=r"^class 1 has negative exemplars only: SAM 3 needs a text prompt") as caught:
        detector.with_exemplars(text, {}, {1: [row]}, np.array([0]))
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="negative prompts are not supported by SAM 3"):
        Labeler(Ontology.from_prompts(["cat;not=tiger"]), detector=detector).label_images([_rgb(photo)])
