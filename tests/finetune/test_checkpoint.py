"""The run folder: a checkpoint restores weights, optimizer and progress exactly; a folder from
other settings is refused; a finished run is recognised from its log alone."""

from __future__ import annotations

import json

import pytest
import torch

from autolabel.errors import ConfigError
from autolabel.finetune.checkpoint import (
    LOG_FILE, STATE_DIR, Checkpointer, TrainState, check_out_dir, finished_result, write_json_atomic)
from autolabel.finetune.config import TrainConfig
from autolabel.finetune.optim import build_optimizer, build_scheduler, grad_scaler


def _parts(seed: int):
    torch.manual_seed(seed)
    layer = torch.nn.Linear(4, 3)
    config = TrainConfig(lr=1e-2, steps=10).resolved()
    optimizer = build_optimizer({"heads": list(layer.named_parameters())}, config, "cpu")
    return layer, optimizer, build_scheduler(optimizer, config), grad_scaler("fp32")


def _train_step(layer, optimizer, scheduler):
    layer(torch.ones(2, 4)).square().sum().backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def test_resume_restores_weights_optimizer_schedule_and_progress(tmp_path):
    layer, optimizer, scheduler, scaler = _parts(0)
    saver = Checkpointer(tmp_path, {"run": 1}, dict(layer.named_parameters()), "cpu")
    state = TrainState()
    for _ in range(2):
        _train_step(layer, optimizer, scheduler)
        state.step += 1
        state.history.append({"step": state.step, "loss": 1.0})
    state.best = {"step": 2, "map": 0.5}
    saver.save_best(2, {"map": 0.5})
    saver.save(state, optimizer, scheduler, scaler)
    assert state.last_saved == 2 and [p.name for p in (tmp_path / STATE_DIR).glob("step-*")] == ["step-000002"]
    _train_step(layer, optimizer, scheduler)  # one more step, then "crash"
    expected = {k: v.clone() for k, v in layer.state_dict().items()}

    layer2, optimizer2, scheduler2, scaler2 = _parts(1)  # other starting weights
    restored = TrainState()
    loader = Checkpointer(tmp_path, {"run": 1}, dict(layer2.named_parameters()), "cpu")
    assert loader.resume(restored, optimizer2, scheduler2, scaler2)
    assert (restored.step, restored.resumed_from, restored.best) == (2, 2, {"step": 2, "map": 0.5})
    assert restored.history == state.history
    _train_step(layer2, optimizer2, scheduler2)  # the same third step
    for name, value in layer2.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)

    with pytest.raises(ConfigError, match="other settings"):
        Checkpointer(tmp_path, {"run": 2}, dict(layer2.named_parameters()), "cpu").resume(
            TrainState(), optimizer2, scheduler2, scaler2)


def test_restore_best_loads_the_saved_weights(tmp_path):
    layer, *_ = _parts(0)
    saver = Checkpointer(tmp_path, {}, dict(layer.named_parameters()), "cpu")
    with pytest.raises(ConfigError, match="missing"):
        saver.restore_best(3)
    saver.save_best(3, {"map": 0.1})
    before = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight.add_(1.0)
    saver.restore_best(3)
    torch.testing.assert_close(layer.weight.detach(), before, rtol=0, atol=0)


def test_finished_result_comes_from_the_log_of_the_same_run(tmp_path):
    assert finished_result(tmp_path, {"a": 1}) is None
    write_json_atomic(tmp_path / LOG_FILE, {"finished": False, "fingerprint": {"a": 1}, "result": None})
    assert finished_result(tmp_path, {"a": 1}) is None
    write_json_atomic(tmp_path / LOG_FILE, {"finished": True, "fingerprint": {"a": 1}, "result": {"steps": 3}})
    assert finished_result(tmp_path, {"a": 1}) == {"steps": 3}
    with pytest.raises(ConfigError, match=r"other settings \(a: 1 -> 2\)"):
        finished_result(tmp_path, {"a": 2})
    (tmp_path / STATE_DIR).mkdir()
    (tmp_path / STATE_DIR / "state.json").write_text(json.dumps({}))  # a later run's interrupted state
    assert finished_result(tmp_path, {"a": 1}) is None


def test_out_dir_must_be_new_empty_or_a_run(tmp_path):
    check_out_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_out_dir(tmp_path / "file")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOG_FILE).write_text("{}")
    check_out_dir(tmp_path / "run")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        check_out_dir(tmp_path / "other")
