"""Exact bilinear resampling weights, as ATen computes them, so a resize can be computed only where
it matters (SAM2 masks in their region) or folded into other linear operations (OWLv2's pad + blur
+ resize) with the same values."""

from __future__ import annotations

from typing import NamedTuple

import torch


class BilinearAxis(NamedTuple):
    """Per output pixel along one axis, the two source cells (int64) and their float32 weights that
    ``F.interpolate(mode="bilinear", align_corners=False)`` reads."""

    index0: torch.Tensor
    index1: torch.Tensor
    weight0: torch.Tensor
    weight1: torch.Tensor

    @classmethod
    def build(cls, in_size: int, out_size: int) -> "BilinearAxis":
        scale = torch.tensor(in_size, dtype=torch.float32) / out_size  # ATen: float32 in / out
        centres = torch.arange(out_size, dtype=torch.float32) + 0.5
        # source = scale * (dst + 0.5) - 0.5 with one rounding, as the compiled kernel does (see
        # fma); rounding the product first moves weights by ~1e-6, enough to flip the odd pixel.
        source = fma(centres, scale, torch.full_like(centres, -0.5)).clamp_min(0)
        index0 = source.floor().to(torch.int64).clamp_max(in_size - 1)
        index1 = (index0 + 1).clamp_max(in_size - 1)
        weight1 = (source - index0).clamp(0, 1)
        return cls(index0, index1, 1 - weight1, weight1)

    def hits(self, source_hit: torch.Tensor) -> tuple[int, int] | None:
        """``[start, stop)`` of the output pixels that read any source cell where ``source_hit``
        (``(in,)`` bool) is true; None if there are none."""
        reads = torch.nonzero(source_hit[self.index0] | source_hit[self.index1]).flatten()
        if len(reads) == 0:
            return None
        return int(reads[0]), int(reads[-1]) + 1

    def crop(self, start: int, stop: int) -> "BilinearAxis":
        return BilinearAxis(*(t[start:stop] for t in self))


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a * b + c`` (float32, broadcasting). ``torch.addcmul`` fuses the multiply-add where the CPU
    has FMA, as the compiler does in ATen's interpolation kernel, so the two round alike."""
    return torch.addcmul(c, a, b)
