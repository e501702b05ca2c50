"""Validation during fine-tuning: COCO mAP of the current weights on the validation set, measured
through the inference path, before training and every ``val_every`` steps (keep-best reads it)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch

from autolabel.finetune.data import Dataset
from autolabel.ontology import Ontology

def predict_examples(detector, examples, ontology, *, cache=None, batch_size: int = 4,
                     autocast: Callable = contextlib.nullcontext) -> list:
    """Detections of ``examples`` with the current weights, through the inference engine: a new
    ``Owlv2Detector`` around the same model (no stale text embeddings) with exact preprocessing, as
    ``autolabel label --exact`` runs; with a feature cache (cheap mode), the heads on the cached
    features, then ``detect``. Threshold 0: every box, as mAP wants."""
    from autolabel.models.owlv2 import ImageFeatures, Owlv2Detector
    from autolabel.pipeline import DetectConfig, Encoded, Labeler, PreparedImage

    config = DetectConfig(threshold=0.0, nms_iou=0.5)
    fresh = Owlv2Detector(detector.model, detector.processor, detector.name, detector.device, detector.dtype,
                          exact=True)
    labeler = Labeler(ontology, detector=fresh, config=config)
    out = []
    with autocast():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            if cache is None:
                out += labeler.finish(labeler.launch([labeler.prepare(e.path) for e in chunk]))
                continue
            feats, fmap = cache.features([cache.by_example[start + j][0] for j in range(len(chunk))], fresh.device)
            with torch.no_grad():
                features = ImageFeatures(feats, fresh.model.box_predictor(feats, fmap).float())
            # The engine's prompt step, so negatives and exemplars count as in labelling.
            batch = [PreparedImage(str(e.path), "", e.size) for e in chunk]
            out += labeler.finish(labeler.score(Encoded(batch, features=features)))
    return out


class Validator:
    """mAP of ``detector``'s current weights on ``data``, with the training classes ``ontology``.

    every: validate after every that many steps (0: only at the end of ``steps``).
    autocast: the training precision's autocast context factory.
    """

    def __init__(self, data: Dataset, ontology: Ontology, detector, *, every: int, steps: int,
                 autocast: Callable = contextlib.nullcontext):
        self.data = data
        self.ontology = ontology
        self.detector = detector
        self.every = every
        self.steps = steps
        self.autocast = autocast
        self.cache = None

    def due(self, step: int) -> bool:
        return bool(self.every and step % self.every == 0) or step == self.steps

    def cache_features(self, cache_dir: Path, key: dict, workers: int) -> None:
        """Cheap mode: encode the validation images once, as inference sees them (full decode, no augmentation)."""
        from autolabel.finetune.heads import build_feature_cache

        self.cache = build_feature_cache(self.detector, list(self.data.examples), cache_dir,
                                         key={**key, "data": self.data.fingerprint()}, views_per_image=1,
                                         max_side=None, workers=workers)

    def measure(self) -> dict:
        """{"map", "map50", "map75", "per_class"} (see ``metrics.coco_map``); the model is in eval
        mode meanwhile and back in its previous mode afterwards."""
        from autolabel.finetune.metrics import coco_map

        model = self.detector.model
        was_training = model.training
        model.eval()
        try:
            predictions = predict_examples(self.detector, self.data.examples, self.ontology, cache=self.cache,
                                           autocast=self.autocast)
        finally:
            model.train(was_training)
        return coco_map(self.data, predictions, self.ontology.names)
