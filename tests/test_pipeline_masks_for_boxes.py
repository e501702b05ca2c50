"""Labeler.masks_for_boxes: the masks a segment run stores, for any boxes, with the image's embedding
remembered between calls."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from autolabel.errors import ConfigError
from autolabel.labeling import label_into_store
from autolabel.models.registry import load_segmenter
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig, Labeler
from autolabel.store import open_store
from autolabel.testing.photos import synthetic_photo

ONTOLOGY = Ontology.from_prompts(["car", "person"])
CONFIG = DetectConfig(threshold=0.0, nms_iou=None, max_detections=3)


class CountingSegmenter:
    """A loaded segmenter that counts its image-encoder passes."""

    def __init__(self, inner):
        self.inner, self.embed_calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed(self, pixel_values, sizes):
        self.embed_calls += 1
        return self.inner.embed(pixel_values, sizes)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two JPEGs, one stored sideways (EXIF orientation 6): masks live in the oriented frame."""
    folder = tmp_path_factory.mktemp("photos")
    synthetic_photo(640, 480, seed=1).save(folder / "a.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    synthetic_photo(540, 360, seed=2).save(folder / "b.jpg", quality=90, exif=exif)
    return sorted(folder.iterdir())


@pytest.fixture
def segmenter(tiny_sam2):
    return CountingSegmenter(load_segmenter(str(tiny_sam2), "cpu", "fp32"))


def _labeler(tiny_owlv2, segmenter, mode="segment"):
    return Labeler(ONTOLOGY, model=str(tiny_owlv2), segmenter=segmenter, mode=mode, config=CONFIG, device="cpu")


def test_masks_equal_what_a_segment_run_stores(tiny_owlv2, segmenter, photos, tmp_path):
    with open_store(tmp_path / "run") as store:
        label_into_store(_labeler(tiny_owlv2, segmenter), photos, store, batch_size=1)
        stored = [(record, store.labels(record.id)) for record in store.images()]
    labeler = _labeler(tiny_owlv2, segmenter)  # a new labeler on the same models, as the UI makes
    for record, labels in stored:
        assert len(labels) == 3 and all(m is not None for m in labels.masks)
        masks = labeler.masks_for_boxes(record.path, labels.xyxy)
        assert masks == labels.masks, record.path  # the same RLEs, at the oriented original size
        assert masks[0]["size"] == [record.height, record.width]
    assert (stored[1][0].width, stored[1][0].height) == (360, 540)  # turned by its EXIF orientation


def test_the_embedding_is_remembered_for_the_last_images(tiny_owlv2, segmenter, photos):
    first, second = photos
    labeler = _labeler(tiny_owlv2, segmenter)
    a = labeler.masks_for_boxes(first, [[10, 10, 80, 90]])
    b = _labeler(tiny_owlv2, segmenter).masks_for_boxes(first, [[20, 30, 120, 140], [5, 5, 50, 40]])
    assert segmenter.embed_calls == 1 and len(a) == 1 and len(b) == 2
    labeler.masks_for_boxes(second, [[0, 0, 60, 60]])
    labeler.masks_for_boxes(first, [[10, 10, 80, 90]])
    assert segmenter.embed_calls == 2  # two images are kept
    assert labeler.masks_for_boxes(first, [[10, 10, 80, 90]]) == a


def test_boxes_are_clipped_and_an_empty_one_gets_no_mask(tiny_owlv2, segmenter, photos):
    labeler = _labeler(tiny_owlv2, segmenter)
    inside, outside, reaching = labeler.masks_for_boxes(photos[0], [[10, 10, 80, 90], [700, 10, 800, 90],
                                                                    [10, 10, 80, 900]])
    assert inside is not None and outside is None
    # Decoded together with the same boxes (a box's mask can vary in the last bits with its batch).
    assert reaching == labeler.masks_for_boxes(photos[0], [[10, 10, 80, 90], [10, 10, 80, 480]])[1]
    assert labeler.masks_for_boxes(photos[0], np.zeros((0, 4))) == []


def test_refused_without_a_segmenter(tiny_owlv2, photos):
    labeler = Labeler(ONTOLOGY, model=str(tiny_owlv2), mode="detect")
    with pytest.raises(ConfigError, match="need a segmenter"):
        labeler.masks_for_boxes(photos[0], [[0, 0, 10, 10]])


def test_points_refine_a_mask_without_running_the_encoder_again(tiny_owlv2, segmenter, photos):
    from autolabel.geometry import Size
    from autolabel.images import load_image
    from autolabel.models.base import model_inputs

    labeler = _labeler(tiny_owlv2, segmenter)
    box, clicks = [20, 30, 220, 240], [(100, 120, 1), (40, 50, 0)]
    (plain,) = labeler.masks_for_boxes(photos[0], [box])
    (refined,) = labeler.masks_for_boxes(photos[0], [box], points=[clicks])
    (positive,) = labeler.masks_for_boxes(photos[0], [box], points=[clicks[:1]])
    assert segmenter.embed_calls == 1  # every click reuses the image's embedding
    assert refined != plain and positive not in (plain, refined)
    # What the segmenter makes of the same decode with the same box and clicks.
    loaded = load_image(photos[0], draft=lambda size: labeler.decode_side(Size(*size)))
    size = Size(loaded.width, loaded.height)
    (embedding,) = segmenter.inner.embed(model_inputs(segmenter.preprocessor, [loaded.image], [size]), [size])
    assert segmenter.inner.predict(embedding, np.array([box], float), [clicks]) == [refined]


def test_points_follow_their_boxes_and_are_checked(tiny_owlv2, segmenter, photos):
    labeler = _labeler(tiny_owlv2, segmenter)
    boxes, clicks = [[700, 10, 800, 90], [20, 30, 220, 240]], [(100, 120, 1)]
    outside, refined = labeler.masks_for_boxes(photos[0], boxes, points=[[(750, 50, 1)], clicks])
    assert outside is None and refined == labeler.masks_for_boxes(photos[0], boxes[1:], points=[clicks])[0]
    with pytest.raises(ValueError, match="points for 1 boxes but 2"):
        labeler.masks_for_boxes(photos[0], boxes, points=[clicks])
