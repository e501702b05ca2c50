"""Deterministic train/val/test splits, by image, optionally stratified by class.

Images are dealt in the order of a hash of ``(seed, export name)``, so a split does not depend on
the machine, the Python or NumPy version, or where the dataset sits. Dealing is a *smooth weighted
round robin*: each split earns its fraction of a credit per image and the split with the most credit
takes the next, so each split holds ``floor`` or ``ceil`` of ``n * fraction`` images. Stratified,
images are grouped by their rarest class (negatives last) and the groups dealt one after the other,
credits carrying over: every class is split in proportion while the totals stay exact.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autolabel.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9_\-]+")


@dataclass(frozen=True)
class SplitSpec:
    """Named fractions in order, e.g. ``(("train", 0.8), ("val", 0.2))``; they sum to 1."""

    parts: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        names = [name for name, _ in self.parts]
        if not self.parts:
            raise ConfigError("--split needs at least one NAME=FRACTION")
        if len(set(names)) != len(names):
            raise ConfigError(f"--split names a split twice: {','.join(names)}")
        for name, fraction in self.parts:
            if not _NAME.fullmatch(name):
                raise ConfigError(f"split name {name!r} may only hold letters, digits, '_' and '-'")
            if not 0.0 < fraction <= 1.0:
                raise ConfigError(f"fraction of split {name!r} must be in (0, 1], got {fraction}")
        total = sum(f for _, f in self.parts)
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"--split fractions must add up to 1, got {total:g}")

    @classmethod
    def parse(cls, text: "str | SplitSpec | None") -> "SplitSpec | None":
        """``"train=0.8,val=0.2[,test=...]"`` -> SplitSpec; None or "" -> None (no split)."""
        if text is None or isinstance(text, SplitSpec):
            return text
        text = text.strip()
        if not text:
            return None
        parts = []
        for item in text.split(","):
            name, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--split must look like train=0.8,val=0.2; {item.strip()!r} has no '='")
            try:
                fraction = float(value)
            except ValueError:
                raise ConfigError(f"--split: {value.strip()!r} is not a number (in {item.strip()!r})") from None
            parts.append((name.strip(), fraction))
        return cls(tuple(parts))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.parts]


def assign_splits(
    keys: Sequence[str],
    spec: SplitSpec,
    seed: int = 0,
    classes: Mapping[str, set[str] | frozenset[str]] | None = None,
) -> dict[str, str]:
    """``{key: split name}`` for unique keys (export names; their order does not matter). ``classes``:
    for a stratified split, the class names in each image (missing or empty: a negative)."""
    if len(set(keys)) != len(keys):
        raise ValueError("split keys must be unique")
    ordered = sorted(keys, key=lambda k: (hashlib.sha256(f"{seed}\0{k}".encode()).digest(), k))
    if classes is not None:
        images_per_class = Counter(c for k in keys for c in classes.get(k, ()))

        def group(key: str) -> tuple[int, int, str]:
            present = classes.get(key, ())
            if not present:
                return (1, 0, "")  # negatives last, as one group
            rarest = min(present, key=lambda c: (images_per_class[c], c))
            return (0, images_per_class[rarest], rarest)

        ordered.sort(key=group)  # stable: the hash order is kept within each group
    fractions = [fraction for _, fraction in spec.parts]
    credit = [0.0] * len(fractions)
    out: dict[str, str] = {}
    for key in ordered:
        for i, fraction in enumerate(fractions):
            credit[i] += fraction
        best = max(range(len(credit)), key=lambda i: (credit[i], -i))  # ties: the first split named
        credit[best] -= 1.0
        out[key] = spec.parts[best][0]
    return out
