"""Training data: sources (store, COCO), queries, and augmentation that keeps boxes on their pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from autolabel.errors import ConfigError
from autolabel.finetune.data import (
    AugmentConfig,
    AugmentParams,
    Example,
    apply_augment,
    boxes_to_target,
    load_augmented,
    load_coco_examples,
    load_examples,
    load_store_examples,
    negative_pool,
    sample_augment,
    sample_queries,
)
from autolabel.geometry import Size
from autolabel.importers.dataset import human_labels
from autolabel.models.owlv2 import boxes_to_pixels
from autolabel.ontology import Ontology

RED = (255, 0, 0)


def _red_box_image(w, h, box):
    pixels = np.full((h, w, 3), 90, dtype=np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = RED
    return Image.fromarray(pixels)


def _red_bbox(image) -> list[float]:
    a = np.asarray(image).astype(int)
    red = (a[..., 0] > 200) & (a[..., 1] < 60)
    ys, xs = np.nonzero(red)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("params", [
    AugmentParams(flip=True),  # mirror only
    AugmentParams(crop=(0.1, 0.2, 0.8, 0.9)),  # crop that keeps the whole box
    AugmentParams(flip=True, crop=(0.25, 0.0, 1.0, 0.7)),  # crop cutting the box, then mirror
])
def test_augmentation_moves_boxes_with_the_pixels(params):
    image = _red_box_image(200, 100, (60, 30, 120, 80))
    out, boxes, kept = apply_augment(image, np.array([[60, 30, 120, 80]]), params, min_visible=0.3)
    assert kept.tolist() == [0]
    np.testing.assert_allclose(boxes[0], _red_bbox(out), atol=1.0)


def test_random_augmentations_keep_boxes_on_their_pixels():
    rng = np.random.default_rng(0)
    image = _red_box_image(160, 120, (40, 50, 90, 110))
    config = AugmentConfig(hflip=0.5, crop=1.0, min_scale=0.5, min_visible=0.4)
    checked = 0
    for _ in range(30):
        out, boxes, kept = apply_augment(image, np.array([[40, 50, 90, 110]]), sample_augment(rng, config), 0.4)
        if len(kept):
            np.testing.assert_allclose(boxes[0], _red_bbox(out), atol=1.0)
            checked += 1
        else:  # dropped only when less than 40% of it stays in view
            a = np.asarray(out).astype(int)
            assert ((a[..., 0] > 200) & (a[..., 1] < 60)).sum() < 0.4 * 50 * 60
    assert checked > 10


def test_box_mostly_cut_away_is_dropped():
    image = _red_box_image(100, 100, (0, 0, 40, 40))
    _, boxes, kept = apply_augment(image, np.array([[0, 0, 40, 40]]), AugmentParams(crop=(0.3, 0.3, 1.0, 1.0)), 0.4)
    assert len(kept) == 0 and boxes.shape == (0, 4)


def test_target_is_the_inverse_of_the_inference_box_transform():
    boxes = np.array([[10, 20, 50, 90], [0, 0, 200, 100]], dtype=np.float32)
    target = boxes_to_target(boxes, 200, 100)
    np.testing.assert_allclose(target[1], [0.5, 0.25, 1.0, 0.5])
    np.testing.assert_allclose(boxes_to_pixels(target, 200, 100), boxes, atol=1e-4)


def test_target_matches_where_the_processor_puts_the_pixels(tmp_path, owlv2_128):
    """Decode (shrunk), augment, preprocess with the inference processor: the target box, scaled to
    the model input, must frame the red pixels there."""
    from autolabel.finetune.model import preprocess
    from autolabel.models.owlv2 import Owlv2Detector

    detector = Owlv2Detector.from_pretrained(str(owlv2_128))
    path = tmp_path / "wide.png"
    _red_box_image(400, 240, (100, 60, 220, 200)).save(path)
    example = Example(str(path), Size(400, 240), human_labels([[100, 60, 220, 200]], [0]))
    for params in (AugmentParams(), AugmentParams(flip=True, crop=(0.1, 0.1, 0.9, 1.0))):
        image, target, kept, original = load_augmented(example, params, max_side=256)
        assert image.size[0] <= 256 and kept.tolist() == [0]
        expected = (400, 240) if params.crop is None else (320, 216)  # the view at full resolution
        np.testing.assert_allclose(original, expected, atol=2)  # crops snap to decoded pixels
        pixels = preprocess(detector, [image], [original])[0]  # (3, 128, 128), normalised
        mean = np.array(detector.processor.image_processor.image_mean)[:, None, None]
        std = np.array(detector.processor.image_processor.image_std)[:, None, None]
        rgb = (pixels.numpy() * std + mean).transpose(1, 2, 0)
        red = (rgb[..., 0] > 0.75) & (rgb[..., 1] < 0.25)
        ys, xs = np.nonzero(red)
        cx, cy, w, h = target[0] * 128
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1],
                                   [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=2.0)


def test_sample_queries_positives_then_negatives():
    ontology = Ontology.from_prompts(["car=car,van", "person", "bike"])
    pool = negative_pool(ontology)
    assert "car" not in pool and "person" not in pool and "dog" in pool
    rng = np.random.default_rng(0)
    queries, index = sample_queries(rng, {0}, ontology, 4, pool)
    assert list(index) == [0] and queries[index[0]] in ("car", "van")
    assert len(queries) == 5 and queries[1:3] == ["person", "bike"]  # absent classes first
    assert set(queries[3:]) <= set(pool)
    # Same seed, same draw (resume depends on it).
    assert sample_queries(np.random.default_rng(0), {0}, ontology, 4, pool)[0] == queries
    # No vocabulary: only the absent classes.
    assert sample_queries(rng, {1}, ontology, 8, ())[0][1:] in (["car", "bike"], ["van", "bike"])


def test_coco_examples_come_from_the_coco_reader(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (200, 100)).save(tmp_path / "images" / "a.png")
    Image.new("RGB", (50, 50)).save(tmp_path / "b.png")
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 200, "height": 100},
                   {"id": 2, "file_name": "b.png", "width": 50, "height": 50}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 10, 40, 20]},
                        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5]},
                        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [0, 0, 50, 50], "iscrowd": 1}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(doc))
    ds = load_examples(path)
    assert ds.ontology.names == ["cat", "dog"] and len(ds) == 2 and ds.num_boxes == 2
    b, a = ds.examples  # in path order: b.png, images/a.png
    assert a.size == (200, 100) and a.labels.class_ids.tolist() == [0, 1]
    np.testing.assert_allclose(a.labels.xyxy[0], [20, 10, 60, 30])
    assert len(b.labels) == 0  # an image without boxes (a crowd region is not one) is a negative example
    only_dogs = load_coco_examples(path, ontology=Ontology.from_prompts(["dog=dog,puppy"]))
    assert only_dogs.num_boxes == 1 and only_dogs.ontology.queries == ["dog", "puppy"]
    assert only_dogs.examples[1].labels.class_ids.tolist() == [0]  # "dog" is class 0 of this ontology
    np.testing.assert_allclose(only_dogs.examples[1].labels.xyxy[0], [0, 0, 5, 5])
    assert ds.fingerprint() != only_dogs.fingerprint()

    doc["images"][0]["width"], doc["images"][0]["height"] = 100, 50  # listed for a half-size copy
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="COCO says 100x50 but the image is 200x100"):
        load_examples(path)
    doc["images"][0]["width"], doc["images"][0]["height"] = 200, 100
    doc["images"][1]["file_name"] = "missing.png"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="not found"):
        load_examples(path)


def test_store_examples_prefer_reviewed_labels(tmp_path):
    from autolabel.detections import Detections
    from autolabel.store import ImageResult, open_store

    ontology = Ontology.from_prompts(["car", "person"])
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (100, 80)).save(paths[-1])
    run = tmp_path / "run"
    dets = Detections(np.array([[0, 0, 10, 10], [20, 20, 40, 40]]), np.array([0.9, 0.2]), np.array([0, 1]),
                      np.array([0, 1]))
    with open_store(run) as store:
        store.bind_config({"model": "m", "ontology": ontology.to_dict()})
        store.write_results([ImageResult(p, "x", 100, 80, dets) for p in paths])
        ids = {r.path: r.id for r in store.images()}
        # Image 0: reviewed, its low-score label left in place (accepted by review), the other rejected.
        labels = store.labels(ids[paths[0]])
        low, high = labels.ids[np.argsort(labels.scores)]
        store.set_review(int(high), "rejected")
        store.set_image_reviewed(ids[paths[0]])
        # Image 1: not reviewed, but a human box was added.
        store.add_detection(ids[paths[1]], "person", (50, 50, 70, 70))

    auto = load_store_examples(run)  # there is a reviewed image: only reviewed images
    assert [e.path for e in auto.examples] == [paths[0]]
    assert auto.examples[0].labels.class_ids.tolist() == [1]  # person

    everything = load_store_examples(run, labels="all", min_score=0.5)
    by_path = {e.path: e for e in everything.examples}
    assert len(by_path) == 3
    assert by_path[paths[1]].labels.class_ids.tolist() == [0, 1]  # score 0.9 car + the human person
    assert by_path[paths[2]].labels.class_ids.tolist() == [0]  # the 0.2 label is under the floor
    assert by_path[paths[2]].size == (100, 80)
    assert load_examples(run, labels="all", min_score=0.1).num_boxes == 1 + 3 + 2  # the rejected one never counts

    with open_store(run) as store:
        store.set_image_reviewed(ids[paths[0]], False)
    with pytest.raises(ConfigError, match="no reviewed images"):
        load_store_examples(run, labels="reviewed")
    assert len(load_store_examples(run)) == 3  # auto falls back to all images
