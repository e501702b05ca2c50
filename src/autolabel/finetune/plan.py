"""The batches: what each micro-batch draws, and turning a draw into model input and loss targets.

A draw (images, their augmentation or cached view, their negative queries) is a pure function of
(seed, step, micro-batch), so a resumed run draws exactly the batches the interrupted one would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from autolabel.finetune.config import TrainConfig
from autolabel.finetune.data import AugmentParams, Dataset, load_augmented, sample_augment, sample_queries
from autolabel.finetune.loss import Target
from autolabel.finetune.model import preprocess


def batch_indices(micro: int, batch_size: int, n: int, seed: int) -> list[int]:
    """Example indices of micro-batch number ``micro``: consecutive slices of a fresh random
    permutation per epoch, a pure function of (micro, seed)."""
    out = []
    for g in range(micro * batch_size, (micro + 1) * batch_size):
        epoch, pos = divmod(g, n)
        out.append(int(np.random.default_rng([seed, 1, epoch]).permutation(n)[pos]))
    return out


@dataclass(frozen=True)
class Draw:
    """One image of a micro-batch: its queries (positives and negatives), the query index of each
    class present, and either a cached view (cheap mode) or an augmentation to apply (full mode)."""

    example: int
    queries: list[str]
    query_of_class: dict[int, int]
    view: int | None = None
    augment: AugmentParams | None = None


class BatchPlanner:
    """Draws micro-batches for ``config`` (resolved). ``cached_views``: cheap mode, the feature
    cache rows of each example (``FeatureCache.by_example``); None in full mode."""

    def __init__(self, data: Dataset, config: TrainConfig, negatives: tuple[str, ...],
                 cached_views: dict[int, list[int]] | None = None):
        self.data = data
        self.config = config
        self.negatives = negatives
        self.cached_views = cached_views

    def draw(self, step: int, micro: int) -> list[Draw]:
        """Micro-batch ``micro`` of optimizer step ``step`` (1-based)."""
        cfg = self.config
        examples = self.data.examples
        number = (step - 1) * cfg.grad_accum + micro
        rng = np.random.default_rng([cfg.seed, 2, step, micro])
        draws = []
        for i in batch_indices(number, cfg.batch_size, len(examples), cfg.seed):
            queries, index = sample_queries(rng, set(examples[i].labels.class_ids.tolist()), self.data.ontology,
                                            cfg.num_negatives, self.negatives)
            if self.cached_views is not None:
                views = self.cached_views[i]
                draws.append(Draw(i, queries, index, view=int(views[int(rng.integers(len(views)))])))
            else:
                draws.append(Draw(i, queries, index, augment=sample_augment(rng, cfg.augment)))
        return draws

    def remaining(self, done_steps: int) -> Iterator[list[Draw]]:
        """Every micro-batch after optimizer step ``done_steps``, in training order."""
        for step in range(done_steps + 1, self.config.steps + 1):
            for micro in range(self.config.grad_accum):
                yield self.draw(step, micro)


@dataclass
class Batch:
    """A prepared micro-batch: model input, queries and targets."""

    pixel_values: torch.Tensor | None  # full mode: (B, 3, S, S)
    views: list[int] | None  # cheap mode: feature cache rows
    texts: list[str]  # unique query texts of the batch
    query_index: list[list[int]]  # per image, indices into texts
    targets: list[Target]


def _merge_queries(draws: list[Draw]) -> tuple[list[str], list[list[int]]]:
    texts: dict[str, int] = {}
    index = [[texts.setdefault(q, len(texts)) for q in d.queries] for d in draws]
    return list(texts), index


def _target(draw: Draw, data: Dataset, boxes: np.ndarray, kept: np.ndarray) -> Target:
    """Loss targets of a view's ``boxes``, the example's boxes ``kept`` in it."""
    class_ids = data.examples[draw.example].labels.class_ids[kept]
    labels = [draw.query_of_class[c] for c in class_ids.tolist()]
    return Target(torch.from_numpy(boxes), torch.tensor(labels, dtype=torch.int64))


def cached_batch(draws: list[Draw], data: Dataset, cache) -> Batch:
    """Cheap mode: the drawn views of the feature cache and their stored targets."""
    texts, query_index = _merge_queries(draws)
    views = [cache.views[d.view] for d in draws]
    targets = [_target(d, data, v.boxes, v.kept) for d, v in zip(draws, views)]
    return Batch(None, [d.view for d in draws], texts, query_index, targets)


def image_batch(draws: list[Draw], data: Dataset, detector, *, max_side: int, min_visible: float) -> Batch:
    """Full mode: decode and augment the drawn images, then the inference preprocessing (pad
    bottom/right to square, resize, normalise), so training sees the pixels inference sees."""
    texts, query_index = _merge_queries(draws)
    views = [load_augmented(data.examples[d.example], d.augment, max_side=max_side, min_visible=min_visible)
             for d in draws]
    targets = [_target(d, data, v.target, v.kept) for d, v in zip(draws, views)]
    pixel_values = preprocess(detector, [v.image for v in views], [v.original_size for v in views])
    return Batch(pixel_values, None, texts, query_index, targets)
