"""SAM 3: text-prompted boxes + masks equal the plain transformers recipe and land on the right
pixels; the SAM 3 tracker segments boxes like the recipe."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel.errors import ModelLoadError
from autolabel.geometry import Size, rle_to_mask
from autolabel.models.base import Detector, Segmenter, model_inputs
from autolabel.models.sam3 import Sam3Detector, Sam3TrackerSegmenter
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig, Labeler
from sam_recipe import recipe_masks

ALL = DetectConfig(threshold=0.0, nms_iou=None)  # every candidate the recipe returns must come back


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory) -> Path:
    """A 112 px SAM 3 with random weights (8 candidates per prompt, 32x32 masks)."""
    from autolabel.testing.sam3_checkpoint import build_sam3_checkpoint

    return build_sam3_checkpoint(tmp_path_factory.mktemp("sam3-tiny"))


@pytest.fixture(scope="module")
def detector(sam3_dir) -> Sam3Detector:
    return Sam3Detector.from_pretrained(str(sam3_dir), exact=True)


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _recipe(path: Path, image: Image.Image, queries: list[str]):
    """The transformers recipe, all prompts of one image in one call: boxes, scores, prompt ids, masks."""
    from transformers import Sam3Model, Sam3Processor

    processor = Sam3Processor.from_pretrained(path)
    model = Sam3Model.from_pretrained(path).eval()
    inputs = processor(images=[image] * len(queries), text=queries, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    results = processor.post_process_instance_segmentation(
        outputs, threshold=0.0, mask_threshold=0.5, target_sizes=[(image.height, image.width)] * len(queries)
    )
    cat = lambda key: torch.cat([r[key] for r in results]).numpy()  # noqa: E731
    prompt_ids = np.concatenate([[q] * len(r["scores"]) for q, r in enumerate(results)])
    return cat("boxes"), cat("scores"), prompt_ids, cat("masks").astype(bool)


def test_protocol_and_masks_flag(detector):
    assert isinstance(detector, Detector)
    assert Sam3Detector.yields_masks is True


# -- equality with the recipe ---------------------------------------------------------------------


def test_batched_cached_detection_equals_plain_recipe(detector, sam3_dir):
    ontology = Ontology.from_prompts(["cat=cat,kitten", "dog"])
    images = [_image(150, 80), _image(70, 130, seed=1)]  # landscape, portrait
    ours = Labeler(ontology, detector=detector, mode="segment", config=ALL).label_images(images)
    for image, dets in zip(images, ours):
        boxes, scores, prompt_ids, masks = _recipe(sam3_dir, image, list(ontology.queries))
        # The recipe does not clip: clip it the obvious way; our order is by score.
        clipped = np.clip(boxes, 0, [image.width, image.height] * 2)
        order = np.argsort(-scores, kind="stable")
        assert len(dets) == len(scores) == 3 * 8
        np.testing.assert_allclose(dets.xyxy, clipped[order], atol=1e-3)
        np.testing.assert_allclose(dets.scores, scores[order], atol=1e-4)
        np.testing.assert_array_equal(dets.prompt_ids, prompt_ids[order])
        np.testing.assert_array_equal(dets.class_ids, ontology.query_class_ids[prompt_ids[order]])
        for rle, index in zip(dets.masks, order):
            assert rle["size"] == [image.height, image.width]
            np.testing.assert_array_equal(rle_to_mask(rle), masks[index])


def test_fast_preprocessing_equals_the_processor(sam3_dir, detector):
    from transformers import Sam3Processor

    fast = Sam3Detector.from_pretrained(str(sam3_dir))
    assert fast.preprocessor.on_device and not detector.preprocessor.on_device
    image = _image(150, 80)
    expected = Sam3Processor.from_pretrained(sam3_dir)(images=image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(model_inputs(fast.preprocessor, [image]), expected, rtol=0, atol=1e-5)


def test_chunked_pairs_equal_one_call(sam3_dir, detector):
    ontology = Ontology.from_prompts(["cat", "dog", "bird"])
    images = [_image(150, 80, seed=2), _image(70, 130, seed=3)]
    chunked = Sam3Detector.from_pretrained(str(sam3_dir), exact=True)
    chunked.max_pairs_per_call = 4  # 6 pairs: 4 + 2, across the image boundary
    a = Labeler(ontology, detector=detector, config=ALL).label_images(images)
    b = Labeler(ontology, detector=chunked, config=ALL).label_images(images)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.xyxy, y.xyxy, atol=1e-4)
        np.testing.assert_allclose(x.scores, y.scores, atol=1e-5)
        np.testing.assert_array_equal(x.prompt_ids, y.prompt_ids)


def test_scoring_without_masks_equals_forward_and_keeps_boxes_and_scores(detector, monkeypatch):
    images = [_image(150, 80, seed=4), _image(70, 130, seed=5)]
    features = detector.encode_images(model_inputs(detector.preprocessor, images))
    text = detector.encode_text(["cat", "dog"])
    with_masks = detector.score(features, text)
    mask_decoder_calls = []
    monkeypatch.setattr(detector.model.mask_decoder, "forward", lambda *a, **k: mask_decoder_calls.append(1))
    without = detector.score(features, text, masks=False)
    assert not mask_decoder_calls and without.mask_logits is None
    torch.testing.assert_close(without.scores, with_masks.scores, atol=1e-6, rtol=0)
    torch.testing.assert_close(without.boxes, with_masks.boxes, atol=1e-6, rtol=0)
    sizes = [Size(150, 80), Size(70, 130)]
    ontology = Ontology.from_prompts(["cat", "dog"])
    for a, b in zip(detector.postprocess(with_masks, sizes, ontology, ALL),
                    detector.postprocess(without, sizes, ontology, ALL)):
        assert b.masks is None and len(a.masks) == len(a) == len(b)
        np.testing.assert_array_equal(a.xyxy, b.xyxy)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.prompt_ids, b.prompt_ids)


def test_class_thresholds_and_nms_apply_per_prompt_class(detector):
    images = [_image(150, 80)]
    everything = Labeler(Ontology.from_prompts(["cat", "dog"]), detector=detector, config=ALL).label_images(images)[0]
    cut = float(np.median(everything.scores[everything.class_ids == 0]))
    ontology = Ontology.from_prompts(["cat", "dog"]).with_thresholds({"cat": cut})
    dets = Labeler(ontology, detector=detector, mode="segment", config=ALL).label_images(images)[0]
    assert everything.masks is None  # detect mode keeps boxes only
    assert (dets.scores[dets.class_ids == 0] > cut).all()
    assert (dets.class_ids == 1).sum() == (everything.class_ids == 1).sum()
    assert len(dets.masks) == len(dets)
    # Random boxes overlap heavily: per-class NMS keeps fewer, never mixing classes up.
    nms = Labeler(ontology, detector=detector, config=DetectConfig(threshold=0.0, nms_iou=0.5)).label_images(images)[0]
    assert 2 <= len(nms) < len(dets) and set(nms.class_ids) == {0, 1}


# -- reuse: text once per prompt list, vision once per image ------------------------------------


def test_text_and_vision_features_are_reused(sam3_dir, monkeypatch):
    detector = Sam3Detector.from_pretrained(str(sam3_dir))
    calls = {"text": 0, "vision": 0}
    for name, key in (("get_text_features", "text"), ("get_vision_features", "vision")):
        original = getattr(detector.model, name)

        def counted(*args, _original=original, _key=key, **kwargs):
            calls[_key] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(detector.model, name, counted)
    labeler = Labeler(Ontology.from_prompts(["cat=cat,kitten", "dog"]), detector=detector)
    for seed in range(2):
        labeler.label_images([_image(60, 40, seed)])
    assert calls == {"text": 1, "vision": 2}


def test_long_prompt_is_truncated_with_a_warning(detector, caplog):
    long_prompt = "a very long description of a yellow industrial forklift carrying pallets in a big warehouse"
    with caplog.at_level(logging.WARNING):
        text = detector.encode_text([long_prompt, "cat"])
    assert text.features.shape[:2] == (2, 32)
    assert any("reads only the first 32" in r.message for r in caplog.records)


# -- known right answer: heads patched to emit given boxes and masks ------------------------------


def _fixed_head(boxes_xyxy: list[list[float]], mask_cells: tuple[int, int], cells: int = 32):
    """A stand-in for the DETR head + mask decoder: candidate i has normalised box ``boxes_xyxy[i]``
    and score 0.9 (presence 1), and every mask is the band of mask-grid columns ``mask_cells``."""
    n = len(boxes_xyxy)

    def forward(*, vision_embeds, text_embeds, attention_mask, **kwargs):
        pairs = attention_mask.shape[0]
        logit = float(np.log(0.9 / 0.1))
        masks = torch.full((pairs, n, cells, cells), -20.0)
        masks[..., mask_cells[0] : mask_cells[1]] = 20.0
        return types.SimpleNamespace(
            pred_logits=torch.full((pairs, n), logit),
            presence_logits=torch.full((pairs, 1), 30.0),
            pred_boxes=torch.tensor(boxes_xyxy, dtype=torch.float32).expand(pairs, n, 4),
            pred_masks=masks,
        )

    return forward


@pytest.mark.parametrize(
    "width, height, expected_box, mask_columns",
    [
        (200, 120, [50, 60, 150, 120], (25, 100)),  # landscape: 6.25 px per mask cell
        (96, 480, [24, 240, 72, 480], (12, 48)),  # portrait / tall: 3 px per mask cell
    ],
)
def test_known_boxes_and_masks_land_on_original_pixels(detector, monkeypatch, width, height, expected_box,
                                                       mask_columns):
    """The processor stretches each axis to the square: a normalised box scales per axis, and a mask
    band of cells 4..16 of 32 covers exactly its share of the columns."""
    boxes = [
        [0.25, 0.5, 0.75, 1.0],
        [1.1, 0.2, 1.4, 0.6],  # wholly right of the image: dropped
        [0.0, -0.3, 0.2, -0.1],  # wholly above: dropped
    ]
    monkeypatch.setattr(detector.model, "forward", _fixed_head(boxes, (4, 16)))
    features = detector.encode_images(torch.zeros(1, 3, detector.image_size, detector.image_size))
    (dets,) = detector.detect(features, detector.encode_text(["thing"]), [Size(width, height)],
                              Ontology.from_prompts(["thing"]), ALL)
    assert len(dets) == 1
    np.testing.assert_allclose(dets.xyxy[0], expected_box, atol=1e-3)
    np.testing.assert_allclose(dets.scores, [0.9], atol=1e-5)
    expected = np.zeros((height, width), dtype=bool)
    expected[:, mask_columns[0] : mask_columns[1]] = True
    np.testing.assert_array_equal(rle_to_mask(dets.masks[0]), expected)


# -- loading --------------------------------------------------------------------------------------


def test_missing_checkpoint_raises_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="SAM 3"):
        Sam3Detector.from_pretrained(str(tmp_path / "no-such-dir"))


def test_full_size_config_is_the_released_architecture():
    from transformers import Sam3Config

    from autolabel.testing.sam3_checkpoint import FULL_SIZE_SAM3, sam3_config

    ours = sam3_config(**FULL_SIZE_SAM3).to_dict()
    ours["vision_config"].pop("backbone_feature_sizes")  # derived from the image size, as the default
    default = Sam3Config().to_dict()
    default["vision_config"].pop("backbone_feature_sizes")
    assert ours == default


# -- the SAM 3 tracker ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracker_dir(tmp_path_factory) -> Path:
    from autolabel.testing.sam3_checkpoint import build_sam3_tracker_checkpoint

    return build_sam3_tracker_checkpoint(tmp_path_factory.mktemp("sam3-tracker-tiny"))


@pytest.mark.parametrize("width, height", [(200, 120), (90, 160)])
def test_tracker_masks_equal_plain_recipe(tracker_dir, width, height):
    from transformers import Sam3TrackerModel, Sam3TrackerProcessor

    segmenter = Sam3TrackerSegmenter.from_pretrained(str(tracker_dir))
    assert isinstance(segmenter, Segmenter)
    image = _image(width, height)
    boxes = np.array([[10, 20, 60, 90], [0, 0, width, height], [0.5 * width, 0.3 * height, 0.9 * width, 0.95 * height]])
    (embedding,) = segmenter.embed(model_inputs(segmenter.preprocessor, [image]), [Size(width, height)])
    ours = [rle_to_mask(rle) for rle in segmenter.predict(embedding, boxes)]

    expected = recipe_masks(Sam3TrackerModel, Sam3TrackerProcessor, tracker_dir, image, boxes)
    for mask, ref in zip(ours, expected):
        np.testing.assert_array_equal(mask, ref)


def test_tracker_points_refine_masks_as_the_plain_recipe(tracker_dir):
    from transformers import Sam3TrackerModel, Sam3TrackerProcessor

    width, height = 90, 160
    segmenter = Sam3TrackerSegmenter.from_pretrained(str(tracker_dir))
    image = _image(width, height)
    boxes = np.array([[10, 20, 60, 90], [45, 48, 81, 152]])
    clicks = [[(30, 50, 1), (12, 22, 0)], [(63, 96, 1), (50.5, 144, 0)]]
    (embedding,) = segmenter.embed(model_inputs(segmenter.preprocessor, [image]), [Size(width, height)])
    ours = [rle_to_mask(rle) for rle in segmenter.predict(embedding, boxes, clicks)]

    expected = recipe_masks(Sam3TrackerModel, Sam3TrackerProcessor, tracker_dir, image, boxes, clicks)
    assert len(ours) == len(boxes)
    for mask, ref in zip(ours, expected):
        np.testing.assert_array_equal(mask, ref)


def test_a_sam3_video_checkpoint_loads_whole_as_detector_and_as_segmenter(tmp_path):
    """facebook/sam3 is a sam3_video checkpoint: both halves must load with every weight the file
    holds (the tracker's mask decoder included), none left at random values."""
    from transformers import Sam3VideoModel

    from autolabel.models.registry import load_detector, load_segmenter
    from autolabel.testing.sam3_checkpoint import build_sam3_video_checkpoint

    path = build_sam3_video_checkpoint(tmp_path / "sam3-video")
    video = Sam3VideoModel.from_pretrained(str(path))
    detector = load_detector(str(path), "cpu", "fp32")
    expected = video.detector_model.state_dict()
    got = detector.model.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    segmenter = load_segmenter(str(path), "cpu", "fp32")
    got = segmenter.model.state_dict()
    tracker = video.tracker_model.state_dict()
    backbone = video.detector_model.vision_encoder.backbone.state_dict()
    neck = video.tracker_neck.state_dict()
    for name, value in got.items():
        if name.startswith("vision_encoder.backbone."):
            assert torch.equal(value, backbone[name.removeprefix("vision_encoder.backbone.")]), name
        elif name.startswith("vision_encoder.neck."):
            assert torch.equal(value, neck[name.removeprefix("vision_encoder.neck.")]), name
        else:
            assert torch.equal(value, tracker[name]), name
    assert any(name.startswith("mask_decoder.") for name in got)
