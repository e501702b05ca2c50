"""Model input preprocessing in torch that reproduces the transformers processors, from full or
draft-decoded (reduced) pixels, on the CPU or the GPU.

OWLv2 (``Owlv2ImageProcessor``, transformers 5.x) turns an ``(H, W)`` uint8 image into ``(3, O, O)``
pixel values (``O`` = 960 for B/16, 1008 for L/14):

1. rescale to ``[0, 1]`` (``* 1/255``);
2. pad bottom/right with 0 to a square of side ``S = max(H, W)``;
3. gaussian blur with ``sigma = max(0, (S/O - 1) / 2)``, kernel ``2 * ceil(3 sigma) + 1``, reflect
   padding at the square's edges (skipped when ``S <= O``);
4. bilinear resize to ``O x O`` (``align_corners=False``, no antialias);
5. normalise with the CLIP mean/std.

Steps 1-4 are linear and separable, so per channel the result is ``Ry @ image @ Rx.T`` with one
``(O, H)`` and one ``(O, W)`` matrix per image size. Each row holds about ``2 * ceil(3 sigma) + 2``
non-zero weights (the blur kernel seen through the two bilinear taps), so we store the matrices as
bands (``index``, ``weight``: ``(O, T)``) and apply them with ``T`` row gathers per axis instead of a
full-resolution 2-D convolution: about 0.2 GFLOP for a 12 MP photo where the stock processor blurs
all 48 M padded pixels with an 11 x 11 kernel. Weights are computed once per image size (cached).

Reduced (draft-decoded) images: a JPEG decoded at 1/k scale (``Image.draft``) has one pixel per
``k x k`` block of the original, close to the block's mean. Each full-resolution weight row is
integrated over every reduced pixel's footprint in the original frame (``_aggregate``), so the
result is exactly what the processor computes on the original whenever the original is constant
inside each block, and close otherwise (the measured difference is in BENCHMARKS.md and
``tests/models/test_preprocess.py``). The original size, not the reduced one, decides the padding
square, the blur and the box frame, so boxes stay in original pixels.

SAM2 (``Sam2ImageProcessor``) stretches the image to ``1024 x 1024`` with torchvision's
antialiased bilinear resize on uint8 and normalises with the ImageNet mean/std; ``sam2_pixel_values``
makes the same calls (bit-exact on the same pixels and device). From a reduced image it resizes
the reduced pixels, which is close when the reduced image is at least 1024 on both sides.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "Owlv2Preprocessor",
    "as_hwc_uint8",
    "draft_side",
    "owlv2_axis_weights",
    "sam2_pixel_values",
]


class Band(NamedTuple):
    """A banded ``(O, N)`` resampling matrix: row ``i`` is ``sum_t weight[i, t] * x[index[i, t]]``."""

    index: torch.Tensor  # (O, T) int64
    weight: torch.Tensor  # (O, T) float32


def as_hwc_uint8(image) -> torch.Tensor:
    """RGB PIL image, ``(H, W, 3)`` uint8 array or tensor -> ``(H, W, 3)`` uint8 CPU/device tensor."""
    if isinstance(image, torch.Tensor):
        tensor = image
    else:
        from PIL import Image

        if isinstance(image, Image.Image):
            if image.mode != "RGB":
                image = image.convert("RGB")
            tensor = torch.from_numpy(np.array(image))
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(image))
    if tensor.dtype != torch.uint8 or tensor.ndim != 3 or tensor.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {tuple(tensor.shape)} {tensor.dtype}")
    return tensor


# -- OWLv2 ----------------------------------------------------------------------------------------


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """torchvision's ``_get_gaussian_kernel1d`` for the kernel size the OWLv2 processor picks."""
    sigma32 = torch.tensor(sigma, dtype=torch.float32)
    size = int(2 * torch.ceil(3 * sigma32).int() + 1)
    lim = (size - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=size, dtype=torch.float32)
    return torch.softmax(x.div(float(sigma32)).pow(2).neg(), dim=0).double().numpy()


def owlv2_axis_weights(length: int, side: int, out_size: int) -> np.ndarray:
    """``(out_size, length)`` float64 weights of the OWLv2 processor's pad + blur + resize along one
    axis (each row sums to 1 where it lies inside the image).

    ``length``: the image's pixels along this axis; ``side``: the padded square's side
    (``max(H, W)``); the pixels ``length..side-1`` are the zero padding and get no weight.
    """
    from autolabel.models.interpolation import BilinearAxis  # ATen's exact bilinear indices and weights

    if not 0 < length <= side:
        raise ValueError(f"need 0 < length <= side, got {length}, {side}")
    # As the processor computes it: float32 factor, sigma clamped at 0 (no blur when upsampling).
    factor = torch.tensor(side, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
    sigma = float(((factor - 1) / 2).clamp(min=0))
    kernel = _gaussian_kernel(sigma) if sigma > 0 else np.ones(1)
    radius = len(kernel) // 2
    if radius >= side:
        raise ValueError(f"blur kernel of radius {radius} does not fit a side of {side}")
    axis = BilinearAxis.build(side, out_size)
    rows = np.arange(out_size)
    weights = np.zeros((out_size, length), dtype=np.float64)
    for taps, tap_w in ((axis.index0, axis.weight0), (axis.index1, axis.weight1)):
        taps, tap_w = taps.numpy(), tap_w.double().numpy()
        for offset, k in zip(range(-radius, radius + 1), kernel):
            src = taps + offset
            src = np.where(src < 0, -src, src)  # torch's "reflect" padding (edge not repeated)
            src = np.where(src >= side, 2 * (side - 1) - src, src)
            inside = src < length  # the zero padding contributes nothing
            np.add.at(weights, (rows[inside], src[inside]), tap_w[inside] * k)
    return weights


def _aggregate(weights: np.ndarray, reduced: int) -> np.ndarray:
    """Full-resolution weights ``(O, N)`` -> weights over ``reduced`` pixels spanning the same extent.

    Reduced pixel ``m`` stands for the original interval ``[m N / n, (m + 1) N / n)``; its weight is
    the integral of the (piecewise-constant) full-resolution weight over that interval.
    """
    out_size, length = weights.shape
    if reduced == length:
        return weights
    cumulative = np.zeros((out_size, length + 1))
    np.cumsum(weights, axis=1, out=cumulative[:, 1:])
    edges = np.arange(reduced + 1) * (length / reduced)
    cell = np.minimum(np.floor(edges).astype(np.int64), length - 1)
    frac = (edges - cell)[None, :]
    at_edges = cumulative[:, cell] * (1 - frac) + cumulative[:, cell + 1] * frac
    return np.diff(at_edges, axis=1)


def _band(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense ``(O, n)`` -> (index, weight) ``(O, T)`` covering every non-zero of each row."""
    out_size, n = dense.shape
    nonzero = dense != 0
    has = nonzero.any(axis=1)
    first = np.where(has, nonzero.argmax(axis=1), 0)
    last = np.where(has, n - 1 - nonzero[:, ::-1].argmax(axis=1), 0)
    width = int((last - first).max()) + 1
    index = first[:, None] + np.arange(width)[None, :]
    valid = index <= last[:, None]
    index = np.minimum(index, n - 1)
    weight = np.where(valid, dense[np.arange(out_size)[:, None], index], 0.0)
    return index.astype(np.int64), weight.astype(np.float32)


class _BandCache:
    """Bands per (axis length, square side, reduced length, output size) and device; thread-safe."""

    def __init__(self, size: int = 64):
        self._size = size
        self._cpu: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._device: OrderedDict[tuple, Band] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, length: int, side: int, reduced: int, out_size: int, device, scale: float = 1.0) -> Band:
        key = (length, side, reduced, out_size, scale)
        dkey = (*key, str(device))
        with self._lock:
            band = self._device.get(dkey)
            if band is not None:
                self._device.move_to_end(dkey)
                return band
            arrays = self._cpu.get(key)
        if arrays is None:
            arrays = _band(_aggregate(owlv2_axis_weights(length, side, out_size), reduced) * scale)
        band = Band(torch.from_numpy(arrays[0]).to(device), torch.from_numpy(arrays[1]).to(device))
        with self._lock:
            self._cpu[key] = arrays
            self._device[dkey] = band
            for cache in (self._cpu, self._device):
                while len(cache) > self._size:
                    cache.popitem(last=False)
        return band


_BANDS = _BandCache()


def _apply_rows(image: torch.Tensor, band: Band) -> torch.Tensor:
    """``(h, w, C)`` uint8 or float -> ``(O, w, C)`` float32: each output row a weighted sum of T
    input rows. Rows are gathered before the float conversion (a quarter of the memory traffic
    for uint8); gathering whole rows is the fast direction, so columns go through a transpose and
    the same call."""
    out = None
    for t in range(band.index.shape[1]):
        rows = image.index_select(0, band.index[:, t])
        if rows.dtype != torch.float32:
            rows = rows.to(torch.float32)
        weight = band.weight[:, t, None, None]
        out = rows.mul_(weight) if out is None else out.addcmul_(rows, weight)
    return out


class Owlv2Preprocessor:
    """OWLv2 pixel values in torch, equal to ``Owlv2ImageProcessor`` within float rounding (see the
    module docstring; ``tests/models/test_preprocess.py`` states the tolerance).

    Build with ``from_processor``, which returns None for processor settings it does not reproduce
    (then use the stock processor).
    """

    def __init__(self, size: int, mean, std):
        self.size = int(size)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    @classmethod
    def from_processor(cls, image_processor) -> "Owlv2Preprocessor | None":
        ip = image_processor
        size = getattr(ip, "size", None) or {}
        height = size.get("height") if hasattr(size, "get") else getattr(size, "height", None)
        width = size.get("width") if hasattr(size, "get") else getattr(size, "width", None)
        standard = (
            getattr(ip, "do_resize", False)
            and getattr(ip, "do_pad", False)
            and getattr(ip, "do_rescale", False)
            and getattr(ip, "do_normalize", False)
            and math.isclose(float(getattr(ip, "rescale_factor", 0.0)), 1 / 255)
            and height is not None
            and height == width
            and type(ip).__name__ in ("Owlv2ImageProcessor", "Owlv2ImageProcessorPil", "Owlv2ImageProcessorFast")
        )
        if not standard:
            return None
        return cls(height, ip.image_mean, ip.image_std)

    def __call__(self, pixels: torch.Tensor, original_size: tuple[int, int] | None = None,
                 device: str | torch.device = "cpu") -> torch.Tensor:
        """``(h, w, 3)`` uint8 pixels -> ``(3, O, O)`` float32 pixel values on ``device``.

        ``original_size``: ``(width, height)`` of the original image when ``pixels`` is a reduced
        (draft-decoded or shrunk) version of it, same aspect ratio; None when they are the original.
        """
        h, w = int(pixels.shape[0]), int(pixels.shape[1])
        width, height = original_size if original_size is not None else (w, h)
        if w > width or h > height:
            raise ValueError(f"pixels {w}x{h} are larger than the original size {width}x{height}")
        side = max(width, height)
        # The 1/255 rescale is folded into the row weights.
        rows = _BANDS.get(height, side, h, self.size, device, scale=1 / 255)
        cols = _BANDS.get(width, side, w, self.size, device)
        image = pixels.to(device=device, non_blocking=True)
        out = _apply_rows(image, rows).transpose(0, 1).contiguous()  # (w, O, 3)
        out = _apply_rows(out, cols)  # (O columns, O rows, 3), in [0, 1]
        return _normalize(out.permute(2, 1, 0), self.mean, self.std)


def _normalize(image: torch.Tensor, mean, std) -> torch.Tensor:
    import torchvision.transforms.v2.functional as tvF

    return tvF.normalize(image.contiguous(), mean, std)


# -- SAM2 -----------------------------------------------------------------------------------------


def sam2_pixel_values(pixels: torch.Tensor, image_processor, device: str | torch.device = "cpu") -> torch.Tensor:
    """``(h, w, 3)`` uint8 pixels -> ``(3, S, S)`` float32 SAM2 pixel values on ``device``, with the
    calls ``Sam2ImageProcessor`` makes (uint8 antialiased bilinear stretch to the model size, then the
    fused rescale + normalise), so the same pixels on the CPU give the same values bit for bit."""
    import torchvision.transforms.v2.functional as tvF

    ip = image_processor
    size = [int(ip.size["height"]), int(ip.size["width"])]
    image = pixels.to(device=device, non_blocking=True).permute(2, 0, 1).contiguous().unsqueeze(0)
    image = tvF.resize(image, size, interpolation=tvF.InterpolationMode.BILINEAR, antialias=True)
    # Sam2ImageProcessor fuses rescale into normalise: mean and std scaled by 1 / rescale_factor.
    mean = torch.tensor(ip.image_mean, device=image.device) * (1.0 / ip.rescale_factor)
    std = torch.tensor(ip.image_std, device=image.device) * (1.0 / ip.rescale_factor)
    return tvF.normalize(image.to(torch.float32), mean.tolist(), std.tolist())[0]


# -- decode planning ------------------------------------------------------------------------------


def draft_side(width: int, height: int, min_long: int = 0, min_short: int = 0) -> int | None:
    """The ``max_side`` to pass to ``images.load_image`` so that a JPEG is decoded by the DCT at the
    largest reduction (1/2, 1/4, 1/8) whose size is still at least ``min_long`` on the long side and
    ``min_short`` on the short side; None when no reduction fits (decode at full size).

    The side is the exact size the draft produces where Pillow allows it, so ``load_image`` does
    not resample the pixels again after the DCT (it does when the sides do not divide evenly).
    """
    long_side, short_side = max(width, height), min(width, height)
    for k in (8, 4, 2):
        if -(-long_side // k) < min_long or -(-short_side // k) < min_short:
            continue
        for side in (-(-long_side // k), long_side // k):
            # Pillow's JpegImageFile.draft: scale = min(W // w, H // h), then the largest of 8, 4, 2, 1.
            short_req = max(1, round(short_side * side / long_side))
            scale = min(long_side // side, short_side // short_req)
            if scale >= k and short_req >= min_short and side >= min_long:
                return side
    return None
