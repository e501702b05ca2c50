"""The fine-tuning loop: OWLv2 on reviewed labels, with validation, keep-best, resume and ensembling.

Output folder layout::

    OUT/config.json, model.safetensors, processor files   a normal checkpoint (written at the end)
    OUT/training_log.json                                 config, losses, validation mAP, result
    OUT/train_state/state.json                            points at the last checkpoint (written last)
    OUT/train_state/step-000200/                           trainable weights + RNG (safetensors),
                                                          optimizer.pt (tensors only), meta.json
    OUT/train_state/best.safetensors                      trainable weights of the best validation
    OUT/train_state/cache/                                cached image features (cheap mode)

Resume: run the same command again. Only plain data is unpickled: weights and RNG states are
safetensors, the optimizer state is loaded with ``torch.load(weights_only=True)``, everything else is
JSON. Each step's batch (images, augmentation, negative queries) is a pure function of
(seed, step), so a resumed run draws exactly the batches the interrupted one would have.
``train_state`` is deleted once the final model is written (``keep_state`` keeps it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from autolabel.configs import config_diff
from autolabel.errors import AutolabelError, ConfigError
from autolabel.finetune.data import AugmentConfig, Dataset, load_augmented, negative_pool, sample_augment, sample_queries
from autolabel.finetune.loss import LossWeights, Target, detection_loss
from autolabel.finetune.model import encode_images, encode_queries, gather_queries, predict, preprocess, set_trainable

log = logging.getLogger(__name__)

MODES = ("full", "heads")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
STATE_DIR = "train_state"
LOG_FILE = "training_log.json"
# Options that change how fast or how visibly a run goes, not what it learns: a resumed run may change them.
_RUNTIME_FIELDS = ("val_every", "save_every", "workers", "keep_state", "precision", "gradient_checkpointing")


@dataclass(frozen=True)
class TrainConfig:
    """How to fine-tune. ``None`` fields take a default that depends on the mode (see ``resolved``).

    mode: ``full`` trains the towers and heads on freshly augmented images every step; ``heads``
        (cheap mode) trains only the class and box heads on cached image features.
    lr: learning rate of the vision tower and the heads (default 2e-5 full, 1e-4 heads);
    text_lr: of the text tower (default lr / 100; 0 freezes it, as does ``freeze_text``).
    warmup_steps: linear warm-up, then cosine decay to ``min_lr_ratio * lr`` (default steps // 10, at most 100).
    grad_accum: micro-batches of ``batch_size`` per optimizer step.
    num_negatives: negative queries per image: absent dataset classes first, then names from
        ``negative_vocabulary`` (default: a built-in list of common objects; () for none).
    max_side: decode images with this long side at most before augmenting (default twice the model
        input size, so zoom-in crops still have detail); the model input is always made by the
        inference image processor.
    cache_views: cheap mode: views cached per image (the image, its mirror, then random crops).
    val_every / save_every: steps between validations (keep-best) and resumable checkpoints.
    ensemble_alpha: the output is alpha * fine-tuned + (1 - alpha) * starting weights (WiSE-FT);
        None keeps the fine-tuned weights as they are.
    precision: ``auto`` (bf16 autocast on CUDA where supported, else fp16; fp32 elsewhere), fp32, bf16, fp16.
    """

    steps: int = 400
    mode: str = "full"
    batch_size: int = 4
    grad_accum: int = 1
    lr: float | None = None
    text_lr: float | None = None
    weight_decay: float = 1e-4
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    freeze_vision: bool = False
    freeze_text: bool = False
    num_negatives: int = 16
    negative_vocabulary: tuple[str, ...] | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_side: int | None = None
    cache_views: int = 2
    val_every: int = 100
    save_every: int = 100
    ensemble_alpha: float | None = None
    loss: LossWeights = field(default_factory=LossWeights)
    seed: int = 0
    precision: str = "auto"
    gradient_checkpointing: bool = False
    workers: int = 2
    keep_state: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("steps", "batch_size", "grad_accum", "cache_views", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("val_every", "save_every", "num_negatives", "weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("lr", "text_lr"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} must not be negative, got {value}")
        if self.lr == 0:
            raise ConfigError("lr must be positive")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must not be negative, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.ensemble_alpha is not None and not 0.0 < self.ensemble_alpha <= 1.0:
            raise ConfigError(f"ensemble_alpha must be in (0, 1], got {self.ensemble_alpha}")
        if self.max_side is not None and self.max_side < 16:
            raise ConfigError(f"max_side must be at least 16, got {self.max_side}")

    def resolved(self) -> "TrainConfig":
        """The config with mode-dependent defaults filled in."""
        lr = self.lr if self.lr is not None else (2e-5 if self.mode == "full" else 1e-4)
        text_lr = self.text_lr if self.text_lr is not None else lr / 100
        if self.mode == "heads" or self.freeze_text:
            text_lr = 0.0
        warmup = self.warmup_steps if self.warmup_steps is not None else min(100, self.steps // 10)
        vocab = tuple(self.negative_vocabulary) if self.negative_vocabulary is not None else None
        return replace(self, lr=lr, text_lr=text_lr, warmup_steps=warmup, negative_vocabulary=vocab)

    def trains(self) -> set[str]:
        """The parameter groups this config trains."""
        cfg = self.resolved()
        if cfg.mode == "heads":
            return {"heads"}
        groups = {"heads"}
        if not cfg.freeze_vision:
            groups.add("vision")
        if cfg.text_lr > 0:
            groups.add("text")
        return groups

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


class TrainingDiverged(AutolabelError):
    """The loss became NaN or infinite."""


@dataclass
class FinetuneResult:
    out_dir: Path
    steps: int
    resumed_from: int
    first_loss: float | None
    last_loss: float | None
    val_before: dict | None
    val_best: dict | None
    val_final: dict | None
    best_step: int | None
    weights: str
    log_path: Path
    seconds: float

    def summary(self) -> dict:
        out = asdict(self)
        out["out_dir"], out["log_path"] = str(self.out_dir), str(self.log_path)
        return out


# -- schedule ----------------------------------------------------------------------------------------


def lr_factor(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based): linear warm-up
    over ``warmup`` steps, then half a cosine down to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# -- batches -----------------------------------------------------------------------------------------


def batch_indices(micro: int, batch_size: int, n: int, seed: int) -> list[int]:
    """Example indices of micro-batch number ``micro``: consecutive slices of a fresh random
    permutation per epoch, a pure function of (micro, seed) so a resumed run draws the same."""
    out = []
    for g in range(micro * batch_size, (micro + 1) * batch_size):
        epoch, pos = divmod(g, n)
        out.append(int(np.random.default_rng([seed, 1, epoch]).permutation(n)[pos]))
    return out


@dataclass
class Batch:
    """A prepared micro-batch: model input, queries and targets."""

    pixel_values: torch.Tensor | None  # full mode: (B, 3, S, S)
    views: list[int] | None  # cheap mode: feature cache rows
    texts: list[str]  # unique query texts of the batch
    query_index: list[list[int]]  # per image, indices into texts
    targets: list[Target]


def _merge_queries(per_image: list[list[str]]) -> tuple[list[str], list[list[int]]]:
    texts: dict[str, int] = {}
    index = []
    for queries in per_image:
        index.append([texts.setdefault(q, len(texts)) for q in queries])
    return list(texts), index


# -- the trainer -------------------------------------------------------------------------------------


class _Trainer:
    def __init__(self, train: Dataset, out_dir: Path, base_model: str, config: TrainConfig, val: Dataset | None,
                 device: str, on_step, on_message, should_stop):
        from autolabel.models.owlv2 import Owlv2Detector
        from autolabel.settings import resolve_device

        self.train = train
        self.val = val
        self.out_dir = out_dir
        self.state_dir = out_dir / STATE_DIR
        self.base_model = str(base_model)
        self.config = config.resolved()
        self.device = resolve_device(device)
        self.on_step = on_step or (lambda info: None)
        self.on_message = on_message or (lambda text: log.info("%s", text))
        self.should_stop = should_stop or (lambda: False)
        self.precision = self._precision()

        self.detector = Owlv2Detector.from_pretrained(self.base_model, self.device, torch.float32)
        self.model = self.detector.model
        self.processor = self.detector.processor
        self.tokenizer = self.processor.tokenizer
        if self.config.gradient_checkpointing and self.config.mode == "full":
            # Recompute tower activations in the backward pass (non-reentrant checkpointing).
            enable = getattr(self.model, "activation_checkpointing_enable", None) or self.model.gradient_checkpointing_enable
            enable()
        self.trained_groups = self.config.trains()
        self.groups = set_trainable(self.model, self.trained_groups)
        self.trainable = {name: p for items in self.groups.values() for name, p in items}
        self.max_side = self.config.max_side or 2 * self.detector.image_size
        self.pool_names = negative_pool(train.ontology, self.config.negative_vocabulary)
        self.text_cache: dict[str, torch.Tensor] = {}
        self.train_cache = None
        self.val_cache = None

        self.optimizer = self._optimizer()
        cfg = self.config
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")

        self.step = 0
        self.resumed_from = 0
        self.history: list[dict] = []
        self.validations: list[dict] = []
        self.best: dict | None = None
        self.last_saved = 0
        self.timing = {"cache_seconds": 0.0, "train_seconds": 0.0, "validation_seconds": 0.0}

    # -- set-up -------------------------------------------------------------------------------------

    def _precision(self) -> str:
        wanted = self.config.precision
        cuda = self.device.startswith("cuda")
        if wanted == "auto":
            if not cuda:
                return "fp32"
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if wanted != "fp32" and not cuda:
            raise ConfigError(f"precision {wanted} needs a CUDA device (training on {self.device}); use fp32")
        return wanted

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        groups = []
        for group, items in self.groups.items():
            if not items:
                continue
            lr = cfg.text_lr if group == "text" else cfg.lr
            # No weight decay on biases and norms (1-D tensors), as usual for transformers.
            decay = [p for n, p in items if p.ndim > 1]
            no_decay = [p for n, p in items if p.ndim <= 1]
            for params, wd, suffix in ((decay, cfg.weight_decay, ""), (no_decay, 0.0, "-no-decay")):
                if params:
                    groups.append({"params": params, "lr": lr, "weight_decay": wd, "name": group + suffix})
        if not groups:
            raise ConfigError("nothing to train: every part of the model is frozen")
        fused = self.device.startswith("cuda")
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, fused=fused)

    def fingerprint(self) -> dict:
        config = {k: v for k, v in self.config.to_dict().items() if k not in _RUNTIME_FIELDS}
        return {"base_model": self.base_model, "train": self.train.fingerprint(),
                "val": self.val.fingerprint() if self.val is not None else None, "config": config}

    # -- text ---------------------------------------------------------------------------------------

    def query_embeddings(self, texts: list[str]) -> torch.Tensor:
        if "text" in self.trained_groups:
            return encode_queries(self.model, self.tokenizer, texts, self.device)
        missing = [t for t in texts if t not in self.text_cache]
        if missing:
            with torch.no_grad():
                for start in range(0, len(missing), 256):
                    chunk = missing[start : start + 256]
                    embeds = encode_queries(self.model, self.tokenizer, chunk, self.device).float()
                    self.text_cache.update(zip(chunk, embeds))
        return torch.stack([self.text_cache[t] for t in texts])

    # -- data ---------------------------------------------------------------------------------------

    def plan(self, step: int, micro: int) -> dict:
        """What micro-batch ``micro`` of optimizer step ``step`` (1-based) holds: a pure function of
        (seed, step, micro)."""
        cfg = self.config
        examples = self.train.examples
        number = (step - 1) * cfg.grad_accum + micro
        indices = batch_indices(number, cfg.batch_size, len(examples), cfg.seed)
        rng = np.random.default_rng([cfg.seed, 2, step, micro])
        items = []
        for i in indices:
            queries, index = sample_queries(rng, set(examples[i].classes), self.train.ontology,
                                            cfg.num_negatives, self.pool_names)
            if cfg.mode == "heads":
                views = self.train_cache.by_example[i]
                items.append((i, int(views[int(rng.integers(len(views)))]), queries, index))
            else:
                items.append((i, sample_augment(rng, cfg.augment), queries, index))
        return {"items": items}

    def prepare(self, plan: dict) -> Batch:
        """Decode, augment and preprocess (full mode) or look up cached views (cheap mode)."""
        texts, query_index = _merge_queries([queries for _, _, queries, _ in plan["items"]])
        targets = []
        if self.config.mode == "heads":
            views = []
            for i, view_id, _, index in plan["items"]:
                view = self.train_cache.views[view_id]
                classes = [self.train.examples[i].classes[k] for k in view.kept]
                targets.append(Target(torch.from_numpy(view.boxes), torch.tensor([index[c] for c in classes], dtype=torch.int64)))
                views.append(view_id)
            return Batch(None, views, texts, query_index, targets)
        images, originals = [], []
        for i, params, _, index in plan["items"]:
            example = self.train.examples[i]
            view = load_augmented(example, params, max_side=self.max_side, min_visible=self.config.augment.min_visible)
            images.append(view.image)
            originals.append(view.original_size)
            labels = [index[example.classes[k]] for k in view.kept]
            targets.append(Target(torch.from_numpy(view.target), torch.tensor(labels, dtype=torch.int64)))
        # The inference preprocessing (pad bottom/right to square, resize, normalise): same pixels.
        pixel_values = preprocess(self.detector, images, originals)
        return Batch(pixel_values, None, texts, query_index, targets)

    # -- one step -----------------------------------------------------------------------------------

    def forward_loss(self, batch: Batch):
        # The towers run under autocast (bf16/fp16 on CUDA); the heads, cheap, in float32 so the box
        # regression and the loss keep full precision.
        with self.autocast():
            if batch.pixel_values is not None:
                if "vision" in self.trained_groups:
                    feats, fmap = encode_images(self.model, batch.pixel_values)
                else:
                    with torch.no_grad():
                        feats, fmap = encode_images(self.model, batch.pixel_values)
            else:
                feats, fmap = self.train_cache.features(batch.views, self.device)
            embeds = self.query_embeddings(batch.texts)
        feats = feats.float()
        query_embeds, query_mask = gather_queries(embeds.float(), batch.query_index)
        logits, boxes = predict(self.model, feats, feats.reshape(fmap.shape), query_embeds, query_mask)
        return detection_loss(logits.float(), boxes.float(), batch.targets, query_mask, self.config.loss)

    # -- validation ---------------------------------------------------------------------------------

    def validate(self) -> dict:
        from autolabel.finetune.metrics import coco_map

        started = time.perf_counter()
        predictions = predict_examples(self.detector, self.val.examples, self.train.ontology,
                                       cache=self.val_cache, autocast=self.autocast)
        result = coco_map(self.val.examples, predictions, self.train.ontology.names)
        self.timing["validation_seconds"] += time.perf_counter() - started
        return result

    # -- checkpoints --------------------------------------------------------------------------------

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().to("cpu", copy=True).contiguous() for name, p in self.trainable.items()}

    def _load_trainable(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = set(self.trainable) - set(tensors)
        if missing:
            raise ConfigError(f"checkpoint in {self.state_dir} lacks {len(missing)} trainable tensors; start a new --out")
        with torch.no_grad():
            for name, p in self.trainable.items():
                p.copy_(tensors[name].to(p.device, p.dtype))

    def save_best(self, step: int, metrics: dict) -> None:
        from safetensors.torch import save_file

        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "best.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(self._trainable_state(), str(tmp), metadata={"step": str(step), "map": repr(metrics["map"])})
        os.replace(tmp, path)

    def save_checkpoint(self) -> None:
        """Write ``step-NNNNNN/`` in full, then point ``state.json`` at it, then drop older ones."""
        from safetensors.torch import save_file

        self.state_dir.mkdir(parents=True, exist_ok=True)
        name = f"step-{self.step:06d}"
        folder = self.state_dir / name
        tmp = self.state_dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(self._trainable_state(), str(tmp / "trainable.safetensors"))
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and self.device.startswith("cuda"):
            rng["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        save_file(rng, str(tmp / "rng.safetensors"))
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "meta.json").write_text(json.dumps({
            "step": self.step, "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "history": self.history, "validations": self.validations, "best": self.best,
            "timing": self.timing,
        }))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        _write_json(self.state_dir / "state.json", {"fingerprint": self.fingerprint(), "last": name, "step": self.step})
        for old in self.state_dir.glob("step-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        self.last_saved = self.step
        self.write_log(finished=False)

    def try_resume(self) -> bool:
        from safetensors.torch import load_file, safe_open

        state_path = self.state_dir / "state.json"
        if not state_path.exists():
            return False
        state = json.loads(state_path.read_text())
        diffs = config_diff(state.get("fingerprint", {}), json.loads(json.dumps(self.fingerprint())))
        if diffs:
            raise ConfigError(f"{self.out_dir} holds an interrupted fine-tuning with other settings "
                              f"({'; '.join(diffs[:5])}); re-run with the same options to resume, or choose a new --out")
        folder = self.state_dir / state["last"]
        meta = json.loads((folder / "meta.json").read_text())
        self._load_trainable(load_file(str(folder / "trainable.safetensors")))
        # weights_only=True: only tensors and plain containers are unpickled, never arbitrary objects.
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=self.device, weights_only=True))
        self.scheduler.load_state_dict(meta["scheduler"])
        if meta.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(meta["scaler"])
        rng = load_file(str(folder / "rng.safetensors"))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available() and self.device.startswith("cuda"):
            torch.cuda.set_rng_state_all(list(rng["cuda"]))
        self.step = self.resumed_from = self.last_saved = int(meta["step"])
        self.history, self.validations, self.best = meta["history"], meta["validations"], meta["best"]
        self.timing.update(meta.get("timing", {}))
        best_path = self.state_dir / "best.safetensors"
        if best_path.exists():
            with safe_open(str(best_path), framework="pt") as f:
                best_step = int(f.metadata().get("step", -1))
            if self.best is None or best_step != self.best.get("step"):
                # Saved after the last checkpoint: the resumed run will reach that step again.
                best_path.unlink()
        return True

    # -- output -------------------------------------------------------------------------------------

    def write_log(self, finished: bool, result: dict | None = None) -> None:
        data = {
            "finished": finished,
            "base_model": self.base_model,
            "train": {"source": self.train.description, "images": len(self.train), "boxes": self.train.num_boxes,
                      "classes": self.train.ontology.to_dict()["classes"]},
            "val": ({"source": self.val.description, "images": len(self.val), "boxes": self.val.num_boxes}
                    if self.val is not None else None),
            "config": self.config.to_dict(),
            "device": self.device,
            "precision": self.precision,
            "trained_groups": sorted(self.trained_groups),
            "steps_done": self.step,
            "resumed_from": self.resumed_from or None,
            "timing": {**self.timing, "seconds_per_step": (
                round(self.timing["train_seconds"] / self.step, 4) if self.step else None)},
            "fingerprint": self.fingerprint(),
            "result": result,
            "validations": self.validations,
            "history": self.history,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.out_dir / LOG_FILE, data)

    # -- the loop -----------------------------------------------------------------------------------

    def run(self) -> FinetuneResult:
        self.started = time.perf_counter()
        cfg = self.config
        resumed = self.try_resume()
        if resumed:
            self.on_message(f"resuming from step {self.step} of {cfg.steps}")
        self._build_caches()

        if self.val is not None and not resumed:
            self.model.eval()
            before = self.validate()
            self.validations.append({"step": 0, **before})
            self.best = {"step": 0, "map": before["map"]}
            self.save_best(0, before)
            self.on_message(f"validation before fine-tuning: mAP {before['map']:.4f}, mAP50 {before['map50']:.4f}")

        self.write_log(finished=False)  # marks OUT as this run's folder from the start
        self.model.train()
        with _StopOnSignal() as interrupted:
            self._loop(interrupted)
        return self._finish()

    def _build_caches(self) -> None:
        from autolabel.finetune.heads import build_feature_cache

        cfg = self.config
        key = {"base_model": self.base_model}
        started = time.perf_counter()
        if cfg.mode == "heads":
            self.on_message(f"caching image features of {len(self.train)} images x {cfg.cache_views} views")
            with self.autocast():
                self.train_cache = build_feature_cache(
                    self.detector, list(self.train.examples), self.state_dir / "cache" / "train",
                    key={**key, "data": self.train.fingerprint()}, views_per_image=cfg.cache_views,
                    augment=cfg.augment, seed=cfg.seed, max_side=self.max_side, min_visible=cfg.augment.min_visible,
                    workers=cfg.workers)
                if self.val is not None:
                    # Validation images as inference sees them: full decode, no augmentation.
                    self.val_cache = build_feature_cache(
                        self.detector, list(self.val.examples), self.state_dir / "cache" / "val",
                        key={**key, "data": self.val.fingerprint()}, views_per_image=1, max_side=None,
                        workers=cfg.workers)
        self.timing["cache_seconds"] += time.perf_counter() - started

    def _loop(self, interrupted: threading.Event) -> None:
        cfg = self.config
        if self.step >= cfg.steps:
            return
        plans = ((step, micro) for step in range(self.step + 1, cfg.steps + 1) for micro in range(cfg.grad_accum))
        params = list(self.trainable.values())
        step_started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="finetune-data") as pool:
            pending: deque = deque()

            def refill():
                while len(pending) < 2 * cfg.workers:
                    nxt = next(plans, None)
                    if nxt is None:
                        return
                    pending.append(pool.submit(self.prepare, self.plan(*nxt)))

            refill()
            while self.step < cfg.steps:
                parts = []
                for _ in range(cfg.grad_accum):
                    batch = pending.popleft().result()
                    refill()
                    out = self.forward_loss(batch)
                    if not torch.isfinite(out.total):
                        raise TrainingDiverged(
                            f"the loss became {float(out.total)} at step {self.step + 1}: training diverged; lower --lr"
                            + (" or use --precision bf16/fp32" if self.precision == "fp16" else ""))
                    self.scaler.scale(out.total / cfg.grad_accum).backward()
                    parts.append(out.as_floats())
                self.scaler.unscale_(self.optimizer)
                grad_norm = None
                if cfg.max_grad_norm > 0:
                    norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
                    grad_norm = norm if math.isfinite(norm) else None  # fp16: the scaler skips this step
                lr = self.optimizer.param_groups[0]["lr"]
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1

                now = time.perf_counter()
                self.timing["train_seconds"] += now - step_started
                step_started = now
                record = {"step": self.step, **{k: float(np.mean([p[k] for p in parts])) for k in parts[0]},
                          "lr": lr, "grad_norm": grad_norm}
                self.history.append(record)
                info = dict(record, steps=cfg.steps)

                if self.val is not None and ((cfg.val_every and self.step % cfg.val_every == 0) or self.step == cfg.steps):
                    self.model.eval()
                    metrics = self.validate()
                    self.model.train()
                    self.validations.append({"step": self.step, **metrics})
                    info["val_map"] = metrics["map"]
                    if self.best is None or metrics["map"] > self.best["map"]:
                        self.best = {"step": self.step, "map": metrics["map"]}
                        self.save_best(self.step, metrics)
                    step_started = time.perf_counter()
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
                    step_started = time.perf_counter()
                self.on_step(info)
                if interrupted.is_set() or self.should_stop():
                    if self.step > self.last_saved:
                        self.save_checkpoint()
                    raise KeyboardInterrupt(f"stopped at step {self.step}; run again to resume")

    def _finish(self) -> FinetuneResult:
        from safetensors.torch import load_file

        cfg = self.config
        weights = f"last (step {self.step})"
        best_path = self.state_dir / "best.safetensors"
        if self.val is not None and self.best is not None:
            if self.best["step"] != self.step:
                if not best_path.exists():
                    raise ConfigError(f"the best weights (step {self.best['step']}) are missing from {self.state_dir}")
                self._load_trainable(load_file(str(best_path)))
            weights = f"best on validation (step {self.best['step']})"
        val_final = None
        if cfg.ensemble_alpha is not None and cfg.ensemble_alpha < 1.0:
            self._ensemble(cfg.ensemble_alpha)
            weights += f", ensembled with the starting weights (alpha {cfg.ensemble_alpha})"
            if self.val is not None:
                self.model.eval()
                val_final = self.validate()
                self.validations.append({"step": self.step, "ensembled": True, **val_final})
                self.on_message(f"validation of the ensembled weights: mAP {val_final['map']:.4f}")
        elif self.val is not None and self.best is not None:
            val_final = next(v for v in self.validations if v["step"] == self.best["step"] and not v.get("ensembled"))

        self.model.eval()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # A normal checkpoint: the same loader as any hub id or folder (--model, the UI) reads it.
        self.model.save_pretrained(self.out_dir, safe_serialization=True)
        self.processor.save_pretrained(self.out_dir)

        val_before = next((v for v in self.validations if v["step"] == 0), None)
        val_best = (next(v for v in self.validations if v["step"] == self.best["step"] and not v.get("ensembled"))
                    if self.best is not None else None)
        losses = [h["loss"] for h in self.history]
        result = FinetuneResult(
            out_dir=self.out_dir, steps=self.step, resumed_from=self.resumed_from,
            first_loss=_window_mean(losses, head=True), last_loss=_window_mean(losses, head=False),
            val_before=_short(val_before), val_best=_short(val_best), val_final=_short(val_final),
            best_step=self.best["step"] if self.best else None, weights=weights,
            log_path=self.out_dir / LOG_FILE, seconds=round(time.perf_counter() - self.started, 2))
        self.write_log(finished=True, result={k: v for k, v in result.summary().items() if k not in ("out_dir", "log_path")})
        if not cfg.keep_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return result

    def _ensemble(self, alpha: float) -> None:
        """Weight-space ensemble (WiSE-FT): alpha * fine-tuned + (1 - alpha) * starting weights."""
        from transformers import Owlv2ForObjectDetection

        from autolabel.models.loading import load_pretrained

        base = load_pretrained(Owlv2ForObjectDetection, self.base_model, "the OWLv2 model", dtype=torch.float32)
        base_state = base.state_dict()
        with torch.no_grad():
            for name, p in self.trainable.items():
                p.mul_(alpha).add_(base_state[name].to(p.device, p.dtype), alpha=1 - alpha)
        del base, base_state


# -- helpers -----------------------------------------------------------------------------------------


class _StopOnSignal:
    """While training in the main thread, the first Ctrl-C asks the loop to stop after the current
    step (it then saves a checkpoint); a second one interrupts at once."""

    def __enter__(self) -> threading.Event:
        self.event = threading.Event()
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                if self.event.is_set():
                    signal.signal(signal.SIGINT, self.previous)
                    raise KeyboardInterrupt
                self.event.set()

            self.previous = signal.signal(signal.SIGINT, handler)
        return self.event

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _window_mean(values: list[float], head: bool, k: int = 10) -> float | None:
    if not values:
        return None
    window = values[: min(k, len(values))] if head else values[-min(k, len(values)):]
    return float(np.mean(window))


def _short(metrics: dict | None) -> dict | None:
    if metrics is None:
        return None
    return {k: metrics[k] for k in ("step", "map", "map50", "map75", "per_class") if k in metrics}


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


VAL_DETECT = dict(threshold=0.0, nms_iou=0.5)


def predict_examples(detector, examples, ontology, *, cache=None, batch_size: int = 4,
                     autocast: Callable = contextlib.nullcontext) -> list:
    """Detections of ``examples`` with the current weights, by the inference path.

    Without ``cache``: ``pipeline.detect_batch`` on freshly decoded images (a new ``Owlv2Detector``
    around the same model, so no stale text embeddings). With a feature cache (cheap mode, frozen
    vision tower): the heads on the cached features, then the same ``pipeline.postprocess``.
    Threshold 0 (every box, as mAP wants) and the default per-class NMS.
    """
    from autolabel.images import load_image
    from autolabel.models.owlv2 import Owlv2Detector
    from autolabel.pipeline import DetectConfig, detect_batch, postprocess

    config = DetectConfig(**VAL_DETECT)
    fresh = Owlv2Detector(detector.model, detector.processor, detector.device, detector.dtype)
    out = []
    with autocast():
        if cache is None:
            for start in range(0, len(examples), batch_size):
                chunk = examples[start : start + batch_size]
                images = [load_image(e.path).image for e in chunk]
                out += detect_batch(fresh, images, [(e.width, e.height) for e in chunk], ontology, config)
            return out
        text = fresh.encode_text(ontology.queries)
        for start in range(0, len(examples), batch_size):
            chunk = list(range(start, min(start + batch_size, len(examples))))
            views = [cache.by_example[i][0] for i in chunk]
            feats, fmap = cache.features(views, fresh.device)
            b = len(chunk)
            with torch.no_grad():
                logits, boxes = predict(fresh.model, feats, fmap, text.embeds.unsqueeze(0).expand(b, -1, -1),
                                        text.mask.unsqueeze(0).expand(b, -1))
            logits, boxes = logits.float().cpu().numpy(), boxes.float().cpu().numpy()
            for j, i in enumerate(chunk):
                e = examples[i]
                out.append(postprocess(logits[j], boxes[j], e.width, e.height, ontology, config))
    return out


# -- entry point -------------------------------------------------------------------------------------


def finetune(
    train: Dataset,
    out_dir: str | Path,
    *,
    base_model: str,
    config: TrainConfig = TrainConfig(),
    val: Dataset | None = None,
    device: str = "auto",
    on_step: Callable[[dict], None] | None = None,
    on_message: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FinetuneResult:
    """Fine-tune ``base_model`` (hub id or folder) on ``train``; write a checkpoint to ``out_dir``.

    Re-running with the same arguments resumes an interrupted run from its last checkpoint, or
    returns at once if ``out_dir`` already holds the finished result. ``on_step(info)`` gets each
    step's losses and learning rate (and ``val_map`` when it validated); ``should_stop()`` is asked
    after every step (a stop saves a checkpoint and raises KeyboardInterrupt).
    """
    out_dir = Path(out_dir)
    if val is not None:
        shared = set(val.ontology.names) & set(train.ontology.names)
        val_classes = {c for e in val.examples for c in e.classes}
        if not shared or not (val_classes & set(train.ontology.names)):
            raise ConfigError(f"the validation data shares no labelled class with the training classes "
                              f"({', '.join(train.ontology.names)})")
    if len(train) == 0:
        raise ConfigError("no training images")
    _check_out_dir(out_dir)
    trainer = _Trainer(train, out_dir, base_model, config, val, device, on_step, on_message, should_stop)
    finished = _finished_result(out_dir, trainer.fingerprint())
    if finished is not None:
        trainer.on_message(f"{out_dir} already holds this fine-tuning's result; nothing to do")
        return finished
    return trainer.run()


def _check_out_dir(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file")
    ours = (out_dir / STATE_DIR).is_dir() or (out_dir / LOG_FILE).exists()
    if any(out_dir.iterdir()) and not ours:
        raise ConfigError(f"--out {out_dir} is not empty and holds no fine-tuning run; choose a new folder")


def _finished_result(out_dir: Path, fingerprint: dict) -> FinetuneResult | None:
    log_path = out_dir / LOG_FILE
    if not log_path.exists() or (out_dir / STATE_DIR / "state.json").exists():
        return None
    data = json.loads(log_path.read_text())
    if not data.get("finished"):
        return None
    diffs = config_diff(data.get("fingerprint", {}), json.loads(json.dumps(fingerprint)))
    if diffs:
        raise ConfigError(f"{out_dir} holds a finished fine-tuning with other settings ({'; '.join(diffs[:5])}); "
                          "choose a new --out")
    r = data["result"]
    return FinetuneResult(out_dir=out_dir, steps=r["steps"], resumed_from=r["resumed_from"], first_loss=r["first_loss"],
                          last_loss=r["last_loss"], val_before=r["val_before"], val_best=r["val_best"],
                          val_final=r["val_final"], best_step=r["best_step"], weights=r["weights"],
                          log_path=log_path, seconds=0.0)
