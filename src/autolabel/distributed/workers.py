"""What runs in the Ray workers: decode tasks and model actors, both through ``pipeline.Labeler``.

Rows between the stages are pickled engine objects: a ``PreparedImage`` (or an ``ImageResult``
for a file that failed) from a decode task to an actor, and one ``ImageResult`` per image (boxes,
scores, RLE masks: a few KB) from an actor to the driver. Pixels never reach the driver.
"""

from __future__ import annotations

import copy
import os
import pickle
import socket
import tempfile
from dataclasses import dataclass

import numpy as np

from autolabel.distributed.exemplars import with_exemplar_copies
from autolabel.distributed.sources import is_uri, read_uri, suffix
from autolabel.errors import ImageLoadError
from autolabel.failures import Unexpected
from autolabel.pipeline import Labeler, PreparedImage
from autolabel.store import ImageResult


def dumps(value) -> bytes:
    return pickle.dumps(value, protocol=5)


def on_device(labeler: Labeler, device: str) -> Labeler:
    """A copy of an unloaded ``labeler`` whose models will load on ``device``."""
    moved = copy.copy(labeler)
    moved.device = device
    return moved


# -- decode tasks -----------------------------------------------------------------------------------


class PreprocessOnly:
    """Stands in for a loaded detector or segmenter where only its preprocessor is needed, so that
    ``Labeler.prepare`` runs in a stateless task without the weights. ``device``: where the model
    actors run; on an accelerator ``prepare`` keeps the pixels and the actor makes the inputs there,
    exactly as the single-process engine does. ``image_size``: the square input side the loaded
    model states (None: it states none), which ``Labeler.tile_boxes`` plans ``--tiles auto`` from."""

    compiled = True  # never compiled: the stand-in runs no model

    def __init__(self, name: str, preprocessor, device: str, image_size: int | None = None):
        self.name = name
        self.preprocessor = preprocessor
        self.device = device
        self.image_size = image_size


@dataclass(frozen=True)
class ModelInputs:
    """What decode tasks need of the models, read from the checkpoints' processor and config files
    alone (a decode worker never loads weights): the preprocessors (detector first) and the
    detector's input side (``detector_side``)."""

    preprocessors: list
    detector_side: int | None


def load_model_inputs(labeler: Labeler) -> ModelInputs:
    from autolabel.models.registry import load_preprocessor

    names = [(labeler.model, "detector")] + ([(labeler.sam_model, "segmenter")] if labeler.uses_segmenter else [])
    return ModelInputs([load_preprocessor(name, kind, labeler.exact) for name, kind in names],
                       detector_side(labeler.model) if labeler.tiles is not None else None)


def detector_side(name: str) -> int | None:
    """The ``image_size`` a loaded detector of checkpoint ``name`` states (None for families that
    state none): the family's own property, evaluated on the config the model would load with."""
    from types import SimpleNamespace

    from autolabel.models.loading import load_pretrained
    from autolabel.models.registry import family_for

    family_class = family_for(name, "detector").load_class()
    side = getattr(family_class, "image_size", None)
    if not isinstance(side, property):
        return None
    model_class, _ = family_class.checkpoint_classes(name)
    config = load_pretrained(model_class.config_class, name, f"the {family_class.family} config")
    return side.fget(SimpleNamespace(model=SimpleNamespace(config=config)))


def decoding_labeler(labeler: Labeler, inputs: ModelInputs, device: str) -> Labeler:
    """A labeler that can ``prepare`` (decode, preprocess, cut tiles) exactly as the model actors'
    would, but holds no model."""
    detector = PreprocessOnly(labeler.model, inputs.preprocessors[0], device, inputs.detector_side)
    segmenter = PreprocessOnly(labeler.sam_model, inputs.preprocessors[1], device) if labeler.uses_segmenter else None
    return Labeler(labeler.ontology, detector=detector, segmenter=segmenter,
                   mode=labeler.mode, config=labeler.config, exact=labeler.exact, tiles=labeler.tiles)


def decode_batch(batch: dict, decoder: Labeler, max_pixels: int) -> dict:
    """Ray Data task: ``{"path": [...]}`` -> ``{"item": [pickled PreparedImage or ImageResult]}``."""
    return {"item": np.array([dumps(prepare(decoder, str(path), max_pixels)) for path in batch["path"]], dtype=object)}


def prepare(decoder: Labeler, path: str, max_pixels: int) -> PreparedImage | ImageResult:
    """One image through ``Labeler.prepare``; a file that cannot be labelled fails alone."""
    try:
        return _prepare_uri(decoder, path, max_pixels) if is_uri(path) else decoder.prepare(path, max_pixels)
    except ImageLoadError as exc:
        return ImageResult(path=path, error=str(exc))
    except Exception as exc:  # a decoder bug on one odd file must not end the run
        return Unexpected.of(path, exc).portable()  # the driver logs it and may stop the run


def _prepare_uri(decoder: Labeler, uri: str, max_pixels: int) -> PreparedImage:
    """A remote file, spooled to a temporary local file (the loader opens paths) and recorded by URI."""
    data = read_uri(uri)
    with tempfile.NamedTemporaryFile(suffix=suffix(uri)) as spool:
        spool.write(data)
        spool.flush()
        try:
            prepared = decoder.prepare(spool.name, max_pixels)
        except ImageLoadError as exc:
            raise ImageLoadError(str(exc).replace(spool.name, uri)) from exc
    prepared.path = uri
    return prepared


# -- model actors -----------------------------------------------------------------------------------


class LabelingActor:
    """Ray Data actor: loads the models once, then labels batches of prepared images.
    ``exemplar_images``: the exemplar files' bytes by path (``exemplars.read_exemplar_images``),
    embedded from private copies.

    Returns ``{"result": [pickled ImageResult], "actor": [host:pid]}`` in batch order; the actor
    name lets the driver count images per actor (and a test find the process to kill)."""

    def __init__(self, labeler: Labeler, exemplar_images: dict[str, bytes] | None = None):
        if exemplar_images:  # the copies live as long as the actor
            self._exemplar_copies = tempfile.TemporaryDirectory(prefix="autolabel-exemplars-")
            labeler = with_exemplar_copies(labeler, exemplar_images, self._exemplar_copies.name)
        self.labeler = labeler
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        labeler.model_device  # noqa: B018 -- loads the models before the first batch arrives

    def __call__(self, batch: dict) -> dict:
        items = [pickle.loads(item) for item in batch["item"]]
        good = [item for item in items if isinstance(item, PreparedImage)]
        detections = iter(self.labeler.finish(self.labeler.launch(good)))
        results = [item if isinstance(item, ImageResult)
                   else ImageResult(item.path, item.sha256, item.size.width, item.size.height, next(detections))
                   for item in items]
        return {"result": np.array([dumps(r) for r in results], dtype=object),
                "actor": np.array([self.name] * len(results), dtype=object)}
