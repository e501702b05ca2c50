"""Decode tasks prepare images exactly as the model actors' labeler would, without its weights."""

from __future__ import annotations

import pytest

from autolabel.distributed import workers
from autolabel.ontology import Ontology
from autolabel.pipeline import Labeler

from ray_helpers import write_photos


@pytest.mark.parametrize("family", ["owlv2", "owlvit"])
def test_the_detector_side_is_read_from_the_checkpoint_as_the_loaded_detector_states_it(family, tiny_owlv2, tmp_path):
    from autolabel.models.registry import load_detector
    from autolabel.testing.owlvit_checkpoint import build_owlvit_checkpoint

    checkpoint = str(tiny_owlv2 if family == "owlv2" else build_owlvit_checkpoint(tmp_path, image_size=96))
    assert workers.detector_side(checkpoint) == load_detector(checkpoint).image_size
    assert workers.detector_side(checkpoint) == (64 if family == "owlv2" else 96)


def test_a_tiled_decoder_prepares_the_same_tiles_and_inputs_as_the_labeler(tiny_owlv2, tmp_path):
    photo = next(write_photos(tmp_path / "photos", 1).glob("*.jpg"))
    labeler = Labeler(Ontology.from_prompts(["thing"]), model=str(tiny_owlv2), device="cpu", tiles="auto")
    decoder = workers.decoding_labeler(labeler, workers.load_model_inputs(labeler), "cpu")

    from_decoder, from_labeler = decoder.prepare(photo), labeler.prepare(photo)
    assert len(from_labeler.tiles) > 1  # auto plans tiles of the tiny model's 64 px side
    assert from_decoder.tiles == from_labeler.tiles
    assert all(a.equal(b) for a, b in zip(from_decoder.tile_inputs, from_labeler.tile_inputs, strict=True))
