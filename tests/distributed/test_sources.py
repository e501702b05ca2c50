"""Inputs for the Ray engine: local folders and URIs (pyarrow's local filesystem stands in for s3/gs)."""

from __future__ import annotations

import pytest

from autolabel.distributed import sources, workers
from autolabel.errors import ConfigError
from autolabel.ontology import Ontology
from autolabel.pipeline import Labeler, PreparedImage
from autolabel.store import ImageResult

from ray_helpers import write_photos


def test_a_folder_uri_lists_images_like_a_local_folder(tmp_path):
    photos = write_photos(tmp_path / "photos", 3)
    (photos / "notes.txt").write_text("not an image")
    (photos / ".hidden.jpg").write_bytes(b"")
    (photos / "sub").mkdir()
    (photos / "sub" / "deep.png").write_bytes(b"")
    uri = f"file://{photos}"
    listed = sources.list_images([uri])
    assert listed == sorted(f"{uri}/{p.relative_to(photos)}" for p in
                            [*photos.glob("*.jpg"), photos / "sub" / "deep.png"] if not p.name.startswith("."))
    assert [u.removeprefix("file://") for u in listed] == [str(p) for p in sources.list_images([photos])]


def test_local_folders_and_uris_together_are_one_sorted_list_without_repeats(tmp_path):
    photos = write_photos(tmp_path / "photos", 3)
    uri = f"file://{photos}"
    local = sorted(str(p.resolve()) for p in photos.glob("*.jpg"))
    remote = sorted(f"{uri}/{p.name}" for p in photos.glob("*.jpg"))
    listed = sources.list_images([uri, photos, remote[0], photos])
    assert listed == sorted(local + remote)  # each image once, though named twice
    assert sources.list_images([photos]) == local


def test_a_missing_uri_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        sources.list_images([f"file://{tmp_path}/nothing"])


def test_a_uri_is_prepared_like_its_local_file_and_recorded_by_uri(tiny_owlv2, tmp_path):
    photos = write_photos(tmp_path / "photos", 1)
    local = next(photos.glob("*.jpg"))
    labeler = Labeler(Ontology.from_prompts(["thing"]), model=str(tiny_owlv2), device="cpu")
    decoder = workers.decoding_labeler(labeler, workers.load_model_inputs(labeler), "cpu")

    from_uri = workers.prepare(decoder, f"file://{local}", 10**8)
    from_path = workers.prepare(decoder, str(local), 10**8)
    assert isinstance(from_uri, PreparedImage) and from_uri.path == f"file://{local}"
    assert (from_uri.sha256, from_uri.size) == (from_path.sha256, from_path.size)
    assert from_uri.detector_input.equal(from_path.detector_input)

    (photos / "bad.jpg").write_bytes(b"not a jpeg")
    for path in (f"file://{photos}/bad.jpg", f"file://{photos}/gone.jpg"):
        failed = workers.prepare(decoder, path, 10**8)
        assert isinstance(failed, ImageResult) and failed.error.startswith(path)
