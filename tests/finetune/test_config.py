"""TrainConfig: bad values are refused, mode-dependent defaults resolve, and the fingerprinted
settings leave out the options that only change how a run goes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from autolabel.errors import ConfigError
from autolabel.finetune.config import DEFAULT_LR, MAX_WARMUP_STEPS, RUNTIME_FIELDS, TEXT_LR_DIVISOR, TrainConfig


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "lora"}, "mode"),
    ({"steps": 0}, "steps"),
    ({"ensemble_alpha": 0.0}, "ensemble_alpha"),
    ({"lr": 0.0}, "lr"),
    ({"precision": "int8"}, "precision"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)


def test_resolved_fills_the_mode_dependent_defaults():
    full = TrainConfig(steps=50).resolved()
    assert full.lr == DEFAULT_LR["full"] and full.text_lr == pytest.approx(full.lr / TEXT_LR_DIVISOR)
    assert full.warmup_steps == 5 and TrainConfig(steps=10_000).resolved().warmup_steps == MAX_WARMUP_STEPS
    heads = TrainConfig(mode="heads", text_lr=1e-3).resolved()  # cheap mode never trains the text tower
    assert heads.lr == DEFAULT_LR["heads"] and heads.text_lr == 0.0 and heads.trains() == {"heads"}
    assert TrainConfig(freeze_vision=True, freeze_text=True).trains() == {"heads"}
    assert full.resolved() == full


def test_learning_settings_ignore_runtime_options_only():
    base = TrainConfig(steps=10)
    runtime = replace(base, val_every=3, save_every=7, workers=1, keep_state=True, precision="fp32",
                      gradient_checkpointing=True)
    assert runtime.learning_settings() == base.learning_settings()
    assert not set(RUNTIME_FIELDS) & set(base.learning_settings())
    assert replace(base, seed=1).learning_settings() != base.learning_settings()
    assert replace(base, lr=None).learning_settings() == replace(base, lr=DEFAULT_LR["full"]).learning_settings()
