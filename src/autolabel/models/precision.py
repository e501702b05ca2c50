"""Numeric precision of the models: a name and a device -> one load plan, applied once at load.

``fp32``, ``bf16`` and ``fp16`` are the dtype of weights and activations; ``int8`` keeps fp32
activations and replaces every ``nn.Linear`` by a dynamically quantized one (weights int8, activations
quantized per call; CPU only). ``auto``: fp16 on CUDA, fp32 elsewhere (bf16 moves OWLv2's mAP on the
trained proxy by more than the 0.005 we allow for a default, see BENCHMARKS.md). Preprocessing always
runs in fp32; inputs are cast to the plan's dtype at the model's door. Attention goes through
PyTorch's SDPA kernels (equal to eager attention within float tolerance, tested) unless a family
names its own (``load_kwargs(attention)``: Grounding DINO's and OmDet-Turbo's fusion layers).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, get_args

from autolabel.errors import ConfigError

PrecisionName = Literal["auto", "fp32", "bf16", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)
ATTENTION = "sdpa"


@dataclass(frozen=True)
class PrecisionPlan:
    """How to load a model: ``name`` (resolved, never ``auto``), ``dtype`` of weights and activations
    (a ``torch.dtype``), ``quantize``: int8 dynamic quantization of the linear layers."""

    name: str
    dtype: object
    quantize: bool = False

    def load_kwargs(self, attention: str | dict | None = None) -> dict:
        """Keyword arguments for ``from_pretrained``; ``attention``: a family's own
        ``attn_implementation`` (a name, or one per sub-config) instead of ``ATTENTION``."""
        return {"dtype": self.dtype, "attn_implementation": attention or ATTENTION}

    def apply(self, model):
        """The steps ``from_pretrained`` cannot do (quantization), on a model loaded with
        ``load_kwargs()``; returns the model to use."""
        if not self.quantize:
            return model
        import torch

        with warnings.catch_warnings():  # torch.ao's deprecation notices; the API works in torch 2.14
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def resolve_precision(name, device: str) -> PrecisionPlan:
    """The plan for precision ``name`` on ``device`` (``cpu``, ``cuda[:N]``, ``mps``); a one-line
    ``ConfigError`` for unknown names and combinations the device cannot run."""
    import torch

    if name not in PRECISIONS:
        raise ConfigError(f"unknown precision {name!r}: use {', '.join(PRECISIONS)}")
    kind = device.split(":")[0]
    if name == "auto":
        name = "fp16" if kind == "cuda" else "fp32"
    if name == "int8" and kind != "cpu":
        raise ConfigError(f"precision int8 (dynamic quantization) runs on the CPU only, not on {device}; "
                          "use fp16 or bf16 there")
    if name == "fp16" and kind == "cpu":
        raise ConfigError("precision fp16 needs a GPU; on the CPU use bf16 (CPUs with bf16 instructions) or int8")
    if name == "bf16" and kind == "cpu" and not cpu_supports_bf16():
        raise ConfigError("precision bf16 needs a CPU with bf16 instructions (AVX512-BF16, AMX or ARM BF16), "
                          "which this one lacks; use fp32 or int8")
    if name == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision bf16 is not supported by the GPU {device}; use fp16")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}
    return PrecisionPlan(name, dtypes[name], quantize=name == "int8")


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (without it bf16 is emulated and slower than fp32)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False
