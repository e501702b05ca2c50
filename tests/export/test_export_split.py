"""Splits: deterministic by image and seed, exact sizes, stratified by class, clear errors."""

from __future__ import annotations

from collections import Counter

import pytest

from autolabel.errors import ConfigError
from autolabel.export.split import SplitSpec, assign_splits

KEYS = [f"img_{i:03d}.jpg" for i in range(100)]


def test_sizes_are_exact_and_every_image_is_assigned_once():
    spec = SplitSpec.parse("train=0.7,val=0.2,test=0.1")
    out = assign_splits(KEYS, spec, seed=0)
    assert set(out) == set(KEYS)
    assert Counter(out.values()) == {"train": 70, "val": 20, "test": 10}


def test_same_seed_same_split_any_input_order_and_other_seed_differs():
    spec = SplitSpec.parse("train=0.8,val=0.2")
    a = assign_splits(KEYS, spec, seed=3)
    assert assign_splits(list(reversed(KEYS)), spec, seed=3) == a
    b = assign_splits(KEYS, spec, seed=4)
    assert a != b and Counter(b.values()) == Counter(a.values())


@pytest.mark.parametrize("n", [1, 2, 3, 7, 11])
def test_small_sets_round_to_the_nearest_count(n):
    out = assign_splits(KEYS[:n], SplitSpec.parse("train=0.8,val=0.2"), seed=0)
    counts = Counter(out.values())
    assert abs(counts["train"] - 0.8 * n) < 1 and abs(counts.get("val", 0) - 0.2 * n) < 1


def test_stratified_split_gives_every_class_its_share():
    # A rare class (10 images) among a common one (80) and negatives (10).
    classes = {k: {"common"} for k in KEYS[:80]}
    classes.update({k: {"rare", "common"} for k in KEYS[80:90]})
    spec = SplitSpec.parse("train=0.8,val=0.2")
    out = assign_splits(KEYS, spec, seed=0, classes=classes)
    rare = Counter(out[k] for k in KEYS[80:90])
    negatives = Counter(out[k] for k in KEYS[90:])
    assert rare == {"train": 8, "val": 2}
    assert negatives == {"train": 8, "val": 2}
    assert Counter(out.values()) == {"train": 80, "val": 20}


@pytest.mark.parametrize(
    "text, message",
    [
        ("train=0.8,val=0.3", "add up to 1"),  # fractions over 1
        ("train=0.8", "add up to 1"),  # a single part that is not everything
        ("train", "no '='"),  # missing fraction
        ("train=abc,val=0.5", "not a number"),  # not a number
        ("train=0.5,train=0.5", "twice"),  # duplicate name
        ("tr ain=0.5,val=0.5", "letters, digits"),  # a name that is no folder name
        ("train=1.0,val=0", "must be in"),  # an empty split
    ],
)
def test_bad_specs_are_one_line_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        SplitSpec.parse(text)


def test_no_split():
    assert SplitSpec.parse(None) is None and SplitSpec.parse("  ") is None
