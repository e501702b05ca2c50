"""Cheap mode: train only the class and box heads on cached image features.

The vision tower runs once per (image, view) and its output (the ``image_feats`` the heads read,
exactly what ``Owlv2Detector.encode_images`` returns) is kept on disk as a float16 memory map, so
training touches neither the backbone nor the image files again. A few augmented views per image
(the image itself, its mirror, random crops) are cached up front instead of fresh augmentation
per step. The text tower is frozen too, so query embeddings are computed once per name.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from autolabel.finetune.data import IDENTITY, AugmentConfig, AugmentParams, Example, load_augmented, sample_augment
from autolabel.finetune.model import preprocess

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass(frozen=True)
class View:
    """One cached view of an example: the augmentation applied, the target boxes (K, 4) cxcywh
    normalised to the view's padded square, and which of the example's boxes they are."""

    example: int
    params: AugmentParams
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

    def features(self, view_ids, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """image_feats (B, P, D) and feature_map (B, h, w, D) of the given views."""
        ids = np.asarray(view_ids)
        order = np.argsort(ids, kind="stable")  # memmap reads are fastest in file order
        block = np.empty((len(ids), *self.feats.shape[1:]), dtype=np.float16)
        block[order] = self.feats[ids[order]]
        feats = torch.from_numpy(block).to(device=device, dtype=dtype)
        h, w = self.grid
        return feats, feats.reshape(feats.shape[0], h, w, feats.shape[-1])


def plan_views(examples: list[Example], views_per_image: int, augment: AugmentConfig, seed: int) -> list[AugmentParams]:
    """Per example: the plain image, its mirror (if flips are on), then random augmentations."""
    plans = []
    for i, _ in enumerate(examples):
        params = [IDENTITY]
        if views_per_image >= 2 and augment.hflip > 0:
            params.append(AugmentParams(flip=True))
        rng = np.random.default_rng([seed, 7, i])
        while len(params) < views_per_image and (augment.hflip > 0 or augment.crop > 0):
            params.append(sample_augment(rng, augment))
        plans.append(params)
    return plans


def _view_to_json(view: View) -> dict:
    return {"example": view.example, "flip": view.params.flip, "crop": view.params.crop,
            "boxes": view.boxes.tolist(), "kept": view.kept.tolist()}


def _view_from_json(data: dict) -> View:
    crop = tuple(data["crop"]) if data["crop"] is not None else None
    return View(int(data["example"]), AugmentParams(bool(data["flip"]), crop),
                np.asarray(data["boxes"], dtype=np.float32).reshape(-1, 4), np.asarray(data["kept"], dtype=np.int64))


def build_feature_cache(
    detector,
    examples: list[Example],
    cache_dir: str | Path,
    *,
    key: dict,
    views_per_image: int = 1,
    augment: AugmentConfig = AugmentConfig.none(),
    seed: int = 0,
    max_side: int | None = None,
    min_visible: float = 0.4,
    batch_size: int = 4,
    workers: int = 2,
) -> FeatureCache:
    """Encode every view of ``examples`` once (or reuse ``cache_dir`` if it was built with ``key``).

    ``detector`` is an ``Owlv2Detector``; ``finetune.model.preprocess`` (its preprocessors) and its
    ``encode_images`` are the inference calls, so the cached features are exactly what inference
    computes for the same pixels (training views are augmented, so they do not go through
    ``Labeler.prepare``, which decodes files).
    """
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
            views = [_view_from_json(v) for v in meta["views"]]
            if feats.shape[0] == len(views):
                log.info("reusing %d cached image features in %s", len(views), cache_dir)
                return FeatureCache(feats, views, tuple(meta["grid"]))

    cache_dir.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # the cache is valid only once meta.json is written, last
    plans = [(i, p) for i, params in enumerate(plan_views(examples, views_per_image, augment, seed)) for p in params]
    size = detector.image_size
    patch = int(detector.model.config.vision_config.patch_size)
    grid = (size // patch, size // patch)
    dim = int(detector.model.config.vision_config.hidden_size)
    feats = np.lib.format.open_memmap(feats_path, mode="w+", dtype=np.float16, shape=(len(plans), grid[0] * grid[1], dim))

    def load(item):
        i, params = item
        view = load_augmented(examples[i], params, max_side=max_side, min_visible=min_visible)
        return view, View(i, params, view.target, view.kept.astype(np.int64))

    views: list[View] = []
    chunks = [plans[s : s + batch_size] for s in range(0, len(plans), batch_size)]
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="cache") as pool:
        pending = pool.map(lambda chunk: [load(item) for item in chunk], chunks)
        for loaded in pending:
            images = [aug.image for aug, _ in loaded]
            pixel_values = preprocess(detector, images, [aug.original_size for aug, _ in loaded])
            encoded = detector.encode_images(pixel_values)
            start = len(views)
            feats[start : start + len(images)] = encoded.image_feats.float().cpu().numpy().astype(np.float16)
            views.extend(view for _, view in loaded)
    feats.flush()
    del feats
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": full_key, "grid": list(grid), "views": [_view_to_json(v) for v in views]}))
    os.replace(tmp, meta_path)
    return FeatureCache(np.load(feats_path, mmap_mode="r"), views, grid)
