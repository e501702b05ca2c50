"""Tests for autolabel.images: discovery, decoding, orientation, conversion, limits, hashing."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin

from autolabel import images
from autolabel.errors import ConfigError, ImageLoadError
from autolabel.images import (
    IMAGE_EXTENSIONS,
    discover_images,
    file_sha256,
    load_image,
    oriented_size,
)
from autolabel.orientation import ORIENTATION_TAG

# Oriented (width, height) of the EXIF test photos.
EXPECTED_SIZE = {"Landscape": (1800, 1200), "Portrait": (1200, 1800)}


# --------------------------------------------------------------------------------------------------
# Helpers


def _save(path: Path, im: Image.Image, fmt: str, **kwargs) -> Path:
    im.save(path, fmt, **kwargs)
    return path


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-ish RGB test picture (random blocks), (h, w, 3) uint8."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w]


def _thumb(im: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(im.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB but whose pixel data is a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any pixel data is decoded."""

    def refuse(self):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# --------------------------------------------------------------------------------------------------
# Discovery


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for rel in [
        "a.jpg",
        "B.JPG",  # upper-case extension
        "sub/c.png",
        "sub/deeper/d.TIFF",
        "sub/e.webp",
        "notes.txt",  # not an image extension
        ".hidden.jpg",  # hidden file
        ".cache/f.jpg",  # inside a hidden folder
        "sub/g.jpeg.bak",  # extension is .bak
    ]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return root


def test_discover_recurses_filters_and_sorts(tree: Path):
    found = discover_images([tree])
    rel = [p.relative_to(tree.resolve()).as_posix() for p in found]
    assert rel == ["B.JPG", "a.jpg", "sub/c.png", "sub/deeper/d.TIFF", "sub/e.webp"]
    assert all(p.is_absolute() for p in found)
    assert found == sorted(found)


def test_discover_explicit_files_always_included_and_deduplicated(tree: Path, monkeypatch):
    monkeypatch.chdir(tree)
    found = discover_images([tree, "notes.txt", ".hidden.jpg", "a.jpg", tree / "a.jpg"])
    names = [p.name for p in found]
    assert "notes.txt" in names and ".hidden.jpg" in names  # named explicitly -> kept
    assert names.count("a.jpg") == 1  # same file three ways -> once


def test_discover_accepts_a_single_path(tree: Path):
    assert discover_images(str(tree)) == discover_images([tree])


@pytest.mark.parametrize("missing", ["nope", "nope/deeper.jpg"])
def test_discover_missing_path_raises_config_error(tmp_path: Path, missing: str):
    with pytest.raises(ConfigError, match="does not exist") as info:
        discover_images([tmp_path / missing])
    assert missing.split("/")[0] in str(info.value)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_discover_symlink_loops_terminate_and_links_resolve(tree: Path, tmp_path: Path):
    (tree / "sub" / "loop").symlink_to(tree, target_is_directory=True)  # cycle back to the root
    (tree / "sub" / "self").symlink_to(tree / "sub" / "self")  # a link to itself (ELOOP)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"x")
    (tree / "linked").symlink_to(outside, target_is_directory=True)
    (tree / "alias.jpg").symlink_to(tree / "a.jpg")
    found = discover_images([tree])
    assert len(found) == len(set(found))
    assert (outside / "x.png").resolve() in found  # followed into a linked folder
    assert sum(p.name == "a.jpg" for p in found) == 1  # alias resolves to the same file
    assert not any(p.name == "alias.jpg" for p in found)


# What discovery listed on this tree when it still sorted ``Path`` objects (part by part), but for
# the dangling link, now listed where it points (resolved, like every path, for containment checks).
_LISTED_BEFORE = [
    "outside/o.jpg",  # reached through the folder link tree/linked, listed where it really lies
    "tree/B.PNG",
    "tree/a.jpg",  # also reached as tree/alias.jpg, a link to it: listed once
    "tree/nowhere.jpg",  # tree/dangling.jpg, a link to nothing: listed, so that labelling reports it as failed
    "tree/img/x.jpg",
    "tree/img 1/y.jpg",
    "tree/img-2.jpg",
    "tree/sub/c.webp",  # also reachable as tree/again/c.webp: each real folder is walked once
    "tree/sub/deeper/d.tif",
    "tree/sub/self.jpg",  # a link to itself (ELOOP): listed, reported as failed
]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_discover_lists_what_it_listed_before_in_string_order(tmp_path: Path):
    base = tmp_path.resolve()
    tree = base / "tree"
    for rel in ["a.jpg", "B.PNG", "img/x.jpg", "img 1/y.jpg", "img-2.jpg", "sub/deeper/d.tif", "sub/c.webp",
                ".hidden/h.jpg", ".dot.jpg", "notes.txt", "sub/e.jpeg.bak", "outside/o.jpg"]:
        path = (base if rel.startswith("outside/") else tree) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (tree / "sub" / "loop").symlink_to(tree, target_is_directory=True)
    (tree / "sub" / "self.jpg").symlink_to(tree / "sub" / "self.jpg")
    (tree / "dangling.jpg").symlink_to(tree / "nowhere.jpg")
    (tree / "linked").symlink_to(base / "outside", target_is_directory=True)
    (tree / "again").symlink_to(tree / "sub", target_is_directory=True)
    (tree / "alias.jpg").symlink_to(tree / "a.jpg")

    found = images.discover_image_paths([tree])
    rel = [os.path.relpath(p, base) for p in found]
    assert sorted(rel) == sorted(_LISTED_BEFORE)
    # Plain string order, the store's: "img 1/" and "img-2.jpg" now come before "img/" (" " and "-"
    # sort before "/"), which ``Path`` order put after it.
    assert rel == sorted(_LISTED_BEFORE)
    assert rel.index("tree/img 1/y.jpg") < rel.index("tree/img/x.jpg")
    assert all(isinstance(p, str) and os.path.isabs(p) for p in found)
    assert discover_images([tree]) == [Path(p) for p in found]


def test_discover_named_twice_lists_once_in_order(tree: Path):
    found = images.discover_image_paths([tree / "sub", tree, tree / "a.jpg"])
    assert found == sorted(set(found))
    assert found == images.discover_image_paths([tree])


def test_image_extensions_are_lower_case_with_dot():
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------------------------------
# EXIF orientation on real photos


@pytest.mark.parametrize("kind", ["Landscape", "Portrait"])
@pytest.mark.parametrize("orientation", range(9))  # 0 (invalid -> none) and every EXIF value 1-8
def test_exif_orientation_real_photos(kind: str, orientation: int, exif_dir: Path):
    path = exif_dir / f"{kind}_{orientation}.jpg"
    reference = load_image(exif_dir / f"{kind}_1.jpg").image
    small = (reference.width // 20, reference.height // 20)

    loaded = load_image(path)
    assert (loaded.width, loaded.height) == EXPECTED_SIZE[kind]
    assert loaded.image.size == EXPECTED_SIZE[kind]
    assert oriented_size(path) == EXPECTED_SIZE[kind]
    assert loaded.scale == 1.0
    assert loaded.image.mode == "RGB"
    # The same scene after orientation ...
    assert np.abs(_thumb(loaded.image, small) - _thumb(reference, small)).mean() < 3.0
    # ... which the raw stored pixels are not (except for "no orientation" 0 and 1).
    with Image.open(path) as raw:
        raw_diff = np.abs(_thumb(raw, small) - _thumb(reference, small)).mean()
    assert raw_diff < 3.0 if orientation in (0, 1) else raw_diff > 20.0
    # Metadata is dropped, so saving the pixels cannot rotate them a second time.
    assert ORIENTATION_TAG not in loaded.image.getexif()


@pytest.mark.parametrize("kind", ["Landscape", "Portrait"])
@pytest.mark.parametrize("orientation", [1, 3, 5, 6, 8])  # none, 180, transpose, 90 cw, 90 ccw
def test_max_side_draft_keeps_frame_and_original_size(kind: str, orientation: int, exif_dir: Path, monkeypatch):
    drafted = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        drafted.append((size, self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    path = exif_dir / f"{kind}_{orientation}.jpg"
    loaded = load_image(path, max_side=256)

    assert (loaded.width, loaded.height) == EXPECTED_SIZE[kind]  # original, oriented
    assert max(loaded.image.size) == 256  # exactly max_side, never below
    assert (loaded.image.width > loaded.image.height) == (kind == "Landscape")
    assert loaded.scale == pytest.approx(256 / 1800)
    assert loaded.image.width == pytest.approx(loaded.width * loaded.scale, abs=1)
    assert loaded.image.height == pytest.approx(loaded.height * loaded.scale, abs=1)
    # JPEG draft really decoded at a reduced DCT scale, and not below the requested size.
    ((requested, decoded),) = drafted
    assert decoded[0] >= requested[0] and decoded[1] >= requested[1]
    assert max(decoded) < 1800
    full = load_image(exif_dir / f"{kind}_1.jpg").image
    assert np.abs(_thumb(loaded.image, (60, 60)) - _thumb(full, (60, 60))).mean() < 3.0


# --------------------------------------------------------------------------------------------------
# Modes and formats -> RGB

WHITE = (255, 255, 255)


def _case_png_16bit(tmp_path):
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16)
    path = _save(tmp_path / "g16.png", Image.fromarray(values), "PNG")
    return path, {(0, 0): (0, 0, 0), (1, 0): (64,) * 3, (2, 0): (128,) * 3, (3, 0): WHITE}, 1


def _case_tiff_i16(tmp_path):
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16)
    path = _save(tmp_path / "g16.tif", Image.fromarray(values), "TIFF")
    return path, {(0, 0): (0, 0, 0), (1, 0): (64,) * 3, (2, 0): (128,) * 3, (3, 0): WHITE}, 1


def _case_tiff_i16b(tmp_path):
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=">u2")
    im = Image.frombytes("I;16B", (4, 1), values.tobytes())
    path = _save(tmp_path / "g16b.tif", im, "TIFF")
    return path, {(0, 0): (0, 0, 0), (1, 0): (64,) * 3, (2, 0): (128,) * 3, (3, 0): WHITE}, 1


def _case_tiff_int32_16bit_range(tmp_path):
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.int32)
    path = _save(tmp_path / "i32.tif", Image.fromarray(values), "TIFF")
    return path, {(0, 0): (0, 0, 0), (1, 0): (64,) * 3, (2, 0): (128,) * 3, (3, 0): WHITE}, 1


def _case_tiff_int32_8bit_range(tmp_path):
    values = np.array([[0, 64, 128, 255]], dtype=np.int32)
    path = _save(tmp_path / "i32_8.tif", Image.fromarray(values), "TIFF")
    return path, {(0, 0): (0, 0, 0), (1, 0): (64,) * 3, (2, 0): (128,) * 3, (3, 0): WHITE}, 0


def _case_tiff_float_unit(tmp_path):
    values = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    path = _save(tmp_path / "f.tif", Image.fromarray(values), "TIFF")
    return path, {(0, 0): (0, 0, 0), (1, 0): (64,) * 3, (2, 0): (128,) * 3, (3, 0): WHITE}, 1


def _case_png_1bit(tmp_path):
    im = Image.new("1", (2, 1))
    im.putpixel((1, 0), 1)
    path = _save(tmp_path / "bw.png", im, "PNG")
    return path, {(0, 0): (0, 0, 0), (1, 0): WHITE}, 0


def _case_png_l(tmp_path):
    im = Image.fromarray(np.array([[0, 100, 255]], dtype=np.uint8))
    path = _save(tmp_path / "l.png", im, "PNG")
    return path, {(0, 0): (0, 0, 0), (1, 0): (100,) * 3, (2, 0): WHITE}, 0


def _case_png_la(tmp_path):
    # black with alpha 0, 255 and 128 -> background, black, half way
    arr = np.array([[[0, 0], [0, 255], [0, 128]]], dtype=np.uint8)
    path = _save(tmp_path / "la.png", Image.fromarray(arr, "LA"), "PNG")
    return path, {(0, 0): WHITE, (1, 0): (0, 0, 0), (2, 0): (127, 127, 127)}, 1


def _case_png_palette_trns(tmp_path):
    im = Image.new("P", (3, 1))
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])
    im.putdata([0, 1, 2])
    path = _save(tmp_path / "p.png", im, "PNG", transparency=0)  # index 0 transparent (tRNS)
    return path, {(0, 0): WHITE, (1, 0): (255, 0, 0), (2, 0): (0, 0, 255)}, 0


def _case_png_rgba_half(tmp_path):
    arr = np.array([[[255, 0, 0, 128], [0, 0, 255, 255], [0, 0, 0, 0]]], dtype=np.uint8)
    path = _save(tmp_path / "rgba.png", Image.fromarray(arr, "RGBA"), "PNG")
    return path, {(0, 0): (255, 127, 127), (1, 0): (0, 0, 255), (2, 0): WHITE}, 1


def _case_png_rgb_colour_key(tmp_path):
    arr = np.array([[[1, 2, 3], [10, 200, 30]]], dtype=np.uint8)
    path = _save(tmp_path / "key.png", Image.fromarray(arr), "PNG", transparency=(1, 2, 3))
    return path, {(0, 0): WHITE, (1, 0): (10, 200, 30)}, 0


def _case_png_l_colour_key(tmp_path):
    im = Image.fromarray(np.array([[7, 0]], dtype=np.uint8))
    path = _save(tmp_path / "lkey.png", im, "PNG", transparency=7)
    return path, {(0, 0): WHITE, (1, 0): (0, 0, 0)}, 0


def _case_png_16bit_colour_key(tmp_path):
    im = Image.fromarray(np.array([[300, 0]], dtype=np.uint16))
    path = _save(tmp_path / "key16.png", im, "PNG", transparency=300)
    return path, {(0, 0): WHITE, (1, 0): (0, 0, 0)}, 0


def _case_webp_rgba(tmp_path):
    arr = np.zeros((8, 8, 4), dtype=np.uint8)
    arr[:, :4] = (0, 128, 0, 255)  # left half opaque green, right half transparent
    path = _save(tmp_path / "a.webp", Image.fromarray(arr, "RGBA"), "WEBP", lossless=True)
    return path, {(1, 1): (0, 128, 0), (6, 6): WHITE}, 0


def _case_jpeg_cmyk(tmp_path):
    arr = np.zeros((16, 32, 3), dtype=np.uint8)
    arr[:, :16] = (255, 0, 0)
    arr[:, 16:] = (0, 0, 255)
    path = _save(tmp_path / "cmyk.jpg", Image.fromarray(arr).convert("CMYK"), "JPEG", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    return path, {(4, 8): (255, 0, 0), (28, 8): (0, 0, 255)}, 10


def _case_jpeg_gray(tmp_path):
    path = _save(tmp_path / "g.jpg", Image.new("L", (16, 16), 90), "JPEG", quality=95)
    return path, {(8, 8): (90, 90, 90)}, 2


def _case_tiff_cmyk(tmp_path):
    path = _save(tmp_path / "cmyk.tif", Image.new("CMYK", (2, 2), (0, 255, 255, 0)), "TIFF")
    return path, {(0, 0): (255, 0, 0)}, 0


def _case_bmp_rgb(tmp_path):
    path = _save(tmp_path / "a.bmp", Image.new("RGB", (3, 2), (10, 20, 30)), "BMP")
    return path, {(2, 1): (10, 20, 30)}, 0


def _case_mpo(tmp_path):
    first, second = Image.new("RGB", (32, 16), (200, 10, 10)), Image.new("RGB", (32, 16), (0, 0, 255))
    path = _save(tmp_path / "phone.jpg", first, "MPO", save_all=True, append_images=[second])
    with Image.open(path) as check:
        assert check.format == "MPO"
    return path, {(16, 8): (200, 10, 10)}, 6


def _case_png_1x1(tmp_path):
    path = _save(tmp_path / "one.png", Image.new("RGB", (1, 1), (1, 2, 3)), "PNG")
    return path, {(0, 0): (1, 2, 3)}, 0


def _case_jpeg_1x1(tmp_path):
    path = _save(tmp_path / "one.jpg", Image.new("RGB", (1, 1), (120, 120, 120)), "JPEG", quality=95)
    return path, {(0, 0): (120, 120, 120)}, 3


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_case_png_16bit, id="png-16bit-gray-scaled-not-saturated"),
        pytest.param(_case_tiff_i16, id="tiff-I;16"),
        pytest.param(_case_tiff_i16b, id="tiff-I;16B-big-endian"),
        pytest.param(_case_tiff_int32_16bit_range, id="tiff-I-int32-holding-16bit-values"),
        pytest.param(_case_tiff_int32_8bit_range, id="tiff-I-int32-holding-8bit-values"),
        pytest.param(_case_tiff_float_unit, id="tiff-F-float-0-to-1"),
        pytest.param(_case_png_1bit, id="png-1bit"),
        pytest.param(_case_png_l, id="png-L"),
        pytest.param(_case_png_la, id="png-LA-alpha-on-white"),
        pytest.param(_case_png_palette_trns, id="png-P-with-tRNS"),
        pytest.param(_case_png_rgba_half, id="png-RGBA-half-alpha-blended"),
        pytest.param(_case_png_rgb_colour_key, id="png-RGB-colour-key"),
        pytest.param(_case_png_l_colour_key, id="png-L-colour-key"),
        pytest.param(_case_png_16bit_colour_key, id="png-16bit-colour-key"),
        pytest.param(_case_webp_rgba, id="webp-RGBA-lossless"),
        pytest.param(_case_jpeg_cmyk, id="jpeg-CMYK"),
        pytest.param(_case_jpeg_gray, id="jpeg-L"),
        pytest.param(_case_tiff_cmyk, id="tiff-CMYK"),
        pytest.param(_case_bmp_rgb, id="bmp-RGB"),
        pytest.param(_case_mpo, id="mpo-phone-jpeg-first-frame"),
        pytest.param(_case_png_1x1, id="png-1x1"),
        pytest.param(_case_jpeg_1x1, id="jpeg-1x1"),
    ],
)
def test_modes_convert_to_rgb(tmp_path: Path, make):
    path, expected, tolerance = make(tmp_path)
    loaded = load_image(path)
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == (loaded.width, loaded.height)
    pixels = np.asarray(loaded.image, dtype=np.int16)
    for (x, y), rgb in expected.items():
        got = pixels[y, x]
        assert np.abs(got - np.array(rgb)).max() <= tolerance, f"pixel ({x}, {y}): {got} != {rgb}"


def test_rgb_decode_is_not_copied_and_outlives_the_closed_file(tmp_path: Path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    with Image.open(_save(tmp_path / "rgb.png", rgb, "PNG")) as im:
        im.load()
        converted = images._to_rgb(im)
        assert converted.im is im.im and converted is not im  # shares the pixels, not the object
    assert np.array_equal(np.asarray(converted), np.asarray(rgb))  # usable after the file's image closed


def test_16bit_png_is_not_saturated(tmp_path: Path):
    ramp = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16).reshape(16, 16)
    path = _save(tmp_path / "ramp16.png", Image.fromarray(ramp), "PNG")
    with Image.open(path) as check:
        assert check.mode == "I;16"
    gray = np.asarray(load_image(path).image)[..., 0]
    assert np.array_equal(gray.ravel(), np.arange(256))  # v / 257, exactly; clipping would be ~all 255


def test_unsupported_mode_is_rejected(tmp_path: Path):
    path = _save(tmp_path / "lab.tif", Image.new("LAB", (4, 4)), "TIFF")
    with pytest.raises(ImageLoadError, match="unsupported image mode 'LAB'"):
        load_image(path)


# --------------------------------------------------------------------------------------------------
# Broken files


def _jpeg_bytes(progressive: bool) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_noise(96, 128)).save(buffer, "JPEG", quality=90, progressive=progressive)
    return buffer.getvalue()


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_noise(96, 128)).save(buffer, "PNG")
    return buffer.getvalue()


def _gif_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (4, 4)).save(buffer, "GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        pytest.param("half.jpg", lambda: _jpeg_bytes(False)[: len(_jpeg_bytes(False)) // 2],
                     "truncated", id="truncated-baseline-jpeg"),
        pytest.param("half_prog.jpg", lambda: _jpeg_bytes(True)[: len(_jpeg_bytes(True)) // 2],
                     "truncated", id="truncated-progressive-jpeg"),
        pytest.param("no_tail.jpg", lambda: _jpeg_bytes(False)[:-30],
                     "truncated", id="jpeg-missing-last-bytes"),
        pytest.param("half.png", lambda: _png_bytes()[: len(_png_bytes()) // 2],
                     "truncated", id="truncated-png"),
        pytest.param("empty.jpg", lambda: b"", "empty file", id="zero-byte-file"),
        pytest.param("text.jpg", lambda: b"this is not an image\n",
                     "not an image in a supported format", id="text-file-named-jpg"),
        pytest.param("anim.jpg", _gif_bytes,
                     "not an image in a supported format", id="gif-named-jpg-format-not-allowed"),
    ],
)
def test_broken_files_raise_one_line_image_load_error(tmp_path: Path, name, make, reason):
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(ImageLoadError, match=reason) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_missing_file_and_folder_raise_image_load_error(tmp_path: Path):
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(tmp_path / "gone.jpg")
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(tmp_path)
    with pytest.raises(ImageLoadError, match="file not found"):
        oriented_size(tmp_path / "gone.jpg")
    with pytest.raises(ImageLoadError, match="file not found"):
        file_sha256(tmp_path / "gone.jpg")


# --------------------------------------------------------------------------------------------------
# Pixel limits (checked on the header, before decoding)


def test_over_limit_small_max_pixels_raises_without_decoding(tmp_path: Path, no_decoding):
    path = _save(tmp_path / "a.png", Image.new("RGB", (40, 30)), "PNG")
    with pytest.raises(ImageLoadError, match=r"40x30 = 1200 pixels, over the limit of 1000"):
        load_image(path, max_pixels=1000)


def test_over_limit_header_claims_huge_size(tmp_path: Path, no_decoding):
    # 12000 x 12000 = 144 M pixels: above Pillow's warning level, below its hard error.
    path = tmp_path / "claims_big.png"
    path.write_bytes(_png_header_only(12_000, 12_000))
    filters = list(warnings.filters)
    with pytest.warns(Image.DecompressionBombWarning), \
            pytest.raises(ImageLoadError, match="over the limit of 100000000"):
        load_image(path, max_pixels=100_000_000)
    with pytest.warns(Image.DecompressionBombWarning):
        assert oriented_size(path) == (12_000, 12_000)
    assert warnings.filters == filters  # loading never touches the process-wide warning filters


def test_entry_points_hide_the_bomb_warning_once(tmp_path: Path, no_decoding):
    """The pixel limit is ours: entry points hide Pillow's warning for the whole process, once."""
    from autolabel.images import ignore_bomb_warnings

    path = tmp_path / "claims_big.png"
    path.write_bytes(_png_header_only(12_000, 12_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ignore_bomb_warnings()
        assert oriented_size(path) == (12_000, 12_000)


def test_pillow_bomb_error_becomes_image_load_error(tmp_path: Path, no_decoding):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(30_000, 30_000))  # 900 M pixels: Pillow's own hard limit
    with pytest.raises(ImageLoadError, match="decompression-bomb"):
        load_image(path, max_pixels=10**10)
    with pytest.raises(ImageLoadError, match="decompression-bomb"):
        oriented_size(path)


def test_pillow_globals_and_warning_filters_untouched(tmp_path: Path):
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters))
    path = _save(tmp_path / "a.jpg", Image.new("RGB", (8, 8)), "JPEG")
    load_image(path)
    oriented_size(path)
    truncated = tmp_path / "t.jpg"
    truncated.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ImageLoadError):
        load_image(truncated)
    after = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters))
    assert after == before
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"max_side": 0}, "max_side"),  # zero
    ({"max_side": -5}, "max_side"),  # negative
    ({"max_pixels": 0}, "max_pixels"),  # zero
    ({"max_side": 2.5}, "max_side"),  # not an int
])
def test_bad_arguments_raise_value_error(tmp_path: Path, kwargs, name):
    path = _save(tmp_path / "a.png", Image.new("RGB", (4, 4)), "PNG")
    with pytest.raises(ValueError, match=name):
        load_image(path, **kwargs)


# --------------------------------------------------------------------------------------------------
# max_side on other formats, orientation from PNG eXIf


def test_max_side_on_png_resizes_and_reports_original(tmp_path: Path):
    path = _save(tmp_path / "big.png", Image.fromarray(_noise(300, 500)), "PNG")
    loaded = load_image(path, max_side=100)
    assert (loaded.width, loaded.height) == (500, 300)
    assert loaded.image.size == (100, 60)
    assert loaded.scale == pytest.approx(0.2)


def test_max_side_never_upscales(tmp_path: Path):
    path = _save(tmp_path / "small.jpg", Image.fromarray(_noise(30, 40)), "JPEG")
    loaded = load_image(path, max_side=1000)
    assert loaded.image.size == (40, 30) and loaded.scale == 1.0


def test_png_exif_after_image_data_is_found_without_decoding(tmp_path: Path, monkeypatch):
    # Stored 40x30, a red marker at stored (0, 0); EXIF orientation 6 (rotate 90 degrees clockwise)
    # in an eXIf chunk placed after IDAT, where Pillow only looks after decoding everything.
    arr = np.zeros((30, 40, 3), dtype=np.uint8)
    arr[0, 0] = (255, 0, 0)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, "PNG")
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6
    chunks = _png_chunks(buffer.getvalue())
    end = [i for i, (kind, _) in enumerate(chunks) if kind == b"IEND"][0]
    chunks.insert(end, (b"eXIf", exif.tobytes()[6:]))  # chunk holds TIFF data, no "Exif\0\0"
    path = tmp_path / "rot.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(_png_chunk(k, d) for k, d in chunks))

    with monkeypatch.context() as patch:
        patch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded pixels"))
        assert oriented_size(path) == (30, 40)
    loaded = load_image(path)
    assert (loaded.width, loaded.height) == loaded.image.size == (30, 40)
    assert loaded.image.getpixel((29, 0)) == (255, 0, 0)  # stored top-left -> oriented top-right


# --------------------------------------------------------------------------------------------------
# Hashing and reading


def test_sha256_matches_hashlib(tmp_path: Path):
    path = _save(tmp_path / "a.png", Image.fromarray(_noise(64, 64)), "PNG")
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_image(path).sha256 == expected
    assert file_sha256(path) == expected


def test_file_sha256_streams_multi_chunk_files(tmp_path: Path):
    data = np.random.default_rng(1).integers(0, 256, size=2_500_000, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_large_files_decode_from_disk_with_same_result(tmp_path: Path, monkeypatch):
    path = _save(tmp_path / "a.jpg", Image.fromarray(_noise(48, 64)), "JPEG")
    in_memory = load_image(path)
    monkeypatch.setattr(images, "_MAX_IN_MEMORY_BYTES", 16)  # force the streaming path
    from_disk = load_image(path)
    assert from_disk.sha256 == in_memory.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert np.array_equal(np.asarray(from_disk.image), np.asarray(in_memory.image))


@pytest.mark.parametrize(
    ("fmt", "suffix"),
    [
        pytest.param("JPEG", ".jpg", id="jpeg-app1"),
        pytest.param("PNG", ".png", id="png-exif-before-idat"),
        pytest.param("TIFF", ".tif", id="tiff-orientation-tag"),
        pytest.param("WEBP", ".webp", id="webp-exif-chunk"),
    ],
)
@pytest.mark.parametrize("orientation", range(1, 9))  # every EXIF orientation
def test_orientation_is_read_from_every_format(tmp_path: Path, fmt: str, suffix: str, orientation: int):
    # Stored 48x32 with a red block at the stored top-left corner.
    arr = np.zeros((32, 48, 3), dtype=np.uint8)
    arr[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    extra = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    path = _save(tmp_path / f"o{suffix}", Image.fromarray(arr), fmt, exif=exif, **extra)

    loaded = load_image(path)
    expected_size = (32, 48) if orientation >= 5 else (48, 32)
    assert (loaded.width, loaded.height) == loaded.image.size == oriented_size(path) == expected_size
    w, h = expected_size
    # Where the stored top-left corner lands in the oriented frame (TIFF: Pillow orients on load
    # itself, which must not lead to a second rotation).
    right, bottom = (w - 2, h - 2)
    corner = {1: (1, 1), 2: (right, 1), 3: (right, bottom), 4: (1, bottom),
              5: (1, 1), 6: (right, 1), 7: (right, bottom), 8: (1, bottom)}[orientation]
    assert np.abs(np.array(loaded.image.getpixel(corner)) - (255, 0, 0)).max() < 40
    with Image.open(path) as raw:
        reference = ImageOps.exif_transpose(raw).convert("RGB")
    assert np.abs(np.asarray(loaded.image, np.int16) - np.asarray(reference, np.int16)).max() <= 1
