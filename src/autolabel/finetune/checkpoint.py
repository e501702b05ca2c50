"""A fine-tuning run's folder: what it holds, resumable checkpoints, the best weights, the finished result.

Layout of ``OUT``::

    OUT/config.json, model.safetensors, processor files   a normal checkpoint (written at the end)
    OUT/training_log.json                                 config, losses, validation mAP, result
    OUT/train_state/state.json                            points at the last checkpoint (written last)
    OUT/train_state/step-000200/                          trainable weights + RNG (safetensors),
                                                          optimizer.pt (tensors only), meta.json
    OUT/train_state/best.safetensors                      trainable weights of the best validation
    OUT/train_state/cache/                                cached image features (cheap mode)

Files are written under a temporary name and renamed, so an interruption leaves the previous
checkpoint intact. Only plain data is unpickled (safetensors, ``torch.load(weights_only=True)``,
JSON). A folder holding a run with another fingerprint (base model, data, learning settings) is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from autolabel.configs import config_diff
from autolabel.errors import ConfigError
from autolabel.finetune.config import TrainConfig
from autolabel.finetune.data import Dataset

STATE_DIR = "train_state"
LOG_FILE = "training_log.json"
BEST_FILE = "best.safetensors"


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def run_fingerprint(base_model: str, train: Dataset, val: Dataset | None, config: TrainConfig) -> dict:
    """What identifies a run: the same fingerprint means the same training."""
    return {"base_model": str(base_model), "train": train.fingerprint(),
            "val": val.fingerprint() if val is not None else None, "config": config.learning_settings()}


def _diffs(recorded: dict, fingerprint: dict) -> list[str]:
    return config_diff(recorded, json.loads(json.dumps(fingerprint)))[:5]


def check_out_dir(out_dir: Path) -> None:
    """``out_dir`` must be new, empty, or a fine-tuning run's folder."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file")
    ours = (out_dir / STATE_DIR).is_dir() or (out_dir / LOG_FILE).exists()
    if any(out_dir.iterdir()) and not ours:
        raise ConfigError(f"--out {out_dir} is not empty and holds no fine-tuning run; choose a new folder")


def finished_result(out_dir: Path, fingerprint: dict) -> dict | None:
    """The recorded result if ``out_dir`` holds this run, finished; None if it holds no finished run.
    Reads only the log, so it is cheap to ask before anything loads."""
    log_path = out_dir / LOG_FILE
    if not log_path.exists() or (out_dir / STATE_DIR / "state.json").exists():
        return None
    data = json.loads(log_path.read_text())
    if not data.get("finished"):
        return None
    diffs = _diffs(data.get("fingerprint", {}), fingerprint)
    if diffs:
        raise ConfigError(f"{out_dir} holds a finished fine-tuning with other settings ({'; '.join(diffs)}); "
                          "choose a new --out")
    return data["result"]


@dataclass
class TrainState:
    """A run's progress: what a checkpoint restores besides weights and optimizer."""

    step: int = 0
    resumed_from: int = 0
    last_saved: int = 0
    history: list[dict] = field(default_factory=list)  # one record per optimizer step
    validations: list[dict] = field(default_factory=list)
    best: dict | None = None  # {"step", "map"} of the best validation
    timing: dict = field(default_factory=lambda: {"cache_seconds": 0.0, "train_seconds": 0.0,
                                                  "validation_seconds": 0.0})


class Checkpointer:
    """Saves and restores the trainable weights (``{name: parameter}``), the optimizer, scheduler,
    loss scaler, RNG and ``TrainState`` of a run under ``out_dir / STATE_DIR``."""

    def __init__(self, out_dir: Path, fingerprint: dict, trainable: dict[str, torch.nn.Parameter], device: str):
        self.out_dir = out_dir
        self.state_dir = out_dir / STATE_DIR
        self.fingerprint = fingerprint
        self.trainable = trainable
        self.device = device

    def _cuda(self) -> bool:
        return torch.cuda.is_available() and self.device.startswith("cuda")

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().to("cpu", copy=True).contiguous() for name, p in self.trainable.items()}

    def _load_trainable(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = set(self.trainable) - set(tensors)
        if missing:
            raise ConfigError(f"checkpoint in {self.state_dir} lacks {len(missing)} trainable tensors; "
                              "start a new --out")
        with torch.no_grad():
            for name, p in self.trainable.items():
                p.copy_(tensors[name].to(p.device, p.dtype))

    def save_best(self, step: int, metrics: dict) -> None:
        from safetensors.torch import save_file

        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / BEST_FILE
        tmp = path.with_suffix(".tmp")
        save_file(self._trainable_state(), str(tmp), metadata={"step": str(step), "map": repr(metrics["map"])})
        os.replace(tmp, path)

    def restore_best(self, step: int) -> None:
        """Load the best weights (saved at ``step``) into the model."""
        from safetensors.torch import load_file

        path = self.state_dir / BEST_FILE
        if not path.exists():
            raise ConfigError(f"the best weights (step {step}) are missing from {self.state_dir}")
        self._load_trainable(load_file(str(path)))

    def save(self, state: TrainState, optimizer, scheduler, scaler) -> None:
        """Write ``step-NNNNNN/`` in full, then point ``state.json`` at it, then drop older ones."""
        from safetensors.torch import save_file

        self.state_dir.mkdir(parents=True, exist_ok=True)
        name = f"step-{state.step:06d}"
        folder = self.state_dir / name
        tmp = self.state_dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(self._trainable_state(), str(tmp / "trainable.safetensors"))
        rng = {"torch": torch.get_rng_state()}
        if self._cuda():
            rng["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        save_file(rng, str(tmp / "rng.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "meta.json").write_text(json.dumps({
            "step": state.step, "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "history": state.history, "validations": state.validations, "best": state.best, "timing": state.timing,
        }))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        write_json_atomic(self.state_dir / "state.json", {"fingerprint": self.fingerprint, "last": name,
                                                          "step": state.step})
        for old in self.state_dir.glob("step-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        state.last_saved = state.step

    def resume(self, state: TrainState, optimizer, scheduler, scaler) -> bool:
        """Restore the last checkpoint into the model, the optimizer and ``state``; False if there is none."""
        from safetensors.torch import load_file, safe_open

        state_path = self.state_dir / "state.json"
        if not state_path.exists():
            return False
        saved = json.loads(state_path.read_text())
        diffs = _diffs(saved.get("fingerprint", {}), self.fingerprint)
        if diffs:
            raise ConfigError(f"{self.out_dir} holds an interrupted fine-tuning with other settings "
                              f"({'; '.join(diffs)}); re-run with the same options to resume, or choose a new --out")
        folder = self.state_dir / saved["last"]
        meta = json.loads((folder / "meta.json").read_text())
        self._load_trainable(load_file(str(folder / "trainable.safetensors")))
        # weights_only=True: only tensors and plain containers are unpickled, never arbitrary objects.
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=self.device, weights_only=True))
        scheduler.load_state_dict(meta["scheduler"])
        if meta.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(meta["scaler"])
        rng = load_file(str(folder / "rng.safetensors"))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self._cuda():
            torch.cuda.set_rng_state_all(list(rng["cuda"]))
        state.step = state.resumed_from = state.last_saved = int(meta["step"])
        state.history, state.validations, state.best = meta["history"], meta["validations"], meta["best"]
        state.timing.update(meta.get("timing", {}))
        best_path = self.state_dir / BEST_FILE
        if best_path.exists():
            with safe_open(str(best_path), framework="pt") as f:
                best_step = int(f.metadata().get("step", -1))
            if state.best is None or best_step != state.best.get("step"):
                # Saved after the last checkpoint: the resumed run will reach that step again.
                best_path.unlink()
        return True

    def discard(self) -> None:
        """Remove the resumable state (the run is finished)."""
        shutil.rmtree(self.state_dir, ignore_errors=True)
