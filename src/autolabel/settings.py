"""Settings from ``AUTOLABEL_*`` environment variables and a ``.env`` file; CLI flags override them.

Device ``auto`` picks CUDA, then Apple MPS, then CPU; dtype ``auto`` is float16 on CUDA and float32
elsewhere (MPS half precision is not reliable for OWLv2's attention).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from autolabel.errors import ConfigError
from autolabel.images import DEFAULT_MAX_PIXELS
from autolabel.pipeline import DEFAULT_BATCH_SIZE, DetectConfig

DEFAULT_MODEL = "google/owlv2-large-patch14-finetuned"
# Smaller SAM2.1 variants trade mask quality for speed: tiny < small < base-plus < large.
DEFAULT_SAM_MODEL = "facebook/sam2.1-hiera-large"
DtypeName = Literal["auto", "float32", "float16", "bfloat16"]
DTYPES: tuple[str, ...] = get_args(DtypeName)
# Defaults shared with the library, so a flag left unset behaves like the Python API.
_DETECT = DetectConfig()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTOLABEL_", env_file=".env", extra="ignore")

    model: str = Field(DEFAULT_MODEL, description="OWLv2 checkpoint: hub id or local directory")
    sam_model: str = Field(DEFAULT_SAM_MODEL, description="SAM2 checkpoint: hub id or local directory")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    dtype: DtypeName = "auto"
    threshold: float = Field(_DETECT.threshold, ge=0.0, le=1.0)
    nms_iou: float = Field(_DETECT.nms_iou, gt=0.0, le=1.0)
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1)
    # Our own limit, checked on the header before decoding; Pillow's global limit is left untouched.
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    runs_dir: Path = Path("runs")
    ui_auth: str | None = Field(None, description="user:password for the web UI login")


def load_settings(**overrides) -> Settings:
    """Settings from env/.env with non-None keyword overrides (the CLI's flags) applied."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except Exception as exc:  # pydantic.ValidationError: one readable line per bad field
        errors = getattr(exc, "errors", None)
        if errors is None:
            raise
        lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors()]
        raise ConfigError("invalid settings: " + "; ".join(lines)) from None


def resolve_device(name: str = "auto") -> str:
    import torch

    if name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available")
        if name == "mps" and not torch.backends.mps.is_available():
            raise ConfigError("device 'mps' requested but MPS is not available")
        if not (name == "cpu" or name == "mps" or name.startswith("cuda")):
            raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(name: str, device: str):
    import torch

    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}: use {', '.join(DTYPES)}")
    if name == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)
