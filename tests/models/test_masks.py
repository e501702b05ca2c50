"""Region-limited bilinear upsampling: RLEs equal thresholding ``F.interpolate``'s full frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autolabel.geometry import Size, rle_to_mask
from autolabel.models.interpolation import BilinearAxis
from autolabel.models.masks import check_boxes, encode_upsampled, upsampled_rle


@pytest.mark.parametrize(
    "height, width, positive",
    [
        (120, 200, "random"),  # about half the cells positive: the region is the whole frame
        (160, 90, "random"),
        (3000, 4000, "blob"),  # a 12 MP frame, positive cells in one corner: a small region
        (3000, 4000, "random"),
        (37, 1001, "blob"),  # odd sizes
        (1080, 1920, "object"),  # SAM-like: large logits, one object with a sharp edge
    ],
)
def test_region_upsampling_equals_f_interpolate(height, width, positive):
    """The region-limited upsampling reproduces post_process_masks' F.interpolate bit for bit."""
    torch.manual_seed(0)
    logits = torch.randn(32, 32) * 4
    if positive == "blob":
        logits = -logits.abs()
        logits[20:23, 25:29] = torch.rand(3, 4) * 5
    if positive == "object":  # the edge band, where rows are blended one by one, is what matters
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
        logits = (-(((xx - 0.2) ** 2 + yy**2).sqrt() - 0.5) * 60).clamp(-20, 20) + logits * 0.05
    rows = BilinearAxis.build(32, height)
    cols = BilinearAxis.build(32, width)
    ours = rle_to_mask(upsampled_rle(logits, rows, cols))
    ref = F.interpolate(logits[None, None], (height, width), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_array_equal(ours, (ref > 0).numpy())


def test_empty_mask_gives_empty_rle():
    rows, cols = BilinearAxis.build(32, 50), BilinearAxis.build(32, 70)
    rle = upsampled_rle(-torch.ones(32, 32), rows, cols)
    assert rle["size"] == [50, 70]
    assert not rle_to_mask(rle).any()


@pytest.mark.parametrize("threshold", [0.5, 0.9])
def test_thresholded_probabilities_equal_f_interpolate(threshold):
    """SAM 3 thresholds upsampled probabilities, not logits: the same region rule with a margin."""
    torch.manual_seed(1)
    probabilities = torch.rand(3, 24, 24)
    probabilities[1] = 0.2  # never above the threshold: an empty mask
    ours = [rle_to_mask(rle) for rle in encode_upsampled(probabilities, Size(333, 250), threshold)]
    ref = F.interpolate(probabilities[:, None], (250, 333), mode="bilinear", align_corners=False)[:, 0]
    for mask, expected in zip(ours, ref):
        np.testing.assert_array_equal(mask, (expected > threshold).numpy())
    assert not ours[1].any()


def test_check_boxes_refuses_bad_shapes_and_values():
    assert check_boxes([]).shape == (0, 4)
    with pytest.raises(ValueError, match="shape"):
        check_boxes(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        check_boxes([[0, 0, np.nan, 1]])
