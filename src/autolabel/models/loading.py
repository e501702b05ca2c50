"""The one way checkpoints are loaded: hub id or local directory, safetensors only, no remote code."""

from __future__ import annotations

from pathlib import Path

from autolabel.errors import ModelLoadError


def load_pretrained(loader, name_or_path: str, what: str, **kwargs):
    """Call ``loader.from_pretrained`` with the project's safety rules and readable errors.

    ``loader`` is a transformers model or processor class. Models get ``use_safetensors=True`` so a
    pickled ``.bin`` checkpoint is refused rather than unpickled.
    """
    is_model = hasattr(loader, "config_class") and hasattr(loader, "base_model_prefix")
    if is_model:
        kwargs.setdefault("use_safetensors", True)
    kwargs["trust_remote_code"] = False
    try:
        return loader.from_pretrained(str(name_or_path), **kwargs)
    except (OSError, ValueError, KeyError, EnvironmentError) as exc:
        hint = ""
        if not Path(str(name_or_path)).exists():
            hint = (" (not a local directory; as a hub id it must be downloadable or already cached —"
                    " set HF_HUB_OFFLINE=0 and check the name)")
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load {what} from {name_or_path!r}{hint}: {first_line}") from exc
