"""Which images a person should look at first: each image gets an uncertainty score from its labels
(``score_image``, a pure function), and the queue (``build_queue``) ranks a run's images by it.

The score is the sum of four terms, each in [0, 1]:

- ``near_threshold``: the label whose score is closest to its class's threshold (the run's own,
  ``run_thresholds``): 1 on the threshold, falling linearly to 0 at ``NEAR_MARGIN`` away.
- ``prompt_disagreement``: two overlapping boxes of one class (IoU >= ``PROMPT_PAIR_IOU``) found by
  different prompts of that class with different scores: the score gap, 1 from ``DISAGREEMENT_GAP`` on.
  The store keeps only the prompt that won each box, so this is what disagreement can be measured
  from; per-class NMS (IoU 0.5 by default) already merged the pairs that overlap more.
- ``class_overlap``: the highest IoU between boxes of different classes (one object, two names?).
- ``box_count``: how far the image's number of boxes is from the run's median, in doublings of
  (count + 1): 0 at the median, 1 from ``COUNT_DOUBLINGS`` doublings (or halvings) on.

Rejected labels do not count. Reviewed images go last; ties keep path order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from autolabel.detections import Detections
from autolabel.geometry import box_iou
from autolabel.ontology import Ontology
from autolabel.store import Store

NEAR_MARGIN = 0.1
PROMPT_PAIR_IOU = 0.3
DISAGREEMENT_GAP = 0.2
COUNT_DOUBLINGS = 2.0
TERMS = ("near_threshold", "prompt_disagreement", "class_overlap", "box_count")


def run_thresholds(store: Store) -> dict[str, float]:
    """Each class's score threshold as the run labelled with it (its class threshold, else the run's
    ``detect.threshold``); empty for an imported run, whose labels have no scores."""
    config = store.config or {}
    if config.get("mode") == "import":
        return {}
    default = float((config.get("detect") or {}).get("threshold", 0.0))
    return dict(zip(store.ontology.names, map(float, store.ontology.thresholds(default))))


@dataclass(frozen=True)
class Uncertainty:
    """One image's terms (see the module docstring), each with a reason in words when it is not 0."""

    terms: dict[str, float]
    reasons: dict[str, str]
    boxes: int

    @property
    def score(self) -> float:
        return float(sum(self.terms.values()))

    @property
    def reason(self) -> str:
        """The reason of the largest term (the first of ``TERMS`` on a tie)."""
        top = max(TERMS, key=lambda term: self.terms.get(term, 0.0))
        return self.reasons[top] if self.terms.get(top, 0.0) > 0 else "nothing stands out"

    def with_box_count(self, median_boxes: float) -> "Uncertainty":
        doublings = abs(np.log2((self.boxes + 1) / (median_boxes + 1)))
        value = float(min(1.0, doublings / COUNT_DOUBLINGS))
        reason = f"{self.boxes} boxes (run median {median_boxes:g})"
        return replace(self, terms={**self.terms, "box_count": value}, reasons={**self.reasons, "box_count": reason})


def score_image(labels: Detections, ontology: Ontology, thresholds: dict[str, float],
                median_boxes: float | None = None) -> Uncertainty:
    """The uncertainty of one image's ``labels`` (class ids index ``ontology``, prompt ids its
    queries; ``thresholds`` per class name). Without ``median_boxes`` the ``box_count`` term is 0."""
    labels = labels[labels.reviews != "rejected"]
    terms, reasons = {}, {}
    for term, (value, reason) in (("near_threshold", _near_threshold(labels, ontology, thresholds)),
                                  ("prompt_disagreement", _prompt_disagreement(labels, ontology)),
                                  ("class_overlap", _class_overlap(labels, ontology))):
        terms[term], reasons[term] = value, reason
    terms["box_count"], reasons["box_count"] = 0.0, ""
    found = Uncertainty(terms, reasons, len(labels))
    return found if median_boxes is None else found.with_box_count(median_boxes)


def _near_threshold(labels: Detections, ontology: Ontology, thresholds: dict[str, float]) -> tuple[float, str]:
    per_class = np.array([thresholds.get(name, np.nan) for name in ontology.names], dtype=np.float64)
    threshold = per_class[labels.class_ids] if len(labels) else np.zeros(0)
    closeness = np.clip(1 - np.abs(labels.scores - threshold) / NEAR_MARGIN, 0.0, 1.0)
    closeness = np.where(np.isnan(closeness), 0.0, closeness)  # no score or no threshold
    if not closeness.any():
        return 0.0, ""
    i = int(np.argmax(closeness))
    name = ontology.names[labels.class_ids[i]]
    return float(closeness[i]), f"{name} scored {labels.scores[i]:.2f}, threshold {threshold[i]:.2f}"


def _prompt_disagreement(labels: Detections, ontology: Ontology) -> tuple[float, str]:
    found = labels[labels.has_score & (labels.prompt_ids >= 0)]
    if len(found) < 2:
        return 0.0, ""
    pairs = ((found.class_ids[:, None] == found.class_ids[None, :])
             & (found.prompt_ids[:, None] != found.prompt_ids[None, :])
             & (box_iou(found.xyxy, found.xyxy) >= PROMPT_PAIR_IOU))
    gaps = np.where(pairs, np.abs(found.scores[:, None] - found.scores[None, :]), 0.0)
    a, b = np.unravel_index(int(np.argmax(gaps)), gaps.shape)
    if gaps[a, b] <= 0:
        return 0.0, ""
    a, b = (a, b) if found.scores[a] >= found.scores[b] else (b, a)
    queries = ontology.queries
    return (float(min(1.0, gaps[a, b] / DISAGREEMENT_GAP)),
            f"prompts of {ontology.names[found.class_ids[a]]} disagree: "
            f"'{queries[found.prompt_ids[a]]}' {found.scores[a]:.2f} vs '{queries[found.prompt_ids[b]]}' "
            f"{found.scores[b]:.2f}")


def _class_overlap(labels: Detections, ontology: Ontology) -> tuple[float, str]:
    if len(labels) < 2:
        return 0.0, ""
    ious = np.where(labels.class_ids[:, None] != labels.class_ids[None, :], box_iou(labels.xyxy, labels.xyxy), 0.0)
    a, b = np.unravel_index(int(np.argmax(ious)), ious.shape)
    if ious[a, b] <= 0:
        return 0.0, ""
    first, second = sorted((ontology.names[labels.class_ids[a]], ontology.names[labels.class_ids[b]]))
    return float(ious[a, b]), f"{first} and {second} boxes overlap (IoU {ious[a, b]:.2f})"


@dataclass(frozen=True)
class QueueEntry:
    path: str
    uncertainty: Uncertainty
    reviewed: bool = False
    image_id: int | None = None


def rank(entries: list[QueueEntry]) -> list[QueueEntry]:
    """``entries`` (scored without ``median_boxes``) with their ``box_count`` term against the median
    of their box counts, most uncertain first, reviewed ones last, ties by path."""
    median = float(np.median([e.uncertainty.boxes for e in entries])) if entries else 0.0
    ranked = [replace(e, uncertainty=e.uncertainty.with_box_count(median)) for e in entries]
    return sorted(ranked, key=lambda e: (e.reviewed, -e.uncertainty.score, e.path))


def build_queue(store: Store) -> list[QueueEntry]:
    """The run's labelled images in review order (see the module docstring)."""
    ontology, thresholds = store.ontology, run_thresholds(store)
    return rank([QueueEntry(record.path, score_image(store.labels(record.id), ontology, thresholds),
                            record.reviewed, record.id) for record in store.images("done")])
