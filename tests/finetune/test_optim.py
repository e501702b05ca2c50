"""Optimizer set-up: the schedule's shape, decay only on matrices, half precision only on CUDA."""

from __future__ import annotations

import pytest
import torch

from autolabel.errors import ConfigError
from autolabel.finetune.config import TrainConfig
from autolabel.finetune.optim import build_optimizer, build_scheduler, lr_factor, resolve_precision


def test_lr_schedule_warms_up_then_decays():
    factors = [lr_factor(s, 100, 10, 0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[55] == pytest.approx(0.55)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:])) and factors[-1] > 0.1


def test_optimizer_groups_learning_rates_and_weight_decay():
    layer, text = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    groups = {"heads": list(layer.named_parameters()), "text": list(text.named_parameters()), "vision": []}
    config = TrainConfig(lr=1e-3, text_lr=1e-5, weight_decay=0.1, steps=10, warmup_steps=2).resolved()
    optimizer = build_optimizer(groups, config, "cpu")
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert set(by_name) == {"heads", "heads-no-decay", "text", "text-no-decay"}
    assert by_name["heads"]["params"] == [layer.weight] and by_name["heads-no-decay"]["params"] == [layer.bias]
    assert by_name["heads"]["weight_decay"] == 0.1 and by_name["heads-no-decay"]["weight_decay"] == 0.0
    assert by_name["text"]["lr"] == 1e-5 and by_name["heads"]["lr"] == 1e-3
    build_scheduler(optimizer, config)  # warm-up step 0 of 2: half of each group's rate
    assert by_name["text"]["lr"] == pytest.approx(0.5e-5) and by_name["heads"]["lr"] == pytest.approx(0.5e-3)
    with pytest.raises(ConfigError, match="nothing to train"):
        build_optimizer({"heads": []}, config, "cpu")


def test_precision_resolution():
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("fp32", "cpu") == "fp32"
    for wanted in ("bf16", "fp16"):
        with pytest.raises(ConfigError, match="needs a CUDA device"):
            resolve_precision(wanted, "cpu")
