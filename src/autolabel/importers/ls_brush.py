"""Label Studio brush masks: the ``rle`` of a ``brushlabels`` result -> an ``(H, W)`` mask.

The stream is thi-ng/umbrella's ``rle-pack``, bits read most significant first: 32 bits ``num`` (how
many values), 5 bits ``word_size - 1``, four times 4 bits ``rle_size - 1`` (the run-length field
widths); then runs until ``num`` values are out: 1 bit ``repeat``, 2 bits choosing a width, that many
bits ``n`` (the run covers ``n + 1`` values), then one word repeated over the run or ``n + 1`` literal
words. Bits after the last run are padding. The values are the RGBA bytes of the ``height x width``
image, row-major; the mask is where alpha is not 0.

A 12 MP mask is 48M values but only thousands of runs, so the loop walks runs and numpy fills pixels.
"""

from __future__ import annotations

import numpy as np

CHANNELS = 4  # RGBA
ALPHA = 3
_LITERAL_CHUNK = 1 << 20  # alpha words gathered per numpy step (bounds the index arrays' memory)


def _stream_bytes(stream) -> bytes:
    if not isinstance(stream, list) or not stream:
        raise ValueError("'rle' must be a non-empty list of byte values")
    try:
        return bytes(stream)  # checks every item is an int in 0-255, much faster than numpy on a list
    except (TypeError, ValueError):
        raise ValueError("'rle' must be a list of byte values (0-255)") from None


def _pixel_ranges(starts: list[int], ends: list[int], pixels: int) -> np.ndarray:
    """Pixels whose alpha value lies in one of the value ranges ``[start, end)`` (sorted, disjoint)."""
    # Alpha of pixel p is value 4p + 3, inside [s, e) exactly when s // 4 <= p < e // 4.
    edges = np.zeros(pixels + 1, dtype=np.int8)
    np.add.at(edges, np.asarray(starts, dtype=np.int64) // CHANNELS, 1)
    np.add.at(edges, np.asarray(ends, dtype=np.int64) // CHANNELS, -1)
    return np.cumsum(edges[:-1], dtype=np.int8) > 0


def _literal_alphas(padded: np.ndarray, runs: list[tuple[int, int, int]], word: int) -> tuple[np.ndarray, np.ndarray]:
    """Literal runs ``(first value, bit position, count)`` -> (pixels, whether their alpha is not 0).
    ``padded``: the stream's bytes followed by at least 5 zero bytes."""
    first, position, count = (np.asarray(column, dtype=np.int64) for column in zip(*runs))
    alpha0 = first + (ALPHA - first) % CHANNELS  # the first alpha value of each run
    per_run = np.maximum(0, (first + count - alpha0 + CHANNELS - 1) // CHANNELS)
    total = int(per_run.sum())
    step = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(per_run) - per_run, per_run)
    values = np.repeat(alpha0, per_run) + CHANNELS * step
    offsets = np.repeat(position - first * word, per_run) + values * word  # each alpha word's first bit
    nonzero = np.empty(total, dtype=bool)
    for lo in range(0, total, _LITERAL_CHUNK):
        bit = offsets[lo:lo + _LITERAL_CHUNK]
        start = bit >> 3
        window = np.zeros(bit.size, dtype=np.uint64)  # the 5 bytes (40 bits) holding each word
        for k in range(5):
            window = (window << np.uint64(8)) | padded[start + k]
        shift = (40 - (bit & 7) - word).astype(np.uint64)
        nonzero[lo:lo + _LITERAL_CHUNK] = (window >> shift) & np.uint64((1 << word) - 1) != 0
    return values // CHANNELS, nonzero


def decode_brush(stream: list[int], width: int, height: int) -> np.ndarray:
    """A brush ``rle`` (list of byte values) of a ``width x height`` image -> ``(height, width)`` bool
    mask. Raises ``ValueError`` saying what is wrong with a malformed stream."""
    data = _stream_bytes(stream)
    nbits = 8 * len(data)
    padded = data + bytes(8)

    def read(pos: int, size: int) -> int:  # size <= 32 bits starting anywhere: 5 bytes cover it
        start = pos >> 3
        chunk = int.from_bytes(padded[start:start + 5], "big")
        return (chunk >> (40 - (pos & 7) - size)) & ((1 << size) - 1)

    header = 32 + 5 + 4 * 4
    if nbits < header:
        raise ValueError(f"the stream is truncated ({len(data)} bytes, the header alone needs 7)")
    num, word = read(0, 32), read(32, 5) + 1  # 5 bits: a word never exceeds 32 bits
    widths = [read(37 + 4 * k, 4) + 1 for k in range(4)]
    pixels = width * height
    if num != CHANNELS * pixels:
        raise ValueError(f"it holds {num} values, not 4 x {width} x {height} = {CHANNELS * pixels}")

    filled_starts, filled_ends = [], []  # repeated runs of a non-zero value
    literals = []
    pos, done = header, 0
    while done < num:
        head = read(pos, 3)  # reads past the end see the zero padding; the check below catches them
        repeat, size = head >> 2, widths[head & 3]
        count = read(pos + 3, size) + 1
        end = pos + 3 + size + (word if repeat else word * count)
        if end > nbits:
            raise ValueError(f"the stream is truncated after {done} of {num} values")
        if done + count > num:
            raise ValueError(f"a run of {count} values at value {done} goes past the {num} values")
        if not repeat:
            literals.append((done, pos + 3 + size, count))
        elif read(pos + 3 + size, word):
            filled_starts.append(done)
            filled_ends.append(done + count)
        pos = end
        done += count

    mask = _pixel_ranges(filled_starts, filled_ends, pixels)
    if literals:
        where, nonzero = _literal_alphas(np.frombuffer(padded, dtype=np.uint8), literals, word)
        mask[where] = nonzero
    return mask.reshape(height, width)
