"""Kept detector candidates: what a run stores per image so it can be re-prompted without the backbone.

OWLv2's image side does not depend on the prompts. While labelling, a run can keep per image the
top-K patches by objectness with what the class head needs to score them against any prompt: the
normalised class embeddings, the per-box logit shift and scale, and the boxes. ``autolabel relabel``
re-scores them with new prompts (``relabel.py``).

On disk (format 2): one ``.npy`` per image, ``RUN/candidates/<sha[:2]>/<sha256>.npy``, named by
content so it can be written before the store gives the image an id (identical images share one).
It holds one record (``_layout``) whose fields are whole blocks, the ``(K, D)`` fp16 class embeddings
first: ``CandidateBuffer`` reads a file with one header comparison and the blocks straight into the
rows of a batch (no parsing, no copy), which matters at a thousand images a second; ``np.load``
still opens it. The layout is the version: the reader accepts only the exact header it would write,
and refuses format 1 (one record per candidate) with a line naming the fix.
Each file is written to a temporary name and renamed, before the store commits its image, so an
image the store calls done has its file unless the disk lost it; a missing or unreadable file is
reported by the reader (``CandidatesMissing``), never a crash.
"""

from __future__ import annotations

import ast
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from autolabel.errors import AutolabelError

FOLDER = "candidates"
DEFAULT_KEEP = 300  # per image: ~310 KB at D=512 in fp16
_FIELDS = ("patch_index", "pred_boxes", "class_embeds", "logit_shift", "logit_scale")  # ``Candidates`` order
_FORMAT_1_FIELDS = set(_FIELDS)  # format 1: a (K,) array of records with these fields
_MAX_HEADER = 4096
_DIGEST = re.compile(r"[0-9a-f]{8,}")


def _layout(keep: int, dim: int) -> np.dtype:
    """Format 2: one record of blocks. Class embeddings in fp16 (the ~1e-3 relative rounding this
    costs is measured in the tests), the rest in float32 and int32."""
    return np.dtype([("class_embeds", "<f2", (keep, dim)), ("pred_boxes", "<f4", (keep, 4)),
                     ("logit_shift", "<f4", (keep,)), ("logit_scale", "<f4", (keep,)), ("patch_index", "<i4", (keep,))])


@lru_cache(maxsize=8)
def _header(keep: int, dim: int) -> bytes:
    """The exact ``.npy`` header of a format 2 file of ``keep`` candidates of width ``dim``."""
    import io

    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(_layout(keep, dim)),
                                               "fortran_order": False, "shape": ()})
    return out.getvalue()


class CandidatesMissing(AutolabelError):
    """An image's candidates file is missing or unreadable."""


class CandidatesFormatError(AutolabelError):
    """A candidates file written in a format this version no longer reads."""


@dataclass
class Candidates:
    """Prompt-independent candidates, in patch order: K of one image (arrays ``(K, ...)``) or of
    each of B images (``(B, K, ...)``, e.g. ``CandidateBuffer.candidates`` or ``stack``).

    ``patch_index`` int: which patches they are; ``pred_boxes`` ``(..., 4)`` normalised ``cx, cy, w, h``
    like ``ImageFeatures.pred_boxes``; ``class_embeds`` ``(..., D)`` the class head's normalised image
    embeddings; ``logit_shift`` and ``logit_scale`` as the class head computes them (the scale after
    ``elu + 1``). Arrays are numpy on the host, or torch tensors on the model's device straight from
    a detector (``to_host`` converts)."""

    patch_index: Any
    pred_boxes: Any
    class_embeds: Any
    logit_shift: Any
    logit_scale: Any

    def __len__(self) -> int:
        """Candidates per image (K)."""
        return int(self.patch_index.shape[-1])

    def to_host(self) -> "Candidates":
        """Numpy arrays (float32, int64 indices) on the host."""
        return Candidates(*(_numpy(getattr(self, name)) for name in _FIELDS))

    @classmethod
    def stack(cls, items: list["Candidates"]) -> "Candidates":
        """Several images' candidates (K each) as one batch ``(B, K, ...)`` on the host."""
        return cls(*(np.stack([np.asarray(getattr(c, name)) for c in items]) for name in _FIELDS))


def _numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor, possibly on a device
        array = array.detach().float().cpu().numpy() if array.is_floating_point() else array.detach().cpu().numpy()
    return np.asarray(array)


def candidates_path(run_dir: str | Path, sha256: str) -> Path:
    """Where an image's candidates live in a run folder."""
    if not _DIGEST.fullmatch(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return Path(run_dir, FOLDER, sha256[:2], f"{sha256}.npy")  # one Path, not three joins: called per image


def save_candidates(run_dir: str | Path, sha256: str, candidates: Candidates) -> Path:
    """Write one image's candidates atomically (temporary file + rename)."""
    c = candidates.to_host()
    keep, dim = c.class_embeds.shape
    record = np.zeros((), _layout(keep, dim))
    for name in _FIELDS:
        record[name] = getattr(c, name)
    path = candidates_path(run_dir, sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{sha256[:16]}", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_header(keep, dim))
            f.write(record.tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def candidates_layout(path: str | Path) -> tuple[int, int]:
    """``(K, D)`` of a candidates file, from its header: ``CandidatesMissing`` when it is missing or
    not a candidates file, ``CandidatesFormatError`` when it was written in format 1."""
    try:
        with open(path, "rb") as f:
            head = f.read(_MAX_HEADER)
    except FileNotFoundError:
        raise CandidatesMissing(f"{path} is missing") from None
    except OSError as exc:
        raise CandidatesMissing(f"{path} is unreadable: {exc}") from None
    return _parse_header(path, head)


def _parse_header(path, head: bytes) -> tuple[int, int]:
    not_ours = CandidatesMissing(f"{path} is unreadable: not a candidates file")
    if not head.startswith(b"\x93NUMPY") or len(head) < 10:
        raise not_ours
    end = 10 + int.from_bytes(head[8:10], "little")
    try:
        info = ast.literal_eval(head[10:end].decode("latin1"))
        dtype = np.lib.format.descr_to_dtype(info["descr"])
        shape = tuple(info["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError):
        raise not_ours from None
    if len(shape) == 1 and set(dtype.names or ()) == _FORMAT_1_FIELDS:
        raise CandidatesFormatError(f"{path} was written by an earlier autolabel (candidates format 1): label the "
                                    "run again with `autolabel label --keep-candidates K` to relabel it")
    if shape != () or dtype.names is None or "class_embeds" not in dtype.names:
        raise not_ours
    keep, dim = dtype["class_embeds"].shape if dtype["class_embeds"].ndim == 2 else (0, 0)
    if dtype != _layout(keep, dim) or head[:end] != _header(keep, dim):
        raise not_ours
    return keep, dim


class CandidateBuffer:
    """Room for ``images`` images' candidates of one layout (``keep`` records of width ``dim``),
    reused batch after batch. ``read`` fills one slot from a file (several threads may fill different
    slots at once: the reads release the GIL); ``candidates`` gives the first slots as one batch."""

    def __init__(self, images: int, keep: int, dim: int):
        self.keep, self.dim = int(keep), int(dim)
        self._header = _header(self.keep, self.dim)
        layout = _layout(self.keep, self.dim)
        self._embeds = np.empty((images, self.keep, self.dim), np.float16)
        self._rest = np.empty(images, np.dtype([(name, layout[name]) for name in layout.names[1:]]))
        self._size = len(self._header) + layout.itemsize

    def read(self, slot: int, path: str | Path) -> None:
        """Read one image's file into ``slot``; ``CandidatesMissing`` (or ``CandidatesFormatError``)
        when it cannot."""
        head = bytearray(len(self._header))
        try:
            with open(path, "rb", buffering=0) as f:
                got = sum(f.readinto(part) or 0 for part in (head, self._embeds[slot], self._rest[slot:slot + 1]))
                got += len(f.read(1))  # a longer file is not ours either
        except FileNotFoundError:
            raise CandidatesMissing(f"{path} is missing") from None
        except OSError as exc:
            raise CandidatesMissing(f"{path} is unreadable: {exc}") from None
        if head != self._header:
            layout = candidates_layout(path)  # says what the file is instead (or raises)
            raise CandidatesMissing(f"{path} is unreadable: it holds {layout[0]} candidates of width {layout[1]}, "
                                    f"the run's others {self.keep} of width {self.dim}")
        if got != self._size:
            raise CandidatesMissing(f"{path} is unreadable: {got} bytes instead of {self._size} (truncated?)")

    def blank(self, slot: int) -> None:
        """Make ``slot`` yield no detection (its file could not be read): every logit -inf."""
        self._embeds[slot] = 0
        self._rest[slot:slot + 1].view(np.uint8)[:] = 0
        self._rest["logit_shift"][slot] = -np.inf
        self._rest["logit_scale"][slot] = 1

    def candidates(self, count: int) -> Candidates:
        """Slots ``[0, count)`` as one batch (views of this buffer: use them before the next reads)."""
        rest = self._rest[:count]
        return Candidates(rest["patch_index"], rest["pred_boxes"], self._embeds[:count], rest["logit_shift"],
                          rest["logit_scale"])


def load_candidates(run_dir: str | Path, sha256: str) -> Candidates:
    """One image's candidates as saved (class embeddings stay fp16); ``CandidatesMissing`` when the
    file is missing or unreadable, ``CandidatesFormatError`` when it is of an older format."""
    path = candidates_path(run_dir, sha256)
    buffer = CandidateBuffer(1, *candidates_layout(path))
    buffer.read(0, path)
    batch = buffer.candidates(1)
    return Candidates(*(getattr(batch, name)[0] for name in _FIELDS))


def link_candidates(source_run: str | Path, target_run: str | Path, sha256: str) -> None:
    """Give ``target_run`` the file of ``source_run`` (a hard link where the filesystem allows, else
    a copy), so a relabelled run can be relabelled again. A link appears whole or not at all; a
    copy is written to a temporary name and renamed."""
    import shutil

    source, target = candidates_path(source_run, sha256), candidates_path(target_run, sha256)
    for attempt in range(2):  # one system call when the folder exists: this runs for every image
        try:
            os.link(source, target)
            return
        except FileExistsError:
            return  # named by content: already the same file
        except FileNotFoundError:
            if attempt or not source.exists():
                raise
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError:  # no hard links here (another filesystem, or none at all)
            break
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # threads may copy at once
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
