"""OWL-ViT (v1): equal to the plain transformers recipe, and boxes land on the right pixels of
stretched (non-square) images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel.models.owlvit import OwlVitDetector, OwlVitPixelValues
from autolabel.models.preprocess import DraftPreprocessor
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig, Labeler

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
QUERIES = ("cat", "kitten", "dog")


@pytest.fixture(scope="module")
def tiny_owlvit(tmp_path_factory):
    from autolabel.testing.owlvit_checkpoint import build_owlvit_checkpoint

    return build_owlvit_checkpoint(tmp_path_factory.mktemp("owlvit-tiny"))


def _images():
    rng = np.random.default_rng(0)
    # Landscape, portrait, and a panorama: the stretch differs per axis in each.
    sizes = [(120, 80), (70, 130), (250, 50)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.fixture(scope="module")
def reference(tiny_owlvit):
    """The recipe from the transformers docs, one image at a time: (boxes, scores, labels) per image."""
    from transformers import OwlViTForObjectDetection, OwlViTProcessor

    processor = OwlViTProcessor.from_pretrained(tiny_owlvit)
    model = OwlViTForObjectDetection.from_pretrained(tiny_owlvit).eval()
    results = []
    for image in _images():
        inputs = processor(text=[list(QUERIES)], images=image, return_tensors="pt", truncation=True)
        with torch.inference_mode():
            outputs = model(**inputs)
        result = processor.post_process_grounded_object_detection(
            outputs, threshold=0.0, target_sizes=[(image.height, image.width)])[0]
        results.append((result["boxes"].numpy(), result["scores"].numpy(), result["labels"].numpy()))
    return results


@pytest.mark.parametrize("exact", [True, False])
def test_batched_cached_detection_equals_plain_recipe(tiny_owlvit, reference, exact):
    ontology = Ontology.from_prompts(["cat=cat,kitten", "dog"])
    assert tuple(ontology.queries) == QUERIES
    detector = OwlVitDetector.from_pretrained(str(tiny_owlvit), exact=exact)
    assert isinstance(detector.preprocessor, DraftPreprocessor) != exact
    images = _images()
    ours = Labeler(ontology, detector=detector, config=DetectConfig(threshold=0.0, nms_iou=None)).label_images(images)
    for image, dets, (boxes, scores, labels) in zip(images, ours, reference):
        clipped = np.clip(boxes, 0, [image.width, image.height, image.width, image.height])
        inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        order = np.argsort(-scores[inside], kind="stable")
        assert len(dets) == inside.sum() > 0
        np.testing.assert_allclose(dets.xyxy, clipped[inside][order], atol=1e-3)
        np.testing.assert_allclose(dets.scores, scores[inside][order], atol=1e-4)
        np.testing.assert_array_equal(dets.prompt_ids, labels[inside][order])


def test_text_tower_is_shared_not_duplicated(tiny_owlvit):
    detector = OwlVitDetector.from_pretrained(str(tiny_owlvit))
    assert not any(k.startswith("owlv2.") for k in detector.model.state_dict())
    text = detector.encode_text(["cat", "dog"])
    assert text.embeds.shape[0] == 2 and bool(text.mask.all())


def _marker_box(pixel_values: torch.Tensor) -> torch.Tensor:
    """Normalised cxcywh of the magenta marker in one stretched (3, S, S) model input."""
    rgb = pixel_values.float().cpu() * CLIP_STD + CLIP_MEAN
    ys, xs = torch.nonzero((rgb[0] > 0.6) & (rgb[1] < 0.4) & (rgb[2] > 0.6), as_tuple=True)
    side = pixel_values.shape[-1]
    x0, x1, y0, y1 = xs.min().item(), xs.max().item() + 1, ys.min().item(), ys.max().item() + 1
    return torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dtype=torch.float32) / side


def _patched(detector: OwlVitDetector) -> OwlVitDetector:
    """Heads patched: patch 0 emits the marker's box as the model sees it, patch 1 a box wholly
    outside the image; both score high, every other patch low."""
    model = detector.model
    seen = {}
    real_embedder, real_boxes, real_classes = model.image_embedder, model.box_predictor, model.class_predictor

    def image_embedder(pixel_values, **kw):
        seen["pixel_values"] = pixel_values
        return real_embedder(pixel_values=pixel_values, **kw)

    def box_predictor(image_feats, feature_map, *a, **kw):
        boxes = real_boxes(image_feats, feature_map, *a, **kw).clone()
        for b, pv in enumerate(seen["pixel_values"]):
            boxes[b, 0] = _marker_box(pv)
            boxes[b, 1] = torch.tensor([1.3, 0.5, 0.2, 0.2])
        return boxes

    def class_predictor(image_feats, query_embeds=None, query_mask=None):
        logits, embeds = real_classes(image_feats, query_embeds, query_mask)
        logits = torch.full_like(logits, -20.0)
        logits[:, :2, 0] = 20.0
        return logits, embeds

    model.image_embedder, model.box_predictor, model.class_predictor = image_embedder, box_predictor, class_predictor
    return detector


@pytest.mark.parametrize("exact", [True, False])
def test_marker_box_lands_on_its_pixels_in_stretched_images(tmp_path_factory, exact):
    from autolabel.testing.owlvit_checkpoint import build_owlvit_checkpoint

    checkpoint = build_owlvit_checkpoint(tmp_path_factory.mktemp("owlvit-128"), image_size=128, patch_size=32)
    detector = _patched(OwlVitDetector.from_pretrained(str(checkpoint), exact=exact))
    cases = [((400, 200), (250, 40, 330, 170)),  # landscape 2:1
             ((150, 450), (20, 300, 110, 420)),  # portrait 1:3
             ((640, 80), (40, 10, 200, 60))]  # panorama 8:1
    images = []
    for (w, h), (x0, y0, x1, y1) in cases:
        pixels = np.full((h, w, 3), 128, dtype=np.uint8)
        pixels[y0:y1, x0:x1] = (255, 0, 255)
        images.append(Image.fromarray(pixels))
    found = Labeler(Ontology.from_prompts(["marker"]), detector=detector,
                    config=DetectConfig(threshold=0.5)).label_images(images)
    for ((w, h), box), dets in zip(cases, found):
        # One detection: the box outside the image is dropped; the marker's is within 1.5 model
        # input pixels (128 px stretched over each axis) of its painted pixels.
        assert len(dets) == 1, (w, h)
        tol = 1.5 * np.array([w, h, w, h]) / 128
        assert np.all(np.abs(dets.xyxy[0] - np.array(box)) <= tol), (dets.xyxy[0], box)


def test_processor_settings_it_cannot_reproduce_fall_back_to_the_stock_processor():
    from transformers import OwlViTImageProcessor

    def square(side):
        return {"height": side, "width": side}

    released = OwlViTImageProcessor(size=square(64), crop_size=square(64), do_center_crop=True)
    assert OwlVitPixelValues.from_processor(released).size == 64
    cropping = OwlViTImageProcessor(size=square(64), crop_size=square(48), do_center_crop=True)
    assert OwlVitPixelValues.from_processor(cropping) is None
    assert OwlVitPixelValues.from_processor(OwlViTImageProcessor(size={"height": 64, "width": 48})) is None
