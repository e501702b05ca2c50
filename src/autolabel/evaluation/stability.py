"""How many reviewed images the calibrated thresholds needed to settle.

The ground-truth images are taken in an order of ``ORDERS``: ``review`` (the model's predictions
ranked by ``review_queue``, most uncertain first) or ``path``. With ``t_k`` a class's calibrated
threshold on the first ``k`` images (max F1, or the target precision's where it is reachable, as
``thresholds.yaml`` takes it), the class is stable after ``k`` images when no later ``t_j`` is
missing or differs from ``t_k`` by more than ``STABLE_DELTA``, and at least one later image
confirmed it; otherwise it is not stable (None).
"""

from __future__ import annotations

from autolabel.evaluation.calibration import Matches, best_f1, for_precision, pr_curve
from autolabel.evaluation.sources import LabelImage
from autolabel.ontology import Ontology
from autolabel.review_queue import QueueEntry, rank, score_image

STABLE_DELTA = 0.05
ORDERS = ("review", "path")


def review_order(predictions: list[LabelImage], ontology: Ontology, thresholds: dict[str, float]) -> list[int]:
    """Indices of ``predictions`` (class ids indexing ``ontology``) in review-queue order."""
    entries = rank([QueueEntry(im.path, score_image(im.labels, ontology, thresholds), image_id=i)
                    for i, im in enumerate(predictions)])
    return [e.image_id for e in entries]


def prefix_thresholds(parts: list[Matches], floor: float = 0.0,
                      target_precision: float | None = None) -> list[float | None]:
    """The calibrated threshold on the first k images' matches ``parts[:k]``, for k = 1..N."""
    out, merged = [], Matches.merge([])
    for part in parts:
        merged = Matches.merge([merged, part])  # the same order as merging parts[:k] at once
        curve = pr_curve(merged, floor)
        point = (for_precision(curve, target_precision) if target_precision is not None else None) or best_f1(curve)
        out.append(None if point is None else point.threshold)
    return out


def stable_after(thresholds: list[float | None], delta: float = STABLE_DELTA) -> int | None:
    """The fewest images after which the threshold stays within ``delta`` (see the module docstring)."""
    stable, low, high = None, float("inf"), float("-inf")  # low/high: the later thresholds' range
    for k in range(len(thresholds) - 1, 0, -1):  # t_k is thresholds[k - 1]; k = N never counts
        later = thresholds[k]
        if later is None:
            break
        low, high = min(low, later), max(high, later)
        current = thresholds[k - 1]
        if current is not None and high - current <= delta and current - low <= delta:
            stable = k
    return stable
