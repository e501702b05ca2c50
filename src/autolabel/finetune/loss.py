"""Detection loss for OWLv2 (transformers ships none): Hungarian matching + focal / L1 / GIoU.

Boxes are ``cx, cy, w, h`` normalised to the padded square, one prediction per patch. Every
prediction gets a sigmoid focal loss against a one-hot row (1 at its matched box's query, else 0),
so unmatched predictions learn "none of these queries"; matched ones also get L1 and GIoU. All
three are normalised by the number of target boxes in the batch (as DETR does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, sigmoid_focal_loss

from autolabel.finetune.config import LossWeights


@dataclass(frozen=True)
class Target:
    """Ground truth of one image: (N, 4) cxcywh ``boxes`` and their (N,) int64 ``labels``, indices
    into the image's query list."""

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

    def as_floats(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "loss_class": float(self.classification),
                "loss_l1": float(self.l1), "loss_giou": float(self.giou)}


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise GIoU of (N, 4) and (M, 4) ``xyxy`` boxes -> (N, M). Unlike torchvision's, ``eps``
    keeps degenerate (zero-size) boxes finite."""
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


def _focal_cost(logits: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Cost of calling each (prediction, query) positive: focal(positive) - focal(negative)."""
    prob = logits.sigmoid()
    pos = alpha * (1 - prob) ** gamma * F.softplus(-logits)  # -log(p)
    neg = (1 - alpha) * prob**gamma * F.softplus(logits)  # -log(1 - p)
    return pos - neg


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, pred_boxes: torch.Tensor, target: Target,
                    weights: LossWeights = LossWeights()) -> tuple[torch.Tensor, torch.Tensor]:
    """The lowest-cost one-to-one assignment of one image's P predictions ((P, Q) logits, (P, 4)
    cxcywh boxes) to its target boxes -> (pred_idx, tgt_idx), int64 on the CPU, sorted by tgt_idx."""
    from scipy.optimize import linear_sum_assignment

    if target.boxes.shape[0] == 0 or pred_boxes.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    logits, pred_boxes = logits.float(), pred_boxes.float()
    tgt_boxes = target.boxes.to(pred_boxes)
    cost_class = _focal_cost(logits[:, target.labels], weights.focal_alpha, weights.focal_gamma)
    cost_l1 = torch.cdist(pred_boxes, tgt_boxes, p=1)
    pred_xyxy, tgt_xyxy = (box_convert(boxes, "cxcywh", "xyxy") for boxes in (pred_boxes, tgt_boxes))
    cost_giou = -generalized_box_iou(pred_xyxy, tgt_xyxy)
    cost = weights.class_weight * cost_class + weights.l1_weight * cost_l1 + weights.giou_weight * cost_giou
    cost = np.nan_to_num(cost.cpu().numpy().astype(np.float64), nan=1e6, posinf=1e6, neginf=-1e6)
    rows, cols = linear_sum_assignment(cost)
    order = np.argsort(cols, kind="stable")
    return torch.as_tensor(rows[order], dtype=torch.int64), torch.as_tensor(cols[order], dtype=torch.int64)


def detection_loss(logits: torch.Tensor, pred_boxes: torch.Tensor, targets: list[Target], query_mask: torch.Tensor,
                   weights: LossWeights = LossWeights()) -> LossOutput:
    """OWLv2 detection loss of a batch: (B, P, Q) class logits, (B, P, 4) cxcywh boxes, B targets
    and a (B, Q) bool ``query_mask``, False where an image's query list is padding."""
    b, p, q = logits.shape
    if len(targets) != b:
        raise ValueError(f"got {len(targets)} targets for a batch of {b}")
    logits = logits.float()
    pred_boxes = pred_boxes.float()
    device = logits.device

    class_targets = torch.zeros_like(logits)
    matched_pred, matched_tgt = [], []
    for i, target in enumerate(targets):
        if target.labels.numel() and int(target.labels.max()) >= q:
            raise ValueError(f"target label {int(target.labels.max())} out of range for {q} queries")
        pred_idx, tgt_idx = hungarian_match(logits[i].detach(), pred_boxes[i].detach(), target, weights)
        if len(pred_idx):
            pred_idx, tgt_idx = pred_idx.to(device), tgt_idx.to(device)
            class_targets[i, pred_idx, target.labels.to(device)[tgt_idx]] = 1.0
            matched_pred.append(pred_boxes[i, pred_idx])
            matched_tgt.append(target.boxes.to(device=device, dtype=pred_boxes.dtype)[tgt_idx])
    norm = float(max(sum(int(t.boxes.shape[0]) for t in targets), 1))

    # Padding queries carry finfo.min logits from the class head: replace them before the loss
    # (so no inf/NaN reaches the backward pass) and leave them out of the sum.
    valid = query_mask.to(device=device, dtype=torch.bool)[:, None, :].expand_as(logits)
    logits = logits.masked_fill(~valid, 0.0)
    focal = sigmoid_focal_loss(logits, class_targets, weights.focal_alpha, weights.focal_gamma) * valid
    loss_class = focal.sum() / norm

    if matched_pred:
        src = torch.cat(matched_pred)
        tgt = torch.cat(matched_tgt)
        loss_l1 = F.l1_loss(src, tgt, reduction="sum") / norm
        giou = torch.diag(generalized_box_iou(box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy")))
        loss_giou = (1 - giou).sum() / norm
    else:
        # Keep the graph connected (and the value exactly zero) when the batch has no boxes.
        loss_l1 = pred_boxes.sum() * 0.0
        loss_giou = pred_boxes.sum() * 0.0

    total = weights.class_weight * loss_class + weights.l1_weight * loss_l1 + weights.giou_weight * loss_giou
    return LossOutput(total, loss_class.detach(), loss_l1.detach(), loss_giou.detach())
