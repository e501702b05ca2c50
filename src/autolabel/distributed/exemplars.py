"""Exemplar images travel with the run: the driver reads each once and ships its bytes to the model
actors, which embed private copies. Workers then need no access to the driver's files (exemplars
drawn in the UI or listed in an ``--exemplars`` file usually live on the driver's disk only), and
every actor embeds exactly the bytes the run's configuration recorded (their ``sha256``)."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import replace
from pathlib import Path

from autolabel.errors import ConfigError
from autolabel.ontology import Ontology
from autolabel.pipeline import Labeler


def read_exemplar_images(ontology: Ontology) -> dict[str, bytes]:
    """The bytes of every exemplar image of ``ontology``, by its path; ``ConfigError`` for an image
    that cannot be read or has changed since the ontology recorded it."""
    files: dict[str, bytes] = {}
    for exemplar in (e for c in ontology.classes for e in c.exemplars):
        if exemplar.image in files:
            continue
        try:
            data = Path(exemplar.image).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read exemplar image {exemplar.image}: {exc.strerror or exc}") from None
        if hashlib.sha256(data).hexdigest() != exemplar.sha256:
            raise ConfigError(f"exemplar image {exemplar.image} changed since the ontology was made: make it again")
        files[exemplar.image] = data
    return files


def with_exemplar_copies(labeler: Labeler, files: dict[str, bytes], folder: str | Path) -> Labeler:
    """A copy of ``labeler`` whose exemplars point at copies of ``files`` written under ``folder``
    (same bytes, so the same embeddings and hashes)."""
    copies = {}
    for index, (image, data) in enumerate(files.items()):
        path = Path(folder) / f"exemplar-{index}{Path(image).suffix}"
        path.write_bytes(data)
        copies[image] = str(path)
    classes = tuple(replace(c, exemplars=tuple(replace(e, image=copies[e.image]) for e in c.exemplars))
                    for c in labeler.ontology.classes)
    moved = copy.copy(labeler)
    moved.ontology = Ontology(classes)
    return moved
