"""The one way checkpoints are loaded: hub id or local directory, safetensors only, no remote code."""

from __future__ import annotations

from pathlib import Path

from autolabel.errors import ModelLoadError


def load_pretrained(loader, name_or_path: str, what: str, **kwargs):
    """Call ``loader.from_pretrained`` (a transformers model or processor class) with the project's
    safety rules and readable errors. Models get ``use_safetensors=True`` so a pickled ``.bin``
    checkpoint is refused rather than unpickled, and a checkpoint that lacks some of the model's
    weights is refused: transformers would fill them with random values and run anyway."""
    is_model = hasattr(loader, "config_class") and hasattr(loader, "base_model_prefix")
    if is_model:
        kwargs.setdefault("use_safetensors", True)
        kwargs["output_loading_info"] = True
    kwargs["trust_remote_code"] = False
    try:
        loaded = loader.from_pretrained(str(name_or_path), **kwargs)
    except (OSError, ValueError, KeyError, EnvironmentError) as exc:
        hint = ""
        if not Path(str(name_or_path)).exists():
            hint = (" (not a local directory; as a hub id it must be downloadable or already cached —"
                    " set HF_HUB_OFFLINE=0 and check the name)")
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        missing = _missing_files(name_or_path, first_line)
        if missing:
            first_line = f"the folder has no {' or '.join(missing)}"
        raise ModelLoadError(f"cannot load {what} from {name_or_path!r}{hint}: {first_line}") from exc
    if not is_model:
        return loaded
    model, info = loaded
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ModelLoadError(f"{name_or_path!r} is not a complete checkpoint for {what}: it lacks {shown} "
                             "(a checkpoint of another model type or a truncated download?)")
    return model


def _missing_files(name_or_path, message: str) -> list[str]:
    """File names transformers' message asks for that a local checkpoint folder lacks (its own
    message is three sentences about the hub)."""
    import re

    folder = Path(str(name_or_path))
    if not folder.is_dir():
        return []
    named = dict.fromkeys(re.findall(r"[\w.-]+\.(?:json|safetensors|txt|model)\b", message))
    return [name for name in named if not (folder / name).exists()]


def load_checkpoint(model_class, processor_class, name_or_path: str, family: str, plan,
                    attention: str | dict | None = None) -> tuple:
    """A model family's ``(model, processor)`` from one checkpoint, the model in the precision of
    ``plan`` (``models.precision.PrecisionPlan``) with ``attention`` if the family needs its own;
    ``family`` names it in errors."""
    processor = load_pretrained(processor_class, name_or_path, f"the {family} processor")
    model = load_pretrained(model_class, name_or_path, f"the {family} model", **plan.load_kwargs(attention))
    return plan.apply(model.eval()), processor
