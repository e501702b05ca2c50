"""Model input preprocessing in torch that reproduces the transformers processors, from full or
draft-decoded (reduced) pixels, on the CPU or the GPU.

OWLv2 (``Owlv2ImageProcessor``, transformers 5.x), ``(H, W)`` uint8 -> ``(3, O, O)`` (O = 960 or 1008):
rescale to [0, 1]; pad bottom/right with 0 to a square of side ``S = max(H, W)``; gaussian blur with
``sigma = max(0, (S/O - 1) / 2)``, kernel ``2 * ceil(3 sigma) + 1``, reflect padding; bilinear resize
to ``O x O`` (no antialias); CLIP normalisation. All but the last step are linear and separable, so
per channel the result is ``Ry @ image @ Rx.T``; each row has about ``2 * ceil(3 sigma) + 2``
non-zero weights, so the matrices are stored as bands and applied with row gathers (about 0.2 GFLOP
for a 12 MP photo, where the processor blurs all 48 M padded pixels). Weights are cached per size.

A JPEG drafted at 1/k scale has one pixel per ``k x k`` block, close to the block's mean: each
full-resolution weight row is integrated over every reduced pixel's footprint (``_aggregate``), so
the result is exact when the original is constant inside each block and close otherwise
(BENCHMARKS.md). The original size decides the square, the blur and the box frame.

SAM2 (``Sam2ImageProcessor``): antialiased bilinear stretch of the uint8 image to 1024 x 1024, then
ImageNet normalisation; ``sam2_pixel_values`` makes the same calls (bit-exact on the same pixels), as
``sam_pixel_values`` does for SAM v1's aspect-keeping resize and padding.
"""

from __future__ import annotations

import math
from functools import lru_cache, partial
from typing import NamedTuple

import numpy as np
import torch

from autolabel.geometry import Size


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
            tensor = torch.from_numpy(_pil_rgb_array(image if image.mode == "RGB" else image.convert("RGB")))
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(image))
    if tensor.dtype != torch.uint8 or tensor.ndim != 3 or tensor.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {tuple(tensor.shape)} {tensor.dtype}")
    return tensor


def _pil_rgb_array(image) -> np.ndarray:
    """An RGB PIL image's pixels as a new ``(H, W, 3)`` array, filled in strips of rows:
    ``np.array(image)`` goes through ``tobytes()``, which holds the bytes twice more than the array
    (on a 108 MP PNG, 0.6 GB more at the peak); a strip's copies are small."""
    width, height = image.size
    array = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, (1 << 22) // max(1, width * 3))  # about 4 MB a strip
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        array[top:bottom] = np.asarray(image.crop((0, top, width, bottom)))
    return array


class StockPreprocessor:
    """A model's own transformers image processor on fully decoded pixels (the plain recipe), on the CPU."""

    on_device = False

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def decode_side(self, size: Size) -> None:
        return None

    def __call__(self, pixels: torch.Tensor, size: Size, device="cpu") -> torch.Tensor:
        if (int(pixels.shape[1]), int(pixels.shape[0])) != tuple(size):
            raise ValueError("the stock processor needs the original pixels, not a reduced decode")
        values = self.image_processor(images=[pixels.cpu().numpy()], return_tensors="pt")["pixel_values"][0]
        return values.to(device=device, dtype=torch.float32)


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
    axis of ``length`` pixels, padded to ``side`` (the padding gets no weight)."""
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
    """Full-resolution weights ``(O, N)`` -> weights over ``reduced`` pixels spanning the same extent:
    reduced pixel ``m`` gets the integral of the weights over ``[m N / n, (m + 1) N / n)``."""
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


@lru_cache(maxsize=64)
def _axis_band(device: str, length: int, side: int, reduced: int, out_size: int, scale: float = 1.0) -> Band:
    """The band of one axis on ``device``, per image geometry (cached: it depends only on the sizes)."""
    index, weight = _band(_aggregate(owlv2_axis_weights(length, side, out_size), reduced) * scale)
    return Band(torch.from_numpy(index).to(device), torch.from_numpy(weight).to(device))


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
    """OWLv2 pixel values in torch, equal to ``Owlv2ImageProcessor`` within float rounding. Build with
    ``from_processor``: None for processor settings it does not reproduce."""

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
        ``original_size``: ``(width, height)`` when ``pixels`` is a reduced copy (same aspect ratio)."""
        import torchvision.transforms.v2.functional as tvF

        h, w = int(pixels.shape[0]), int(pixels.shape[1])
        width, height = original_size if original_size is not None else (w, h)
        if w > width or h > height:
            raise ValueError(f"pixels {w}x{h} are larger than the original size {width}x{height}")
        side = max(width, height)
        # The 1/255 rescale is folded into the row weights.
        rows = _axis_band(str(device), height, side, h, self.size, scale=1 / 255)
        cols = _axis_band(str(device), width, side, w, self.size)
        image = pixels.to(device=device, non_blocking=True)
        out = _apply_rows(image, rows).transpose(0, 1).contiguous()  # (w, O, 3)
        out = _apply_rows(out, cols)  # (O columns, O rows, 3), in [0, 1]
        return tvF.normalize(out.permute(2, 1, 0).contiguous(), self.mean, self.std)


# -- stretch and aspect-keeping resizes (SAM2, SAM 3, EdgeTAM, SAM v1, OWL-ViT) -----------------


def resize_normalize(pixels: torch.Tensor, out_hw: list[int], interpolation, mean, std, rescale_factor: float,
                     device: str | torch.device = "cpu") -> torch.Tensor:
    """``(h, w, 3)`` uint8 -> ``(1, 3, H, W)`` float32 on ``device`` with the calls the torchvision
    image processors make: a uint8 antialiased resize to ``out_hw``, then rescale fused into the
    normalisation (mean and std scaled by ``1 / rescale_factor``), so the same pixels give the same
    values bit for bit."""
    import torchvision.transforms.v2.functional as tvF

    image = pixels.to(device=device, non_blocking=True).permute(2, 0, 1).contiguous().unsqueeze(0)
    image = tvF.resize(image, out_hw, interpolation=interpolation, antialias=True)
    mean = torch.tensor(mean, device=image.device) * (1.0 / rescale_factor)
    std = torch.tensor(std, device=image.device) * (1.0 / rescale_factor)
    return tvF.normalize(image.to(torch.float32), mean.tolist(), std.tolist())


def sam2_pixel_values(image_processor, pixels: torch.Tensor, size: Size | None = None,
                      device: str | torch.device = "cpu") -> torch.Tensor:
    """``(h, w, 3)`` uint8 pixels -> ``(3, S, S)`` float32 pixel values of ``Sam2ImageProcessor`` (also
    SAM 3's and EdgeTAM's): a bilinear stretch to the model's square (``size`` is not needed)."""
    import torchvision.transforms.v2.functional as tvF

    ip = image_processor
    size = [int(ip.size["height"]), int(ip.size["width"])]
    return resize_normalize(pixels, size, tvF.InterpolationMode.BILINEAR, ip.image_mean, ip.image_std,
                            ip.rescale_factor, device)[0]


def reshaped_size(size: Size, longest_edge: int) -> tuple[int, int]:
    """``(height, width)`` of an image of ``size`` after SAM v1's aspect-keeping resize, with its
    rounding (``SamImageProcessor._get_preprocess_shape``)."""
    width, height = size
    scale = longest_edge * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def sam_pixel_values(image_processor, pixels: torch.Tensor, size: Size, device="cpu") -> torch.Tensor:
    """``(h, w, 3)`` uint8 pixels of an image of original ``size`` -> ``(3, P, P)`` float32 pixel
    values of ``SamImageProcessor``: bilinear resize to the reshaped size, zero padding bottom/right."""
    import torch.nn.functional as F
    import torchvision.transforms.v2.functional as tvF

    ip = image_processor
    rh, rw = reshaped_size(size, int(ip.size["longest_edge"]))
    ph, pw = int(ip.pad_size["height"]), int(ip.pad_size["width"])
    image = resize_normalize(pixels, [rh, rw], tvF.InterpolationMode.BILINEAR, ip.image_mean, ip.image_std,
                             ip.rescale_factor, device)
    return F.pad(image, (0, pw - rw, 0, ph - rh))[0]


class DraftPreprocessor:
    """The fast path: JPEGs draft-decoded to at least ``min_long`` x ``min_short`` (what the model's
    resize needs to stay close to the processor, see BENCHMARKS.md), then ``convert(pixels, size,
    device)`` (picklable: Ray ships preprocessors), the processor's operations in torch, on the model's device when it has one."""

    on_device = True

    def __init__(self, convert, min_long: int, min_short: int = 0):
        self.convert = convert
        self.min_long = int(min_long)
        self.min_short = int(min_short)

    def decode_side(self, size: Size) -> int | None:
        return draft_side(*size, min_long=self.min_long, min_short=self.min_short)

    def __call__(self, pixels: torch.Tensor, size: Size, device="cpu") -> torch.Tensor:
        return self.convert(pixels, Size(*size), device)


def stretch_preprocessor(image_processor, exact: bool):
    """SAM2's (and SAM 3's, EdgeTAM's) preprocessor: the torch stretch from a draft decode to at least
    the square on both sides (each axis is stretched), or the processor itself when ``exact`` or
    for settings the torch version does not reproduce."""
    ip = image_processor
    standard = ip.do_resize and ip.do_rescale and ip.do_normalize and not getattr(ip, "do_pad", None)
    if exact or not standard:
        return StockPreprocessor(ip)
    side = int(ip.size["height"])
    return DraftPreprocessor(partial(sam2_pixel_values, ip), min_long=side, min_short=side)


# -- decode planning ------------------------------------------------------------------------------


def draft_side(width: int, height: int, min_long: int = 0, min_short: int = 0) -> int | None:
    """The ``max_side`` for ``images.load_image`` that makes the DCT decode a JPEG at the largest
    reduction (1/2, 1/4, 1/8) still at least ``min_long`` x ``min_short``; None: full size. It is
    the exact size the draft produces where Pillow allows it, so the pixels are not resampled again."""
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
