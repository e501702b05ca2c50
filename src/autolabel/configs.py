"""Comparing recorded configurations (a run's, a training run's) with the one asked for now."""

from __future__ import annotations

import json


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Readable differences between two nested JSON-like dicts: ``["detect.threshold: 0.1 -> 0.2", ...]``."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return diffs
