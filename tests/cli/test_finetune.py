"""``autolabel finetune`` end to end: COCO or a run folder in, a checkpoint that ``label --model`` uses out."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from transformers import PreTrainedModel

from autolabel.cli import main
from autolabel.finetune.synthetic import build_calibrated_owlv2, make_shapes_dataset


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models: one intra-op thread is faster (no spin-waiting on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-finetune")
    return build_calibrated_owlv2(root / "model"), make_shapes_dataset(root / "shapes", n_images=6)


def _label_and_eval(runner, model, images, gt, run, tmp_path) -> float:
    """``autolabel label`` with ``model``, then ``autolabel eval`` against ``gt``: the run's mAP."""
    result = runner.invoke(main, ["label", str(images), "--out", str(run), "--model", str(model), "--prompt", "square",
                                  "--prompt", "circle", "--threshold", "0.001", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "6 done" in result.output
    result = runner.invoke(main, ["eval", str(run), "--gt", str(gt), "--out", str(tmp_path / f"eval-{run.name}")])
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / f"eval-{run.name}" / "metrics.json").read_text())["map"] or 0.0


def test_finetune_from_coco_then_relabel_better(tmp_path, setup, monkeypatch):
    """The loop the command exists for: label -> fine-tune -> relabel, measured by ``autolabel eval``."""
    model, gt = setup
    runner = CliRunner()
    images = gt.parent / "images"
    before = _label_and_eval(runner, model, images, gt, tmp_path / "before", tmp_path)

    out = tmp_path / "shapes-owlv2"
    args = ["finetune", "--train", str(gt), "--val", str(gt), "--out", str(out), "--model", str(model),
            "--mode", "heads", "--steps", "400", "--lr", "1e-2", "--val-every", "100", "--device", "cpu", "--quiet"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "train loss:" in result.output and "validation mAP:" in result.output
    log = json.loads((out / "training_log.json").read_text())
    assert log["finished"] and [v["step"] for v in log["validations"]] == [0, 100, 200, 300, 400]

    after = _label_and_eval(runner, out, images, gt, tmp_path / "after", tmp_path)
    print(f"\ntrain-set mAP by autolabel eval: {before:.4f} before, {after:.4f} after fine-tuning")
    assert after > before + 0.2

    # The same command again: the result is there, nothing to do (not even loading the model).
    def no_loading(*args, **kwargs):
        raise AssertionError("a finished run loaded the model")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(no_loading))
    again = runner.invoke(main, args)
    assert again.exit_code == 0 and "nothing to do" in again.output


def test_ensemble_alpha_is_reported(tmp_path, setup):
    model, gt = setup
    result = CliRunner().invoke(main, ["finetune", "--train", str(gt), "--val", str(gt), "--out", str(tmp_path / "o"),
                                       "--model", str(model), "--mode", "heads", "--steps", "3", "--val-every", "0",
                                       "--ensemble-alpha", "0.5", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "ensembled with the starting weights (alpha 0.5)" in result.output and "output" in result.output


def test_finetune_from_a_run_starts_from_the_runs_model(tmp_path, setup):
    model, gt = setup
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(main, ["label", str(gt.parent / "images"), "--out", str(run), "--model", str(model),
                                  "--prompt", "square", "--prompt", "circle", "--threshold", "0.001",
                                  "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    result = runner.invoke(main, ["finetune", "--train", str(run), "--out", str(out), "--labels", "all",
                                  "--min-score", "0", "--steps", "2", "--batch-size", "2", "--device", "cpu",
                                  "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"starting from {model}" in result.output and "6 images" in result.output
    assert (out / "model.safetensors").exists()


def test_options_default_to_the_library_config(tmp_path, setup, monkeypatch):
    from autolabel.finetune import train
    from autolabel.finetune.config import TrainConfig

    seen = {}

    def capture(data, out_dir, *, config, **kwargs):
        seen["config"] = config
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "finetune", capture)
    model, gt = setup
    args = ["finetune", "--train", str(gt), "--out", str(tmp_path / "o"), "--model", str(model)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 130, result.output
    assert seen["config"] == TrainConfig()


@pytest.mark.parametrize("args, message", [
    (["--train", "{tmp}"], "not a run folder"),  # a plain folder
    (["--train", "{gt}", "--steps", "0"], "steps must be at least 1"),
    (["--train", "{gt}", "--labels", "reviewed", "--prompt", "x", "--ontology", "{gt}"], "not both"),
])
def test_finetune_errors_are_one_line(tmp_path, setup, args, message):
    model, gt = setup
    args = [a.format(tmp=tmp_path, gt=gt) for a in args]
    result = CliRunner().invoke(main, ["finetune", *args, "--out", str(tmp_path / "o"), "--model", str(model),
                                       "--quiet"])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
