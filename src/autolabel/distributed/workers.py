"""What runs in the Ray workers: decode tasks and model actors, both through ``pipeline.Labeler``.

Rows between the stages are pickled engine objects: a ``PreparedImage`` (or an ``ImageResult``
for a file that failed) from a decode task to an actor, and one ``ImageResult`` per image (boxes,
scores, RLE masks: a few KB) from an actor to the driver. Pixels never reach the driver.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import socket
import tempfile

import numpy as np

from autolabel.distributed.sources import is_uri, read_uri, suffix
from autolabel.errors import ImageLoadError
from autolabel.pipeline import Labeler, PreparedImage
from autolabel.store import ImageResult

log = logging.getLogger(__name__)


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
    exactly as the single-process engine does."""

    compiled = True  # never compiled: the stand-in runs no model

    def __init__(self, name: str, preprocessor, device: str):
        self.name = name
        self.preprocessor = preprocessor
        self.device = device


def load_preprocessors(labeler: Labeler) -> list:
    """The preprocessors of ``labeler``'s models (detector first), built from their processor files
    alone: a decode worker never loads weights."""
    from autolabel.models.registry import load_preprocessor

    names = [(labeler.model, "detector")] + ([(labeler.sam_model, "segmenter")] if labeler.uses_segmenter else [])
    return [load_preprocessor(name, kind, labeler.exact) for name, kind in names]


def decoding_labeler(labeler: Labeler, preprocessors: list, device: str) -> Labeler:
    """A labeler that can ``prepare`` (decode and preprocess) but holds no model."""
    detector, *segmenter = [PreprocessOnly(name, p, device)
                            for name, p in zip((labeler.model, labeler.sam_model), preprocessors)]
    return Labeler(labeler.ontology, detector=detector, segmenter=segmenter[0] if segmenter else None,
                   mode=labeler.mode, config=labeler.config, exact=labeler.exact)


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
        log.exception("unexpected error on %s", path)
        return ImageResult(path=path, error=f"{path}: unexpected {type(exc).__name__}: {exc}")


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

    Returns ``{"result": [pickled ImageResult], "actor": [host:pid]}`` in batch order; the actor
    name lets the driver count images per actor (and a test find the process to kill)."""

    def __init__(self, labeler: Labeler):
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
