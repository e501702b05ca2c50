"""Synthetic photo-like JPEGs for benchmarks and preprocessing tests.

Random noise is a poor stand-in for a photo: it compresses badly (huge files, slow decode) and has
no structure at the scales a model sees. These images mix what photos have at every scale: smooth
lighting gradients, hard-edged objects, mid-frequency texture and a little sensor grain, and encode
at phone-camera quality. Sizes used by the benchmark: 12 MP (4000 x 3000), 2 MP (1920 x 1080), VGA.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZES = {"12mp": (4000, 3000), "2mp": (1920, 1080), "vga": (640, 480)}


def synthetic_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image of the given size with structure at several scales (deterministic per seed)."""
    rng = np.random.default_rng(seed)
    # Lighting: a smooth field, upsampled from a few control points.
    small = rng.uniform(40, 215, (4, 5, 3)).astype(np.uint8)
    base = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(base)
    scale = max(width, height)
    for _ in range(40):  # objects with hard edges, from large to small
        size = scale * rng.uniform(0.01, 0.25)
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        box = [x - size, y - size * rng.uniform(0.3, 1.0), x + size, y + size * rng.uniform(0.3, 1.0)]
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    # Texture at about 1/8 and 1/2 of full resolution, then fine grain.
    texture = np.zeros((height, width, 3), dtype=np.float32)
    for factor, amplitude in ((8, 18.0), (2, 10.0)):
        h, w = max(1, height // factor), max(1, width // factor)
        noise = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        noise = noise.resize((width, height), Image.Resampling.BILINEAR)
        texture += (np.asarray(noise, dtype=np.float32) - 127.5) * (amplitude / 127.5)
    texture += rng.normal(0, 3.0, (height, width, 1)).astype(np.float32)
    pixels = np.asarray(base.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32) + texture
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_photos(folder: str | Path, spec: dict[str, int], quality: int = 90, orientation_every: int = 4,
                 only: list[int] | None = None) -> list[Path]:
    """Write ``{size name: count}`` synthetic JPEGs into ``folder`` (reused if already there).

    Every ``orientation_every``-th image is stored sideways with EXIF orientation 6, as phones do,
    so the EXIF path is exercised (0 disables). ``only``: write just these indices (parallel use).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, count in spec.items():
        width, height = SIZES[name] if name in SIZES else map(int, name.lower().split("x"))
        for i in range(count) if only is None else only:
            path = folder / f"{name}_{i:04d}.jpg"
            if not path.exists():
                image = synthetic_photo(width, height, seed=zlib.crc32(f"{name}/{i}".encode()))
                exif = Image.Exif()
                if orientation_every and i % orientation_every == orientation_every - 1:
                    image = image.transpose(Image.Transpose.ROTATE_90)  # stored sideways...
                    exif[0x0112] = 6  # ...and shown upright by viewers
                tmp = path.with_suffix(".tmp")
                image.save(tmp, format="JPEG", quality=quality, exif=exif.tobytes())
                tmp.replace(path)
            paths.append(path)
    return paths
