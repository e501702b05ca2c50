"""EdgeTAM: SAM2's geometry on a RepViT backbone; masks equal the plain transformers recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autolabel.errors import ModelLoadError
from autolabel.geometry import Size, rle_to_mask
from autolabel.models.base import Segmenter, model_inputs
from autolabel.models.edgetam import EdgeTamSegmenter
from sam_recipe import recipe_masks

pytest.importorskip("timm")  # EdgeTAM's backbone


@pytest.fixture(scope="module")
def edgetam_dir(tmp_path_factory) -> Path:
    """A 128 px EdgeTAM with random weights (32x32 low-res masks)."""
    from autolabel.testing.edgetam_checkpoint import build_edgetam_checkpoint

    return build_edgetam_checkpoint(tmp_path_factory.mktemp("edgetam-tiny"))


@pytest.mark.parametrize(
    "width, height, exact",
    [
        (200, 120, True),  # landscape, the stock processor
        (90, 160, False),  # portrait, torch preprocessing
    ],
)
def test_masks_equal_plain_recipe(edgetam_dir, width, height, exact):
    from transformers import EdgeTamModel, Sam2Processor

    segmenter = EdgeTamSegmenter.from_pretrained(str(edgetam_dir), exact=exact)
    assert isinstance(segmenter, Segmenter)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8))
    boxes = np.array([[10, 20, 60, 90], [0, 0, width, height], [0.5 * width, 0.3 * height, 0.9 * width, 0.95 * height]])
    (embedding,) = segmenter.embed(model_inputs(segmenter.preprocessor, [image]), [Size(width, height)])
    ours = [rle_to_mask(rle) for rle in segmenter.predict(embedding, boxes)]

    expected = recipe_masks(EdgeTamModel, Sam2Processor, edgetam_dir, image, boxes)
    assert len(ours) == len(boxes)
    for mask, ref in zip(ours, expected):
        np.testing.assert_array_equal(mask, ref)


def test_points_refine_masks_as_the_plain_recipe(edgetam_dir):
    from transformers import EdgeTamModel, Sam2Processor

    width, height = 200, 120
    segmenter = EdgeTamSegmenter.from_pretrained(str(edgetam_dir), exact=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8))
    boxes = np.array([[10, 20, 60, 90], [100, 36, 180, 114]])
    clicks = [[(30, 50, 1), (12, 22, 0)], [(140, 72, 1), (110.5, 108, 0)]]
    (embedding,) = segmenter.embed(model_inputs(segmenter.preprocessor, [image]), [Size(width, height)])
    ours = [rle_to_mask(rle) for rle in segmenter.predict(embedding, boxes, clicks)]

    expected = recipe_masks(EdgeTamModel, Sam2Processor, edgetam_dir, image, boxes, clicks)
    assert len(ours) == len(boxes)
    for mask, ref in zip(ours, expected):
        np.testing.assert_array_equal(mask, ref)


def test_missing_checkpoint_raises_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="EdgeTAM"):
        EdgeTamSegmenter.from_pretrained(str(tmp_path / "no-such-dir"))
