"""Label Studio brush RLE: vectors from label-studio-converter's encoder, a hand-made stream with
another header, and malformed streams."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autolabel.importers.ls_brush import decode_brush

VECTORS = json.loads((Path(__file__).parents[1] / "data" / "labelstudio" / "brush_vectors.json").read_text())


def pack(fields: list[tuple[int, int]]) -> list[int]:
    """``(value, bits)`` fields, most significant bit first, zero-padded to whole bytes."""
    bits = "".join(format(value, f"0{size}b") for value, size in fields)
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


def header(num: int, word: int, widths: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    return [(num, 32), (word - 1, 5)] + [(w - 1, 4) for w in widths]


def encode_mask(mask: np.ndarray) -> list[int]:
    """What Label Studio stores for a mask (RGBA all 255 inside): repeated runs only, widths
    [3, 4, 8, 16], runs longer than 65536 values split."""
    values = np.repeat(mask.ravel().astype(np.uint8) * 255, 4)
    edges = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [values.size]))
    fields = header(values.size, 8, (3, 4, 8, 16))
    for start, end in zip(starts.tolist(), ends.tolist()):
        for lo in range(start, end, 1 << 16):
            count = min(end, lo + (1 << 16)) - lo
            k = next(k for k, w in enumerate((3, 4, 8, 16)) if count <= 1 << w)
            fields += [(1, 1), (k, 2), (count - 1, (3, 4, 8, 16)[k]), (int(values[start]), 8)]
    return pack(fields)


def test_small_vector():
    small = VECTORS["small"]
    want = np.array([[c == "1" for c in row] for row in small["rows"]])
    assert want.shape == (5, 7)
    np.testing.assert_array_equal(decode_brush(small["rle"], 7, 5), want)


def test_big_vector_with_a_split_run():
    big = VECTORS["big"]
    want = np.zeros((big["height"], big["width"]), dtype=bool)
    for x0, y0, x1, y1 in big["rects_xyxy"]:
        want[y0:y1, x0:x1] = True
    np.testing.assert_array_equal(decode_brush(big["rle"], big["width"], big["height"]), want)


def test_header_is_followed():
    """Word size 8, widths [1, 2, 5, 12]; runs of every width, literal and repeated, across pixels."""
    widths = (1, 2, 5, 12)
    alphas = [0, 7, 0, 255, 1, 0]  # a 3x2 image: pixels 1, 3 and 4 are inside
    values = [v for a in alphas for v in (9, 9, 9, a)]
    fields = header(len(values), 8, widths)
    fields += [(0, 1), (1, 2), (2, 2)] + [(v, 8) for v in values[0:3]]  # literal, 3 values (width 2)
    fields += [(0, 1), (2, 2), (8, 5)] + [(v, 8) for v in values[3:12]]  # literal, 9 values (width 5)
    fields += [(1, 1), (0, 2), (1, 1), (9, 8)]  # repeated 9, twice (width 1)
    fields += [(0, 1), (3, 2), (0, 12), (9, 8)]  # literal, 1 value (width 12)
    fields += [(1, 1), (0, 2), (0, 1), (255, 8)]  # repeated 255, once: pixel 3's alpha
    fields += [(0, 1), (2, 2), (7, 5)] + [(v, 8) for v in values[16:24]]  # literal, the last 8 values
    mask = decode_brush(pack(fields), 3, 2)
    np.testing.assert_array_equal(mask, np.array(alphas).reshape(2, 3) > 0)


def test_wide_words_and_encoded_masks():
    """Word size 32 (values above 255 are read whole) and a mask encoded like Label Studio's."""
    fields = header(8, 32, (2, 2, 2, 2)) + [(1, 1), (0, 2), (3, 2), (0, 32), (1, 1), (0, 2), (3, 2), (1 << 31, 32)]
    np.testing.assert_array_equal(decode_brush(pack(fields), 2, 1), [[False, True]])
    rng = np.random.default_rng(0)
    mask = rng.random((30, 50)) < 0.3
    np.testing.assert_array_equal(decode_brush(encode_mask(mask), 50, 30), mask)


@pytest.mark.parametrize(
    "stream, message",
    [
        ([], "non-empty list of byte values"),
        ([0, 1, 256], "list of byte values (0-255)"),
        ([0.5, 1], "list of byte values (0-255)"),
        ([0, 0, 0], "truncated (3 bytes, the header alone needs 7)"),
        (pack(header(8, 8, (3, 4, 8, 16))), "it holds 8 values, not 4 x 2 x 2 = 16"),
        (pack(header(16, 8, (3, 4, 8, 16)) + [(1, 1), (0, 2), (7, 3), (255, 8)]), "truncated after 8 of 16 values"),
        (pack(header(16, 8, (3, 4, 8, 16)) + [(0, 1), (1, 2), (3, 4), (1, 8)]), "truncated after 0 of 16 values"),
        (pack(header(16, 8, (3, 4, 8, 16)) + [(1, 1), (2, 2), (16, 8), (1, 8)]),
         "a run of 17 values at value 0 goes past the 16 values"),
    ],
)
def test_malformed_streams(stream, message):
    with pytest.raises(ValueError) as caught:
        decode_brush(stream, 2, 2)
    assert message in str(caught.value)
