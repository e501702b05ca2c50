"""autolabel: text-prompted auto-labeling for computer-vision datasets.

Public API (imported lazily so that `autolabel --help` does not pay for torch):

    from autolabel import Labeler, Ontology, Detections, open_store, label_into_store
    from autolabel import export_dataset, import_dataset, evaluate_run
    from autolabel.finetune import finetune, TrainConfig

Importing the package changes nothing process-wide (environment, logging, warning filters); the
``autolabel`` command does that set-up. On Apple MPS, set ``PYTORCH_ENABLE_MPS_FALLBACK=1`` before
torch is imported: some OWLv2/SAM2 ops have no MPS kernel.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Detections": ("autolabel.detections", "Detections"),
    "Ontology": ("autolabel.ontology", "Ontology"),
    "OntologyClass": ("autolabel.ontology", "OntologyClass"),
    "DetectConfig": ("autolabel.pipeline", "DetectConfig"),
    "Labeler": ("autolabel.pipeline", "Labeler"),
    "Settings": ("autolabel.settings", "Settings"),
    "open_store": ("autolabel.store", "open_store"),
    "export_dataset": ("autolabel.export", "export_dataset"),
    "import_dataset": ("autolabel.importers", "import_dataset"),
    "evaluate_run": ("autolabel.evaluation", "evaluate_run"),
    "label_into_store": ("autolabel.labeling", "label_into_store"),
    "load_image": ("autolabel.images", "load_image"),
    "TrainConfig": ("autolabel.finetune", "TrainConfig"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'autolabel' has no attribute {name!r}")
    import importlib

    module_name, attr = _LAZY[name]
    return getattr(importlib.import_module(module_name), attr)
