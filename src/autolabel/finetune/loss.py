"""Detection loss for OWLv2 (transformers ships none): Hungarian matching + focal / L1 / GIoU.

Everything here is pure torch (scipy only for the assignment) and works in the space OWLv2
predicts in: boxes ``cx, cy, w, h`` normalised to the *padded square* (pixels / max(width, height)
of the image the model saw), one prediction per patch.

Per image, the queries are its positive classes plus sampled negative class names. A target box
names the query (its class) it belongs to. Every prediction gets a sigmoid focal loss against a
one-hot target row: 1 at (matched prediction, its box's query), 0 everywhere else, so unmatched
predictions learn "none of these queries". Matched predictions also get L1 and GIoU box losses.
All three are normalised by the number of target boxes in the batch (as DETR does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from autolabel.finetune.config import LossWeights


@dataclass(frozen=True)
class Target:
    """Ground truth of one image for the loss.

    boxes: (N, 4) float ``cx, cy, w, h`` normalised to the padded square.
    labels: (N,) int64 index into this image's query list.
    """

    boxes: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"boxes must have shape (N, 4), got {tuple(self.boxes.shape)}")
        if self.labels.shape != (self.boxes.shape[0],):
            raise ValueError(f"labels must have shape ({self.boxes.shape[0]},), got {tuple(self.labels.shape)}")


@dataclass
class LossOutput:
    """``total`` is what is optimised; the parts are detached, for logging."""

    total: torch.Tensor
    classification: torch.Tensor
    l1: torch.Tensor
    giou: torch.Tensor
    num_boxes: int
    matches: list[tuple[torch.Tensor, torch.Tensor]]

    def as_floats(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "loss_class": float(self.classification),
                "loss_l1": float(self.l1), "loss_giou": float(self.giou)}


# -- boxes -------------------------------------------------------------------------------------------


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise GIoU of (N, 4) and (M, 4) ``xyxy`` boxes -> (N, M), in [-1, 1].

    Degenerate (zero-size) boxes are allowed: ``eps`` keeps the divisions finite.
    """
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    iou = inter / (union + eps)
    lt_c = torch.min(a[:, None, :2], b[None, :, :2])
    rb_c = torch.max(a[:, None, 2:], b[None, :, 2:])
    wh_c = (rb_c - lt_c).clamp(min=0)
    hull = wh_c[..., 0] * wh_c[..., 1]
    return iou - (hull - union) / (hull + eps)


# -- classification ----------------------------------------------------------------------------------


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.3, gamma: float = 2.0) -> torch.Tensor:
    """Element-wise sigmoid focal loss (Lin et al.), same shape as ``logits``."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def _focal_cost(logits: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Cost of calling each (prediction, query) positive: focal(positive) - focal(negative)."""
    prob = logits.sigmoid()
    pos = alpha * (1 - prob) ** gamma * F.softplus(-logits)  # -log(p)
    neg = (1 - alpha) * prob**gamma * F.softplus(logits)  # -log(1 - p)
    return pos - neg


# -- matching ----------------------------------------------------------------------------------------


@torch.no_grad()
def match_cost(logits: torch.Tensor, pred_boxes: torch.Tensor, target: Target, weights: LossWeights) -> torch.Tensor:
    """(P, N) matching cost of one image's P predictions against its N target boxes.

    logits: (P, Q) class logits for this image's queries; pred_boxes: (P, 4) cxcywh.
    """
    logits = logits.float()
    pred_boxes = pred_boxes.float()
    tgt_boxes = target.boxes.to(pred_boxes)
    cost_class = _focal_cost(logits[:, target.labels], weights.focal_alpha, weights.focal_gamma)
    cost_l1 = torch.cdist(pred_boxes, tgt_boxes, p=1)
    cost_giou = -generalized_box_iou(cxcywh_to_xyxy(pred_boxes), cxcywh_to_xyxy(tgt_boxes))
    return weights.class_weight * cost_class + weights.l1_weight * cost_l1 + weights.giou_weight * cost_giou


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, pred_boxes: torch.Tensor, target: Target,
                    weights: LossWeights = LossWeights()) -> tuple[torch.Tensor, torch.Tensor]:
    """One-to-one assignment of predictions to target boxes with the lowest total cost.

    Returns (pred_idx, tgt_idx), int64 tensors of length min(P, N) on the CPU, sorted by tgt_idx.
    """
    from scipy.optimize import linear_sum_assignment

    n = target.boxes.shape[0]
    if n == 0 or pred_boxes.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    cost = match_cost(logits, pred_boxes, target, weights).cpu().numpy().astype(np.float64)
    cost = np.nan_to_num(cost, nan=1e6, posinf=1e6, neginf=-1e6)
    rows, cols = linear_sum_assignment(cost)
    order = np.argsort(cols, kind="stable")
    return torch.as_tensor(rows[order], dtype=torch.int64), torch.as_tensor(cols[order], dtype=torch.int64)


# -- the loss ----------------------------------------------------------------------------------------


def detection_loss(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    targets: list[Target],
    query_mask: torch.Tensor | None = None,
    weights: LossWeights = LossWeights(),
) -> LossOutput:
    """OWLv2 detection loss of a batch.

    logits: (B, P, Q) class logits (Q = longest query list in the batch);
    pred_boxes: (B, P, 4) cxcywh normalised to the padded square;
    targets: B ``Target``s whose labels index that image's queries;
    query_mask: (B, Q) bool, False where an image's query list is padding (excluded from the loss).
    """
    b, p, q = logits.shape
    if len(targets) != b:
        raise ValueError(f"got {len(targets)} targets for a batch of {b}")
    logits = logits.float()
    pred_boxes = pred_boxes.float()
    device = logits.device

    class_targets = torch.zeros_like(logits)
    matched_pred, matched_tgt = [], []
    matches = []
    for i, target in enumerate(targets):
        if target.labels.numel() and int(target.labels.max()) >= q:
            raise ValueError(f"target label {int(target.labels.max())} out of range for {q} queries")
        pred_idx, tgt_idx = hungarian_match(logits[i].detach(), pred_boxes[i].detach(), target, weights)
        matches.append((pred_idx, tgt_idx))
        if len(pred_idx):
            pred_idx_d, tgt_idx_d = pred_idx.to(device), tgt_idx.to(device)
            class_targets[i, pred_idx_d, target.labels.to(device)[tgt_idx_d]] = 1.0
            matched_pred.append(pred_boxes[i, pred_idx_d])
            matched_tgt.append(target.boxes.to(device=device, dtype=pred_boxes.dtype)[tgt_idx_d])

    num_boxes = sum(int(t.boxes.shape[0]) for t in targets)
    norm = float(max(num_boxes, 1))

    if query_mask is not None:
        # Padding queries carry finfo.min logits from the class head: replace them before the loss
        # (so no inf/NaN reaches the backward pass) and leave them out of the sum.
        valid = query_mask.to(device=device, dtype=torch.bool)[:, None, :].expand_as(logits)
        logits = logits.masked_fill(~valid, 0.0)
        focal = sigmoid_focal_loss(logits, class_targets, weights.focal_alpha, weights.focal_gamma) * valid
    else:
        focal = sigmoid_focal_loss(logits, class_targets, weights.focal_alpha, weights.focal_gamma)
    loss_class = focal.sum() / norm

    if matched_pred:
        src = torch.cat(matched_pred)
        tgt = torch.cat(matched_tgt)
        loss_l1 = F.l1_loss(src, tgt, reduction="sum") / norm
        giou = torch.diag(generalized_box_iou(cxcywh_to_xyxy(src), cxcywh_to_xyxy(tgt)))
        loss_giou = (1 - giou).sum() / norm
    else:
        # Keep the graph connected (and the value exactly zero) when the batch has no boxes.
        loss_l1 = pred_boxes.sum() * 0.0
        loss_giou = pred_boxes.sum() * 0.0

    total = weights.class_weight * loss_class + weights.l1_weight * loss_l1 + weights.giou_weight * loss_giou
    return LossOutput(total, loss_class.detach(), loss_l1.detach(), loss_giou.detach(), num_boxes, matches)
