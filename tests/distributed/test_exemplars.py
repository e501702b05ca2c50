"""Exemplar images travel from the driver to the actors as bytes."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.distributed.exemplars import read_exemplar_images, with_exemplar_copies
from autolabel.errors import ConfigError
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig, Labeler

from ray_helpers import write_photos


def _ontology(image) -> Ontology:
    return Ontology.from_data([{"name": "thing", "prompts": ["thing"]},
                               {"name": "widget", "exemplars": [{"image": str(image), "box": [5, 5, 60, 50]}]}])


def test_actors_embed_copies_and_label_as_with_the_originals(tiny_owlv2, tmp_path):
    photos = write_photos(tmp_path / "photos", 2)
    exemplar, image = sorted(photos.glob("*.jpg"))
    ontology = _ontology(exemplar)
    files = read_exemplar_images(ontology)
    assert files == {str(exemplar): exemplar.read_bytes()}
    original = Labeler(ontology, model=str(tiny_owlv2), config=DetectConfig(threshold=0.0), device="cpu")
    expected = original.label(original.encode([original.prepare(image)]))[0]

    exemplar.rename(tmp_path / "moved.jpg")  # where the actors run, the original is out of reach
    (tmp_path / "copies").mkdir()
    shipped = Labeler(ontology, model=str(tiny_owlv2), config=DetectConfig(threshold=0.0), device="cpu")
    copied = with_exemplar_copies(shipped, files, tmp_path / "copies")
    assert [e.image for c in copied.ontology.classes for e in c.exemplars] == [str(tmp_path / "copies/exemplar-0.jpg")]
    got = copied.label(copied.encode([copied.prepare(image)]))[0]
    assert len(expected) and np.array_equal(got.xyxy, expected.xyxy) and np.array_equal(got.scores, expected.scores)
    assert list(got.class_ids) == list(expected.class_ids)


def test_a_changed_or_missing_exemplar_image_is_a_config_error(tmp_path):
    exemplar = next(write_photos(tmp_path / "photos", 1).glob("*.jpg"))
    ontology = _ontology(exemplar)
    exemplar.write_bytes(exemplar.read_bytes() + b"\0")
    with pytest.raises(ConfigError, match="changed since"):
        read_exemplar_images(ontology)
    exemplar.unlink()
    with pytest.raises(ConfigError, match="cannot read exemplar image"):
        read_exemplar_images(ontology)
