"""Multi-scale deformable attention (Deformable DETR, Grounding DINO) as one weighted gather.

transformers' pure-torch version samples every level with ``grid_sample`` into a
``(batch x heads, head_dim, queries, levels x points)`` tensor, then multiplies by the attention
weights and sums: on a CPU that intermediate (hundreds of MB per encoder layer at 800 x 1333 px)
and its copies cost more than the arithmetic. Here each output row is a sum over the 4 bilinear
corners of every sampling point, weighted by (attention weight x bilinear weight): one
``embedding_bag`` call over the values, with no intermediate. Same bilinear rule as ``grid_sample``
(``align_corners=False``, zero padding outside the map), so outputs agree within float rounding.
"""

from __future__ import annotations

import torch
from torch import nn


class GatheredDeformableAttention(nn.Module):
    """A drop-in for transformers' ``MultiScaleDeformableAttention`` module (same ``forward``
    arguments and output, no parameters): ``value`` ``(B, S, H, D)``, ``sampling_locations``
    ``(B, Q, H, L, P, 2)`` normalised ``x, y`` in each level's map, ``attention_weights``
    ``(B, Q, H, L, P)`` -> ``(B, Q, H * D)``."""

    def forward(self, value, value_spatial_shapes, value_spatial_shapes_list, level_start_index,
                sampling_locations, attention_weights, im2col_step=None):
        batch, sequence, heads, head_dim = value.shape
        _, queries, _, levels, points, _ = sampling_locations.shape
        device = value.device
        table = value.permute(0, 2, 1, 3).reshape(batch * heads * sequence, head_dim)
        index_dtype = torch.int32 if table.shape[0] < 2**31 else torch.int64
        # Coordinates in float32 whatever the model's dtype (bf16 cannot address a 100-pixel row),
        # with grid_sample's arithmetic step by step (its grid is 2 * location - 1, in the model's dtype).
        shapes = torch.as_tensor(value_spatial_shapes_list, device=device)
        heights, widths = shapes[:, 0].view(1, 1, 1, levels, 1), shapes[:, 1].view(1, 1, 1, levels, 1)
        grid = (2 * sampling_locations - 1).float()
        x = ((grid[..., 0] + 1) * widths - 1) / 2
        y = ((grid[..., 1] + 1) * heights - 1) / 2
        first_row = ((torch.arange(batch, device=device).view(batch, 1, 1, 1, 1) * heads
                      + torch.arange(heads, device=device).view(1, 1, heads, 1, 1)) * sequence
                     + level_start_index.to(device).view(1, 1, 1, levels, 1)).to(index_dtype)
        x_taps, y_taps = _taps(x, widths, index_dtype), _taps(y, heights, index_dtype)
        corners = (batch, queries, heads, levels, points, 4)
        indices = torch.empty(corners, dtype=index_dtype, device=device)
        weights = torch.empty(corners, dtype=torch.float32, device=device)
        attention = attention_weights.float()
        for j, (y_index, y_weight) in enumerate(y_taps):
            row = first_row + y_index * widths.to(index_dtype)
            weighted = attention * y_weight
            for i, (x_index, x_weight) in enumerate(x_taps):
                torch.add(row, x_index, out=indices[..., 2 * j + i])
                torch.mul(weighted, x_weight, out=weights[..., 2 * j + i])
        rows, per_row = batch * queries * heads, levels * points * 4
        out = nn.functional.embedding_bag(indices.view(rows, per_row), table, mode="sum",
                                          per_sample_weights=weights.view(rows, per_row).to(table.dtype))
        return out.view(batch, queries, heads * head_dim)


def _taps(coordinate: torch.Tensor, size: torch.Tensor, index_dtype) -> tuple:
    """The two bilinear taps along one axis: ``(index, weight)`` each, as ``grid_sample`` weighs
    them; a tap outside ``[0, size)`` gets weight 0 and a clamped index (zero padding)."""
    low = coordinate.floor()
    high_weight = coordinate - low
    low_weight = (low + 1) - coordinate
    low = low.to(index_dtype)
    taps = []
    for index, weight in ((low, low_weight), (low + 1, high_weight)):
        inside = (index >= 0) & (index < size)
        taps.append((torch.minimum(index.clamp(min=0), size - 1).to(index_dtype), weight * inside))
    return tuple(taps)


def use_gathered_deformable_attention(model: nn.Module) -> int:
    """Replace every transformers ``MultiScaleDeformableAttention`` inside ``model`` by
    ``GatheredDeformableAttention``; returns how many were replaced."""
    replaced = 0
    for module in model.modules():
        for name, child in list(module.named_children()):
            if type(child).__name__ == "MultiScaleDeformableAttention":
                setattr(module, name, GatheredDeformableAttention())
                replaced += 1
    return replaced
