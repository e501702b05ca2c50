"""The fine-tuning loop: OWLv2 on reviewed labels, with validation, keep-best, resume and ensembling.

Resume: run the same command again; a finished run is recognised from its log before anything
loads. ``train_state`` is deleted once the final model is written (``keep_state`` keeps it).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from autolabel.errors import AutolabelError, ConfigError
from autolabel.finetune import optim
from autolabel.finetune.checkpoint import (
    LOG_FILE, Checkpointer, TrainState, check_out_dir, finished_result, run_fingerprint, write_json_atomic)
from autolabel.finetune.config import TrainConfig
from autolabel.finetune.data import Dataset, negative_pool
from autolabel.finetune.loss import detection_loss
from autolabel.finetune.model import (
    QueryEncoder, blend_with_base, encode_images, gather_queries, predict, set_trainable)
from autolabel.finetune.plan import Batch, BatchPlanner, cached_batch, image_batch
from autolabel.finetune.validate import Validator

log = logging.getLogger(__name__)


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

    def record(self) -> dict:
        """What the log keeps of the result (``from_record`` reads it back)."""
        return {k: v for k, v in asdict(self).items() if k not in ("out_dir", "log_path")}

    @classmethod
    def from_record(cls, out_dir: Path, record: dict) -> "FinetuneResult":
        return cls(out_dir=out_dir, log_path=out_dir / LOG_FILE, **{**record, "seconds": 0.0})


def finetune(train: Dataset, out_dir: str | Path, *, base_model: str, config: TrainConfig = TrainConfig(),
             val: Dataset | None = None, device: str = "auto", on_step: Callable[[dict], None] | None = None,
             on_message: Callable[[str], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> FinetuneResult:
    """Fine-tune ``base_model`` (hub id or folder) on ``train``; write a checkpoint to ``out_dir``.

    Re-running with the same arguments resumes an interrupted run from its last checkpoint, or
    returns at once if ``out_dir`` already holds the finished result. ``on_step(info)`` gets each
    step's losses and learning rate (and ``val_map`` when it validated); ``should_stop()`` is asked
    after every step (a stop saves a checkpoint and raises KeyboardInterrupt).
    """
    out_dir = Path(out_dir)
    on_message = on_message or (lambda text: log.info("%s", text))
    if val is not None:
        val_classes = {val.ontology.names[c] for e in val.examples for c in e.labels.class_ids}
        if not val_classes & set(train.ontology.names):
            raise ConfigError(f"the validation data shares no labelled class with the training classes "
                              f"({', '.join(train.ontology.names)})")
    if len(train) == 0:
        raise ConfigError("no training images")
    check_out_dir(out_dir)
    config = config.resolved()
    fingerprint = run_fingerprint(base_model, train, val, config)
    record = finished_result(out_dir, fingerprint)
    if record is not None:
        on_message(f"{out_dir} already holds this fine-tuning's result; nothing to do")
        return FinetuneResult.from_record(out_dir, record)
    trainer = _Trainer(train, out_dir, str(base_model), config, val, device, fingerprint,
                       on_step or (lambda info: None), on_message, should_stop or (lambda: False))
    return trainer.run()


class _Trainer:
    """One run: the model, its optimizer and the loop. ``config`` is resolved."""

    def __init__(self, train: Dataset, out_dir: Path, base_model: str, config: TrainConfig, val: Dataset | None,
                 device: str, fingerprint: dict, on_step, on_message, should_stop):
        from autolabel.models.owlv2 import Owlv2Detector
        from autolabel.settings import resolve_device

        self.train = train
        self.val = val
        self.out_dir = out_dir
        self.base_model = base_model
        self.config = config
        self.device = resolve_device(device)
        self.fingerprint = fingerprint
        self.on_step = on_step
        self.on_message = on_message
        self.should_stop = should_stop
        self.precision = optim.resolve_precision(config.precision, self.device)
        self.autocast = functools.partial(optim.autocast, self.precision)

        self.detector = Owlv2Detector.from_pretrained(base_model, self.device, "fp32")
        self.model = self.detector.model
        if config.gradient_checkpointing and config.mode == "full":
            # Recompute tower activations in the backward pass (non-reentrant checkpointing).
            model = self.model
            (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
        self.trained_groups = config.trains()
        groups = set_trainable(self.model, self.trained_groups)
        self.trainable = {name: p for items in groups.values() for name, p in items}
        self.queries = QueryEncoder(self.model, self.detector.processor.tokenizer, self.device,
                                    trains_text="text" in self.trained_groups)
        self.max_side = config.max_side or 2 * self.detector.image_size
        self.train_cache = None
        self.validator = (Validator(val, train.ontology, self.detector, every=config.val_every, steps=config.steps,
                                    autocast=self.autocast) if val is not None else None)

        self.optimizer = optim.build_optimizer(groups, config, self.device)
        self.scheduler = optim.build_scheduler(self.optimizer, config)
        self.scaler = optim.grad_scaler(self.precision)
        self.checkpoints = Checkpointer(out_dir, fingerprint, self.trainable, self.device)
        self.state = TrainState()

    def run(self) -> FinetuneResult:
        self.started = time.perf_counter()
        cfg, state = self.config, self.state
        resumed = self.checkpoints.resume(state, self.optimizer, self.scheduler, self.scaler)
        if resumed:
            self.on_message(f"resuming from step {state.step} of {cfg.steps}")
        self._cache_features()

        if self.validator is not None and not resumed:
            before = self._validate(0)
            self.on_message(f"validation before fine-tuning: mAP {before['map']:.4f}, mAP50 {before['map50']:.4f}")

        self.write_log(finished=False)  # marks OUT as this run's folder from the start
        self.model.train()
        with _StopOnSignal() as interrupted:
            self._loop(interrupted)
        return self._finish()

    def _cache_features(self) -> None:
        from autolabel.finetune.heads import build_feature_cache

        cfg = self.config
        if cfg.mode != "heads":
            return
        started = time.perf_counter()
        cache_dir, key = self.checkpoints.state_dir / "cache", {"base_model": self.base_model}
        self.on_message(f"caching image features of {len(self.train)} images x {cfg.cache_views} views")
        with self.autocast():
            self.train_cache = build_feature_cache(
                self.detector, list(self.train.examples), cache_dir / "train",
                key={**key, "data": self.train.fingerprint()}, views_per_image=cfg.cache_views,
                augment=cfg.augment, seed=cfg.seed, max_side=self.max_side, min_visible=cfg.augment.min_visible,
                workers=cfg.workers)
            if self.validator is not None:
                self.validator.cache_features(cache_dir / "val", key, cfg.workers)
        self.state.timing["cache_seconds"] += time.perf_counter() - started

    def _validate(self, step: int, *, ensembled: bool = False) -> dict:
        """Measure, record, and keep the weights if they are the best so far (ensembled ones never compete)."""
        started = time.perf_counter()
        metrics = self.validator.measure()
        self.state.timing["validation_seconds"] += time.perf_counter() - started
        self.state.validations.append({"step": step, **({"ensembled": True} if ensembled else {}), **metrics})
        if not ensembled and (self.state.best is None or metrics["map"] > self.state.best["map"]):
            self.state.best = {"step": step, "map": metrics["map"]}
            self.checkpoints.save_best(step, metrics)
        return metrics

    def _save_checkpoint(self) -> None:
        self.checkpoints.save(self.state, self.optimizer, self.scheduler, self.scaler)
        self.write_log(finished=False)

    def _prepare(self, draws) -> Batch:
        if self.train_cache is not None:
            return cached_batch(draws, self.train, self.train_cache)
        return image_batch(draws, self.train, self.detector, max_side=self.max_side,
                           min_visible=self.config.augment.min_visible)

    def forward_loss(self, batch: Batch):
        # The towers run under autocast (bf16/fp16 on CUDA); the heads, cheap, in float32 so the box
        # regression and the loss keep full precision.
        with self.autocast():
            if batch.pixel_values is not None:
                grad = torch.enable_grad() if "vision" in self.trained_groups else torch.no_grad()
                with grad:
                    feats, fmap = encode_images(self.model, batch.pixel_values)
            else:
                feats, fmap = self.train_cache.features(batch.views, self.device)
            embeds = self.queries(batch.texts)
        feats = feats.float()
        query_embeds, query_mask = gather_queries(embeds.float(), batch.query_index)
        logits, boxes = predict(self.model, feats, feats.reshape(fmap.shape), query_embeds, query_mask)
        return detection_loss(logits.float(), boxes.float(), batch.targets, query_mask, self.config.loss)

    def _optimizer_step(self, batches: Iterator[Batch], params: list[torch.nn.Parameter]) -> dict:
        """``grad_accum`` micro-batches, one update; the step's history record."""
        cfg = self.config
        parts = []
        for _ in range(cfg.grad_accum):
            out = self.forward_loss(next(batches))
            if not torch.isfinite(out.total):
                raise TrainingDiverged(
                    f"the loss became {float(out.total)} at step {self.state.step + 1}: training diverged; lower --lr"
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
        self.state.step += 1
        return {"step": self.state.step, **{k: float(np.mean([p[k] for p in parts])) for k in parts[0]},
                "lr": lr, "grad_norm": grad_norm}

    def _loop(self, interrupted: threading.Event) -> None:
        cfg, state = self.config, self.state
        if state.step >= cfg.steps:
            return
        planner = BatchPlanner(self.train, cfg, negative_pool(self.train.ontology, cfg.negative_vocabulary),
                               self.train_cache.by_example if self.train_cache is not None else None)
        params = list(self.trainable.values())
        step_started = time.perf_counter()
        batches = _prefetched(self._prepare, planner.remaining(state.step), workers=cfg.workers)
        with contextlib.closing(batches):
            while state.step < cfg.steps:
                record = self._optimizer_step(batches, params)
                now = time.perf_counter()
                state.timing["train_seconds"] += now - step_started
                step_started = now
                state.history.append(record)
                info = dict(record, steps=cfg.steps)

                if self.validator is not None and self.validator.due(state.step):
                    info["val_map"] = self._validate(state.step)["map"]
                    step_started = time.perf_counter()
                if cfg.save_every and state.step % cfg.save_every == 0 and state.step < cfg.steps:
                    self._save_checkpoint()
                    step_started = time.perf_counter()
                self.on_step(info)
                if interrupted.is_set() or self.should_stop():
                    if state.step > state.last_saved:
                        self._save_checkpoint()
                    raise KeyboardInterrupt(f"stopped at step {state.step}; run again to resume")

    def _finish(self) -> FinetuneResult:
        cfg, state = self.config, self.state
        weights = f"last (step {state.step})"
        if self.validator is not None and state.best is not None:
            if state.best["step"] != state.step:
                self.checkpoints.restore_best(state.best["step"])
            weights = f"best on validation (step {state.best['step']})"
        val_best = (next(v for v in state.validations if v["step"] == state.best["step"] and not v.get("ensembled"))
                    if state.best is not None else None)
        val_final = val_best
        if cfg.ensemble_alpha is not None and cfg.ensemble_alpha < 1.0:
            blend_with_base(self.trainable, self.base_model, cfg.ensemble_alpha)
            weights += f", ensembled with the starting weights (alpha {cfg.ensemble_alpha})"
            val_final = None
            if self.validator is not None:
                val_final = self._validate(state.step, ensembled=True)
                self.on_message(f"validation of the ensembled weights: mAP {val_final['map']:.4f}")

        self.model.eval()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # A normal checkpoint: the same loader as any hub id or folder (--model, the UI) reads it.
        self.model.save_pretrained(self.out_dir, safe_serialization=True)
        self.detector.processor.save_pretrained(self.out_dir)

        val_before = next((v for v in state.validations if v["step"] == 0), None)
        losses = [h["loss"] for h in state.history]
        result = FinetuneResult(
            out_dir=self.out_dir, steps=state.step, resumed_from=state.resumed_from,
            first_loss=_window_mean(losses, head=True), last_loss=_window_mean(losses, head=False),
            val_before=_short(val_before), val_best=_short(val_best), val_final=_short(val_final),
            best_step=state.best["step"] if state.best else None, weights=weights,
            log_path=self.out_dir / LOG_FILE, seconds=round(time.perf_counter() - self.started, 2))
        self.write_log(finished=True, result=result.record())
        if not cfg.keep_state:
            self.checkpoints.discard()
        return result

    def write_log(self, finished: bool, result: dict | None = None) -> None:
        state = self.state
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
            "steps_done": state.step,
            "resumed_from": state.resumed_from or None,
            "timing": {**state.timing, "seconds_per_step": (
                round(state.timing["train_seconds"] / state.step, 4) if state.step else None)},
            "fingerprint": self.fingerprint,
            "result": result,
            "validations": state.validations,
            "history": state.history,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.out_dir / LOG_FILE, data)


def _prefetched(prepare: Callable, draws: Iterable, *, workers: int) -> Iterator[Batch]:
    """``prepare(draw)`` for each draw in worker threads, ``2 * workers`` ahead, yielded in order."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="finetune-data") as pool:
        draws = iter(draws)
        pending = deque(pool.submit(prepare, d) for d in itertools.islice(draws, 2 * workers))
        while pending:
            batch = pending.popleft().result()
            upcoming = next(draws, None)
            if upcoming is not None:
                pending.append(pool.submit(prepare, upcoming))
            yield batch


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
    return float(np.mean(values[:k] if head else values[-k:])) if values else None


def _short(metrics: dict | None) -> dict | None:
    keys = ("step", "map", "map50", "map75", "per_class")
    return {k: metrics[k] for k in keys if k in metrics} if metrics is not None else None
