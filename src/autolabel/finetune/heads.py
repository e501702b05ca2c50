"""Cheap mode: train only the class and box heads on cached image features.

The vision tower runs once per (image, view) and its ``image_feats`` (what
``Owlv2Detector.encode_images`` returns) are kept on disk as a float16 memory map, so training
touches neither the backbone nor the image files again. A few views per image (the image, its
mirror, random crops) are cached up front instead of fresh augmentation per step.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from autolabel.finetune.checkpoint import write_json_atomic
from autolabel.finetune.data import AugmentConfig, AugmentParams, Example, load_augmented, sample_augment
from autolabel.finetune.model import preprocess

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass(frozen=True)
class View:
    """One cached view of an example: its target boxes (``boxes_to_target``) and which of the
    example's boxes they are."""

    example: int
    boxes: np.ndarray
    kept: np.ndarray


class FeatureCache:
    """Cached ``image_feats`` (V, P, D) float16 and the views they belong to."""

    def __init__(self, feats: np.ndarray, views: list[View], grid: tuple[int, int]):
        self.feats = feats
        self.views = views
        self.grid = grid
        self.by_example: dict[int, list[int]] = {}
        for v, view in enumerate(views):
            self.by_example.setdefault(view.example, []).append(v)

    def features(self, view_ids, device) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 image_feats (B, P, D) and feature_map (B, h, w, D) of the given views."""
        ids = np.asarray(view_ids)
        order = np.argsort(ids, kind="stable")  # memmap reads are fastest in file order
        block = np.empty((len(ids), *self.feats.shape[1:]), dtype=np.float16)
        block[order] = self.feats[ids[order]]
        feats = torch.from_numpy(block).to(device=device, dtype=torch.float32)
        h, w = self.grid
        return feats, feats.reshape(feats.shape[0], h, w, feats.shape[-1])


def plan_views(n_examples: int, views_per_image: int, augment: AugmentConfig, seed: int) -> list[list[AugmentParams]]:
    """Per example: the plain image, its mirror (if flips are on), then random augmentations."""
    plans = []
    for i in range(n_examples):
        params = [AugmentParams()]
        if views_per_image >= 2 and augment.hflip > 0:
            params.append(AugmentParams(flip=True))
        rng = np.random.default_rng([seed, 7, i])
        while len(params) < views_per_image and (augment.hflip > 0 or augment.crop > 0):
            params.append(sample_augment(rng, augment))
        plans.append(params)
    return plans


def build_feature_cache(detector, examples: list[Example], cache_dir: str | Path, *, key: dict,
                        views_per_image: int = 1, augment: AugmentConfig = AugmentConfig.none(), seed: int = 0,
                        max_side: int | None = None, min_visible: float = 0.4, workers: int = 2,
                        batch_size: int = 4) -> FeatureCache:
    """Encode every view of ``examples`` once with ``detector`` (an ``Owlv2Detector``), or reuse
    ``cache_dir`` if it was built with ``key``. ``model.preprocess`` and ``encode_images`` are the
    inference calls, so the features are what inference computes for the same pixels."""
    cache_dir = Path(cache_dir)
    meta_path = cache_dir / "meta.json"
    feats_path = cache_dir / "features.npy"
    full_key = {"version": CACHE_VERSION, **key, "views_per_image": views_per_image, "augment": asdict(augment),
                "seed": seed, "max_side": max_side, "min_visible": min_visible}
    if meta_path.exists() and feats_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            meta = {}
        if meta.get("key") == json.loads(json.dumps(full_key)):
            feats = np.load(feats_path, mmap_mode="r")
            views = [View(int(v["example"]), np.asarray(v["boxes"], dtype=np.float32).reshape(-1, 4),
                          np.asarray(v["kept"], dtype=np.int64)) for v in meta["views"]]
            if feats.shape[0] == len(views):
                log.info("reusing %d cached image features in %s", len(views), cache_dir)
                return FeatureCache(feats, views, tuple(meta["grid"]))

    cache_dir.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # the cache is valid only once meta.json is written, last
    plans = [(i, p) for i, params in enumerate(plan_views(len(examples), views_per_image, augment, seed))
             for p in params]
    vision = detector.model.config.vision_config
    side = detector.image_size // int(vision.patch_size)
    feats = np.lib.format.open_memmap(feats_path, mode="w+", dtype=np.float16,
                                      shape=(len(plans), side * side, int(vision.hidden_size)))

    def load(chunk):
        return [(i, load_augmented(examples[i], params, max_side=max_side, min_visible=min_visible))
                for i, params in chunk]

    views: list[View] = []
    chunks = [plans[s : s + batch_size] for s in range(0, len(plans), batch_size)]
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="cache") as pool:
        for loaded in pool.map(load, chunks):
            pixel_values = preprocess(detector, [aug.image for _, aug in loaded],
                                      [aug.original_size for _, aug in loaded])
            encoded = detector.encode_images(pixel_values)
            feats[len(views) : len(views) + len(loaded)] = encoded.image_feats.float().cpu().numpy().astype(np.float16)
            views += [View(i, aug.target, aug.kept.astype(np.int64)) for i, aug in loaded]
    feats.flush()
    del feats
    write_json_atomic(meta_path, {"key": full_key, "grid": [side, side], "views": [
        {"example": v.example, "boxes": v.boxes.tolist(), "kept": v.kept.tolist()} for v in views]})
    return FeatureCache(np.load(feats_path, mmap_mode="r"), views, (side, side))
