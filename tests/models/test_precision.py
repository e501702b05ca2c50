"""models.precision: name + device -> load plan, applied once at load (dtype, int8 quantization, SDPA)."""

from __future__ import annotations

import re

import pytest
import torch

from autolabel.errors import ConfigError
from autolabel.models import precision
from autolabel.models.owlv2 import Owlv2Detector
from autolabel.models.precision import PRECISIONS, resolve_precision


@pytest.fixture
def bf16_hardware(monkeypatch):
    """Resolution as on a machine whose CPU and GPU both have bf16, whatever runs the tests."""
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.mark.parametrize("name, device, dtype, quantize", [
    ("auto", "cpu", torch.float32, False),
    ("auto", "cuda", torch.float16, False),  # today's GPU default
    ("auto", "cuda:1", torch.float16, False),
    ("auto", "mps", torch.float32, False),  # MPS half precision is unreliable for OWLv2's attention
    ("fp32", "cpu", torch.float32, False),
    ("fp32", "cuda", torch.float32, False),
    ("bf16", "cpu", torch.bfloat16, False),
    ("bf16", "cuda", torch.bfloat16, False),
    ("fp16", "cuda", torch.float16, False),
    ("int8", "cpu", torch.float32, True),  # activations stay fp32, Linear weights int8
])
def test_supported_combinations(bf16_hardware, name, device, dtype, quantize):
    plan = resolve_precision(name, device)
    assert (plan.dtype, plan.quantize) == (dtype, quantize)
    assert plan.name != "auto" and plan.load_kwargs() == {"dtype": dtype, "attn_implementation": "sdpa"}


@pytest.mark.parametrize("name, device, message", [
    ("int8", "cuda", "int8 (dynamic quantization) runs on the CPU only"),
    ("int8", "mps", "int8 (dynamic quantization) runs on the CPU only"),
    ("fp16", "cpu", "fp16 needs a GPU"),
    ("fp64", "cpu", "unknown precision 'fp64'"),
    ("float32", "cpu", "unknown precision 'float32'"),  # the old --dtype names are not aliases
])
def test_unsupported_combinations_are_one_line_config_errors(bf16_hardware, name, device, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        resolve_precision(name, device)
    assert "\n" not in str(caught.value)


def test_bf16_needs_hardware_support(monkeypatch):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(ConfigError, match="CPU with bf16 instructions"):
        resolve_precision("bf16", "cpu")
    with pytest.raises(ConfigError, match="not supported by the GPU cuda:0"):
        resolve_precision("bf16", "cuda:0")


def test_every_name_is_listed():
    assert PRECISIONS == ("auto", "fp32", "bf16", "fp16", "int8")


def _drift(reference, other) -> tuple[float, float, float]:
    """Mean and max score difference, max box difference. Random weights saturate many scores, so a
    few patches near 0.5 move far: the mean is the tight bound."""
    scores = (other[0] - reference[0]).abs()
    return scores.mean().item(), scores.max().item(), (other[1] - reference[1]).abs().max().item()


def _outputs(detector, pixels, queries=("a cat", "a dog", "car")):
    scores = detector.score(detector.encode_images(pixels), detector.encode_text(list(queries)))
    return torch.sigmoid(scores.logits), scores.pred_boxes


@pytest.fixture(scope="module")
def pixels():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_int8_replaces_every_linear_layer_and_outputs_move_slightly(tiny_owlv2, pixels):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    fp32 = Owlv2Detector.from_pretrained(str(tiny_owlv2), "cpu", "fp32")
    int8 = Owlv2Detector.from_pretrained(str(tiny_owlv2), "cpu", "int8")
    linear = [m for m in fp32.model.modules() if type(m) is torch.nn.Linear]
    assert len(linear) > 10
    assert not [m for m in int8.model.modules() if type(m) is torch.nn.Linear]
    assert len([m for m in int8.model.modules() if isinstance(m, DynamicLinear)]) == len(linear)
    reference, quantized = _outputs(fp32, pixels), _outputs(int8, pixels)
    assert quantized[0].dtype == torch.float32
    mean, worst, boxes = _drift(reference, quantized)
    assert 0 < mean < 0.03 and worst < 0.3 and boxes < 0.05  # not a no-op, and close


@pytest.mark.skipif(not precision.cpu_supports_bf16(), reason="this CPU has no bf16 instructions")
def test_bf16_outputs_are_close_to_fp32(tiny_owlv2, pixels):
    fp32 = Owlv2Detector.from_pretrained(str(tiny_owlv2), "cpu", "fp32")
    bf16 = Owlv2Detector.from_pretrained(str(tiny_owlv2), "cpu", "bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    reference, half = _outputs(fp32, pixels), _outputs(bf16, pixels)
    assert half[0].dtype == torch.float32  # outputs leave the model in fp32
    mean, worst, boxes = _drift(reference, half)
    assert 0 < mean < 0.02 and worst < 0.3 and boxes < 0.03


def test_sdpa_attention_equals_eager(tiny_owlv2, pixels):
    from transformers import Owlv2ForObjectDetection

    ours = Owlv2Detector.from_pretrained(str(tiny_owlv2), "cpu", "fp32")
    assert ours.model.config._attn_implementation == "sdpa"
    eager_model = Owlv2ForObjectDetection.from_pretrained(str(tiny_owlv2), attn_implementation="eager")
    eager = Owlv2Detector(eager_model, ours.processor, "eager")
    (s, b), (se, be) = _outputs(ours, pixels), _outputs(eager, pixels)
    torch.testing.assert_close(s, se, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b, be, atol=1e-5, rtol=1e-4)


def test_sam2_sdpa_attention_equals_eager(tiny_sam2):
    from transformers import Sam2Model

    from autolabel.models.sam2 import Sam2Segmenter

    ours = Sam2Segmenter.from_pretrained(str(tiny_sam2), "cpu", "fp32")
    assert ours.model.config._attn_implementation == "sdpa"
    eager_model = Sam2Model.from_pretrained(str(tiny_sam2), attn_implementation="eager")
    eager = Sam2Segmenter(eager_model, ours.processor, "eager")
    pixels = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    boxes = [[10, 12, 60, 70], [0, 0, 90, 40]]
    logits = [s.predict_logits(s.embed(pixels, [(100, 80)])[0], boxes) for s in (ours, eager)]
    torch.testing.assert_close(logits[0], logits[1], atol=1e-4, rtol=1e-4)
