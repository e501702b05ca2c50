"""Matching predictions to ground truth, precision/recall curves, and per-class score thresholds.

Matching is COCO's greedy rule at one IoU, per image and class: predictions by descending score each
take the unmatched ground-truth box they overlap most (IoU >= ``iou``); a leftover prediction is a
false positive unless it lies on a crowd region (then ignored, as in COCOeval).

A threshold ``t`` keeps predictions with ``score > t`` (as ``label`` does). A cut's threshold is the
midpoint between the lowest kept score and the next lower one (or the run's own threshold), so it
separates the same predictions under ``>`` and ``>=`` and on re-labelling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Matches:
    """Per-class matching result over a set of images."""

    scores: np.ndarray  # (N,) the predictions that count (crowd-ignored ones removed), descending
    tp: np.ndarray  # (N,) bool: the prediction matched a ground-truth box
    n_gt: int  # (non-crowd) ground-truth boxes

    @classmethod
    def merge(cls, parts: list["Matches"]) -> "Matches":
        if not parts:
            return cls(np.zeros(0), np.zeros(0, bool), 0)
        scores = np.concatenate([p.scores for p in parts])
        tp = np.concatenate([p.tp for p in parts])
        order = np.argsort(-scores, kind="stable")
        return cls(scores[order], tp[order], sum(p.n_gt for p in parts))


def match_image(pred_xyxy, pred_scores, gt_xyxy, gt_crowd=None, iou: float = 0.5) -> Matches:
    """Greedy COCO-style matching of one image's predictions of one class: ``(N, 4)`` boxes and
    ``(N,)`` scores against ``(M, 4)`` ground-truth boxes, ``gt_crowd`` ``(M,)`` marking crowd regions."""
    from autolabel.geometry import box_area, box_iou

    pred = np.asarray(pred_xyxy, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    gt = np.asarray(gt_xyxy, dtype=np.float64).reshape(-1, 4)
    crowd = np.zeros(len(gt), bool) if gt_crowd is None else np.asarray(gt_crowd, bool)
    order = np.argsort(-scores, kind="stable")
    pred, scores = pred[order], scores[order]
    real, crowd_boxes = gt[~crowd], gt[crowd]
    ious = box_iou(pred, real) if len(real) else np.zeros((len(pred), 0))
    if len(crowd_boxes):  # COCO: overlap with a crowd region is intersection / prediction area
        lt = np.maximum(pred[:, None, :2], crowd_boxes[None, :, :2])
        rb = np.minimum(pred[:, None, 2:], crowd_boxes[None, :, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
        area = box_area(pred)[:, None]
        crowd_overlap = np.divide(inter, area, out=np.zeros_like(inter), where=area > 0).max(axis=1)
    else:
        crowd_overlap = np.zeros(len(pred))
    taken = np.zeros(len(real), bool)
    tp = np.zeros(len(pred), bool)
    keep = np.ones(len(pred), bool)
    for i in range(len(pred)):
        candidates = np.where(taken, -1.0, ious[i]) if len(real) else np.zeros(0)
        j = int(np.argmax(candidates)) if len(candidates) else -1
        if j >= 0 and candidates[j] >= iou:
            taken[j] = True
            tp[i] = True
        elif crowd_overlap[i] >= iou:
            keep[i] = False
    return Matches(scores[keep], tp[keep], int(len(real)))


@dataclass(frozen=True)
class Curve:
    """Precision/recall at every cut of the score-sorted predictions (cut k keeps the top k), (K,)
    arrays; only cuts between distinct scores are listed (tied predictions cannot be separated)."""

    kept: np.ndarray  # predictions kept at each cut
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    lowest_kept: np.ndarray  # the lowest score each cut keeps
    next_lower: np.ndarray  # the score below it (or the floor)

    def threshold_at(self, k: int) -> float:
        """The score threshold that makes cut ``k`` (see the module docstring)."""
        return _between(self.next_lower[k], self.lowest_kept[k])

    @property
    def threshold(self) -> np.ndarray:
        return np.array([self.threshold_at(k) for k in range(len(self.kept))])


def pr_curve(matches: Matches, floor: float = 0.0) -> Curve:
    """The precision/recall curve of a class; ``floor`` is the lowest threshold (the run's own)."""
    s = matches.scores
    if len(s) == 0:
        empty = np.zeros(0)
        return Curve(np.zeros(0, int), empty, empty, empty, empty, empty)
    cum_tp = np.cumsum(matches.tp)
    ends = np.flatnonzero(np.append(s[1:] < s[:-1], True))  # last index of each run of equal scores
    kept = ends + 1
    tp = cum_tp[ends].astype(np.float64)
    precision = tp / kept
    recall = tp / matches.n_gt if matches.n_gt else np.zeros_like(tp)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    lowest_kept = s[ends]
    next_lower = np.minimum(np.append(s[ends[:-1] + 1], min(floor, s[-1])), lowest_kept)
    return Curve(kept, precision, recall, f1, lowest_kept, next_lower)


def _between(lo: float, hi: float) -> float:
    """The midpoint of ``(lo, hi)`` with as few decimals (at least 4) as keep it strictly inside."""
    mid = (float(lo) + float(hi)) / 2
    for digits in range(4, 16):
        rounded = round(mid, digits)
        if lo < rounded < hi:
            return rounded
    return mid


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    precision: float
    recall: float
    f1: float
    kept: int


def _point(curve: Curve, k: int) -> OperatingPoint:
    return OperatingPoint(float(curve.threshold_at(k)), float(curve.precision[k]), float(curve.recall[k]),
                          float(curve.f1[k]), int(curve.kept[k]))


def best_f1(curve: Curve) -> OperatingPoint | None:
    """The cut with the highest F1 (ties: the highest threshold); None when no prediction is correct."""
    if len(curve.f1) == 0 or curve.f1.max() <= 0:
        return None
    return _point(curve, int(np.argmax(curve.f1)))  # argmax takes the first: the highest threshold


def for_precision(curve: Curve, target: float) -> OperatingPoint | None:
    """The lowest threshold (most recall) whose precision is at least ``target``; None if none is."""
    ok = np.flatnonzero((curve.precision >= target) & (curve.recall > 0))
    return _point(curve, int(ok[-1])) if len(ok) else None
