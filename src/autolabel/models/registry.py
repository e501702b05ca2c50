"""The model families behind the engine: one record per family, and the one way a checkpoint name
becomes a loaded detector or segmenter.

A checkpoint's family is read from its ``config.json`` (``model_type``): from the folder for a
local path, from the hub cache (or the hub, unless ``HF_HUB_OFFLINE=1``) for a hub id. Family
classes are imported only when a checkpoint of theirs is loaded, so listing families or picking one
costs no model import.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from autolabel.errors import ConfigError, ModelLoadError

Kind = Literal["detector", "segmenter"]
KINDS: tuple[str, ...] = ("detector", "segmenter")
#: The command-line option that takes a checkpoint of each kind.
KIND_OPTIONS = {"detector": "--model", "segmenter": "--sam-model"}


@dataclass(frozen=True)
class Family:
    """A model family: ``loader`` is the ``"module:Class"`` implementing ``models.base.Detector`` or
    ``Segmenter`` with ``from_pretrained(name_or_path, device, precision, exact)``; ``model_types``
    the ``config.json`` types it loads; ``input_size`` what the model sees, in words."""

    name: str
    kind: Kind
    model_types: tuple[str, ...]
    loader: str
    default_checkpoint: str
    input_size: str
    licence: str
    gated: bool
    pick_when: str

    def load_class(self):
        """The family's class (imported now)."""
        module, _, attr = self.loader.partition(":")
        return getattr(importlib.import_module(module), attr)

    def load(self, name_or_path: str, device: str = "cpu", precision: str = "fp32", exact: bool = False):
        """A loaded detector or segmenter of this family from ``name_or_path``."""
        return self.load_class().from_pretrained(name_or_path, device, precision, exact=exact)


FAMILIES: tuple[Family, ...] = (
    Family("owlv2", "detector", ("owlv2",), "autolabel.models.owlv2:Owlv2Detector",
           "google/owlv2-large-patch14-finetuned", "960 px (B/16) or 1008 px (L/14) square, padded",
           "Apache-2.0", False,
           "The default: strong open-vocabulary boxes for any noun phrase; prompts of at most 16 tokens."),
    Family("owlvit", "detector", ("owlvit",), "autolabel.models.owlvit:OwlVitDetector",
           "google/owlvit-base-patch32", "768 px square (B/32, B/16) or 840 px (L/14), stretched",
           "Apache-2.0", False,
           "Fast on a CPU (B/32 sees 24x24 patches); weaker than OWLv2 on small objects."),
    Family("grounding-dino", "detector", ("grounding-dino",),
           "autolabel.models.grounding_dino:GroundingDinoDetector",
           "IDEA-Research/grounding-dino-tiny", "short side 800 px, long side at most 1333 px",
           "Apache-2.0", False,
           "Phrases in context (\"the red car.\"); up to 256 text tokens for all classes together."),
    Family("mm-grounding-dino", "detector", ("mm-grounding-dino",),
           "autolabel.models.grounding_dino:GroundingDinoDetector",
           "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det",
           "short side 800 px, long side at most 1333 px", "Apache-2.0", False,
           "Grounding DINO retrained on more data (LLMDet checkpoints load here too): usually the better DINO."),
    Family("omdet-turbo", "detector", ("omdet-turbo",), "autolabel.models.omdet:OmDetTurboDetector",
           "omlab/omdet-turbo-swin-tiny-hf", "640 px square", "Apache-2.0", False,
           "Throughput: real-time open-vocabulary detection with cached class embeddings."),
    Family("sam3", "detector", ("sam3", "sam3_video"), "autolabel.models.sam3:Sam3Detector",
           "facebook/sam3", "1008 px square", "SAM License", True,
           "Concept prompts with masks from one model (--mode segment needs no SAM); gated weights."),
    # The published SAM2.1 and EdgeTAM checkpoints say sam2_video / edgetam_video: the image model
    # loads whole from them (tested).
    Family("sam2", "segmenter", ("sam2", "sam2_video"), "autolabel.models.sam2:Sam2Segmenter",
           "facebook/sam2.1-hiera-large", "1024 px square, stretched", "Apache-2.0", False,
           "The default segmenter; hiera tiny < small < base-plus < large trade quality for speed."),
    Family("sam", "segmenter", ("sam", "sam_hq"), "autolabel.models.sam_v1:SamSegmenter",
           "facebook/sam-vit-base", "long side 1024 px, padded", "Apache-2.0", False,
           "SAM v1 and SAM-HQ (sharper boundaries of thin structures)."),
    Family("sam3-tracker", "segmenter", ("sam3_tracker", "sam3_video"),
           "autolabel.models.sam3:Sam3TrackerSegmenter", "facebook/sam3", "1008 px square", "SAM License", True,
           "SAM 3 weights behind the SAM2 box-to-mask interface; gated weights."),
    Family("edgetam", "segmenter", ("edgetam", "edgetam_video"), "autolabel.models.edgetam:EdgeTamSegmenter",
           "yonigozlan/EdgeTAM-hf", "1024 px square, stretched", "Apache-2.0", False,
           "Masks on small devices: a SAM2 variant many times faster, slightly coarser."),
)


def families(kind: Kind | None = None) -> tuple[Family, ...]:
    """The families, of one ``kind`` or all, in the order above (the default of each kind first)."""
    return tuple(f for f in FAMILIES if kind is None or f.kind == kind)


def family_named(name: str) -> Family:
    """The family called ``name`` (as ``autolabel models`` lists it)."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ConfigError(f"unknown model family {name!r}: use one of {', '.join(f.name for f in FAMILIES)}")


def checkpoint_model_type(name_or_path: str) -> str:
    """The ``model_type`` in a checkpoint's ``config.json`` (a local folder, or a hub id read from
    the cache or the hub); a one-line ``ModelLoadError`` when it cannot be read."""
    config = _config_file(str(name_or_path))
    try:
        model_type = json.loads(Path(config).read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelLoadError(f"cannot read {config}: {exc}") from exc
    if not isinstance(model_type, str) or not model_type:
        raise ModelLoadError(f"{config} names no model_type: not a transformers checkpoint")
    return model_type


def _config_file(name_or_path: str) -> Path:
    local = Path(name_or_path)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelLoadError(f"cannot load {name_or_path!r}: the folder has no config.json")
        return local / "config.json"
    if local.is_absolute() or name_or_path.startswith((".", "~")):  # a path, never a hub id
        raise ModelLoadError(f"cannot load {name_or_path!r}: no such folder")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(name_or_path, "config.json"))
    except GatedRepoError as exc:
        raise ModelLoadError(f"{name_or_path!r} is gated: request access on its hub page, then log in "
                             "(`hf auth login`) and download it once") from exc
    except (LocalEntryNotFoundError, EntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(f"cannot load {name_or_path!r} (not a local directory; as a hub id it must be "
                             f"downloadable or already cached — set HF_HUB_OFFLINE=0 and check the name): "
                             f"{first_line}") from exc


def family_for(name_or_path: str, kind: Kind) -> Family:
    """The family of ``kind`` that loads the checkpoint ``name_or_path`` (by its ``model_type``)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    model_type = checkpoint_model_type(name_or_path)
    for family in families(kind):
        if model_type in family.model_types:
            return family
    other = next((f for f in FAMILIES if f.kind != kind and model_type in f.model_types), None)
    if other is not None:
        raise ConfigError(f"{name_or_path!r} is a {other.kind} checkpoint ({other.name}), not a {kind}: "
                          f"pass it with {KIND_OPTIONS[other.kind]}")
    supported = ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in families(kind))
    raise ConfigError(f"{name_or_path!r} is a {model_type!r} checkpoint, which autolabel cannot use as a "
                      f"{kind} ({KIND_OPTIONS[kind]}); supported: {supported}")


def makes_masks(name_or_path: str) -> bool:
    """Whether the detector checkpoint makes masks itself (segment mode then needs no segmenter)."""
    return family_for(name_or_path, "detector").load_class().yields_masks


def load_detector(name_or_path: str, device: str = "cpu", precision: str = "fp32", exact: bool = False):
    """A ``models.base.Detector`` of whichever family the checkpoint belongs to."""
    return family_for(name_or_path, "detector").load(name_or_path, device, precision, exact)


def load_segmenter(name_or_path: str, device: str = "cpu", precision: str = "fp32", exact: bool = False):
    """A ``models.base.Segmenter`` of whichever family the checkpoint belongs to."""
    return family_for(name_or_path, "segmenter").load(name_or_path, device, precision, exact)


def load_preprocessor(name_or_path: str, kind: Kind, exact: bool = False):
    """The ``models.base.Preprocessor`` a loaded model of ``kind`` from ``name_or_path`` gets, built
    from the checkpoint's processor files alone (no weights): what a decode worker needs."""
    return family_for(name_or_path, kind).load_class().load_preprocessor(name_or_path, exact)
