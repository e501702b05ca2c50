"""Settings from ``AUTOLABEL_*`` environment variables and a ``.env`` file; CLI flags override them.

Device ``auto`` picks CUDA, then Apple MPS, then CPU; precision ``auto`` is fp16 on CUDA and fp32
elsewhere (``models.precision``; MPS half precision is not reliable for OWLv2's attention).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from autolabel.errors import ConfigError
from autolabel.images import DEFAULT_MAX_PIXELS
from autolabel.models.precision import PrecisionName
from autolabel.pipeline import DEFAULT_BATCH_SIZE, DetectConfig

DEFAULT_MODEL = "google/owlv2-large-patch14-finetuned"
# Smaller SAM2.1 variants trade mask quality for speed: tiny < small < base-plus < large.
DEFAULT_SAM_MODEL = "facebook/sam2.1-hiera-large"
# Defaults shared with the library, so a flag left unset behaves like the Python API.
_DETECT = DetectConfig()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTOLABEL_", env_file=".env", extra="ignore")

    model: str = Field(DEFAULT_MODEL, description="detector checkpoint (any family in `autolabel models`): hub id or local directory")
    sam_model: str = Field(DEFAULT_SAM_MODEL, description="segmenter checkpoint for segment mode: hub id or local directory")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    precision: PrecisionName = Field("auto", description="auto, fp32, bf16, fp16 or int8 (models.precision)")
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
    except ValidationError as exc:  # one readable line per bad field
        lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
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

