"""The gathered multi-scale deformable attention equals transformers' grid_sample version."""

from __future__ import annotations

import pytest
import torch

from autolabel.models.deformable import GatheredDeformableAttention, use_gathered_deformable_attention


def _inputs(batch: int, heads: int, head_dim: int, points: int, shapes: list[tuple[int, int]], queries: int,
            seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    sequence = sum(h * w for h, w in shapes)
    spatial = torch.tensor(shapes)
    start = torch.cat([spatial.new_zeros(1), spatial.prod(1).cumsum(0)[:-1]])
    value = torch.randn(batch, sequence, heads, head_dim, generator=generator)
    # Some sampling points fall outside the maps (zero padding) or on their edges.
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=generator) * 1.4 - 0.2
    locations[0, 0, 0, :, 0] = torch.tensor([0.0, 1.0])
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=generator)
    return value, spatial, shapes, start, locations, weights / weights.sum((-1, -2), keepdim=True)


@pytest.mark.parametrize("batch, heads, points, shapes", [
    (1, 8, 4, [(20, 27), (10, 14), (5, 7), (3, 4)]),  # Grounding DINO's layout
    (2, 2, 2, [(7, 3), (1, 1)]),  # batched, a 1 x 1 level
])
def test_equals_transformers_grid_sample_version(batch, heads, points, shapes):
    from transformers.models.grounding_dino.modeling_grounding_dino import MultiScaleDeformableAttention

    inputs = _inputs(batch, heads, 8, points, shapes, queries=50)
    expected = MultiScaleDeformableAttention()(*inputs, 64)
    got = GatheredDeformableAttention()(*inputs, 64)
    assert got.shape == expected.shape == (batch, 50, heads * 8)
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)


def test_points_outside_every_map_give_zero():
    value, spatial, shapes, start, locations, weights = _inputs(1, 2, 4, 2, [(4, 4)], queries=3)
    locations[:] = torch.tensor([1.5, -0.5])
    assert GatheredDeformableAttention()(value, spatial, shapes, start, locations, weights).abs().max() == 0


def test_replaces_every_deformable_attention_of_a_model(tmp_path):
    from transformers import AutoModelForZeroShotObjectDetection

    from autolabel.testing.grounding_dino_checkpoint import build_grounding_dino_checkpoint

    model = AutoModelForZeroShotObjectDetection.from_pretrained(build_grounding_dino_checkpoint(tmp_path))
    layers = model.config.encoder_layers + model.config.decoder_layers
    assert use_gathered_deformable_attention(model) == layers
    assert sum(isinstance(m, GatheredDeformableAttention) for m in model.modules()) == layers
    assert use_gathered_deformable_attention(model) == 0
