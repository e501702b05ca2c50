"""The on-disk format of kept candidates: atomic files named by content, fp16 embeddings, and a
clear error (never a crash) for a missing or damaged file."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.candidates import (
    CandidateBuffer, Candidates, CandidatesFormatError, CandidatesMissing, candidates_layout, candidates_path,
    link_candidates, load_candidates, save_candidates,
)

SHA = "ab" + "0" * 62


def _candidates(k: int = 5, d: int = 8, seed: int = 0) -> Candidates:
    rng = np.random.default_rng(seed)
    return Candidates(np.sort(rng.choice(100, k, replace=False)), rng.random((k, 4), dtype=np.float32),
                      rng.standard_normal((k, d)).astype(np.float32), rng.standard_normal(k).astype(np.float32),
                      rng.random(k, dtype=np.float32) + 1)


def test_save_and_load_round_trip_with_fp16_embeddings(tmp_path):
    saved = _candidates()
    path = save_candidates(tmp_path, SHA, saved)
    assert path == tmp_path / "candidates" / "ab" / f"{SHA}.npy"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    loaded = load_candidates(tmp_path, SHA)
    assert loaded.class_embeds.dtype == np.float16
    np.testing.assert_array_equal(loaded.patch_index, saved.patch_index)
    for name in ("pred_boxes", "logit_shift", "logit_scale"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(saved, name))
    np.testing.assert_allclose(loaded.class_embeds, saved.class_embeds, rtol=1e-3, atol=1e-4)
    assert len(loaded) == 5


def test_torch_tensors_are_saved_like_numpy_arrays(tmp_path):
    import torch

    saved = _candidates()
    as_torch = Candidates(*(torch.from_numpy(np.asarray(getattr(saved, f))) for f in
                            ("patch_index", "pred_boxes", "class_embeds", "logit_shift", "logit_scale")))
    save_candidates(tmp_path, SHA, as_torch)
    np.testing.assert_array_equal(load_candidates(tmp_path, SHA).pred_boxes, saved.pred_boxes)


def test_missing_or_damaged_files_raise_candidates_missing(tmp_path):
    with pytest.raises(CandidatesMissing, match="missing"):
        load_candidates(tmp_path, SHA)
    path = candidates_path(tmp_path, SHA)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an array")
    with pytest.raises(CandidatesMissing, match="unreadable"):
        load_candidates(tmp_path, SHA)


def test_a_file_name_must_be_a_digest(tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        candidates_path(tmp_path, "../../etc/passwd")


def test_link_gives_the_target_run_the_same_file(tmp_path):
    save_candidates(tmp_path / "a", SHA, _candidates())
    link_candidates(tmp_path / "a", tmp_path / "b", SHA)
    link_candidates(tmp_path / "a", tmp_path / "b", SHA)  # already there: nothing to do
    assert candidates_path(tmp_path / "b", SHA).read_bytes() == candidates_path(tmp_path / "a", SHA).read_bytes()


def test_a_file_is_one_npy_record_of_blocks_that_numpy_opens(tmp_path):
    saved = _candidates(k=5, d=8)
    record = np.load(save_candidates(tmp_path, SHA, saved))
    assert record.shape == () and record["class_embeds"].shape == (5, 8)
    np.testing.assert_array_equal(record["pred_boxes"], saved.pred_boxes)


def test_a_buffer_stacks_several_files_and_blanks_an_unreadable_one(tmp_path):
    shas = [f"{i:02x}" + "0" * 62 for i in range(3)]
    saved = [_candidates(seed=i) for i in range(3)]
    for sha, c in zip(shas, saved):
        save_candidates(tmp_path, sha, c)
    candidates_path(tmp_path, shas[1]).unlink()
    buffer = CandidateBuffer(4, *candidates_layout(candidates_path(tmp_path, shas[0])))
    buffer.read(0, candidates_path(tmp_path, shas[0]))
    with pytest.raises(CandidatesMissing, match="missing"):
        buffer.read(1, candidates_path(tmp_path, shas[1]))
    buffer.blank(1)
    buffer.read(2, candidates_path(tmp_path, shas[2]))
    batch = buffer.candidates(3)
    assert batch.class_embeds.shape == (3, 5, 8) and len(batch) == 5
    for slot in (0, 2):
        np.testing.assert_array_equal(batch.pred_boxes[slot], saved[slot].pred_boxes)
        np.testing.assert_array_equal(batch.logit_scale[slot], saved[slot].logit_scale)
    assert np.isneginf(batch.logit_shift[1]).all()  # a blank slot scores -inf: it yields nothing


@pytest.mark.parametrize("damage", ["truncated", "longer", "another layout", "format 1", "not ours"])
def test_a_damaged_or_foreign_file_is_refused_with_what_is_wrong(tmp_path, damage):
    reference = save_candidates(tmp_path / "ref", SHA, _candidates(k=5, d=8))
    path = candidates_path(tmp_path, SHA)
    path.parent.mkdir(parents=True)
    error, match = CandidatesMissing, "unreadable"
    if damage == "truncated":
        path.write_bytes(reference.read_bytes()[:-3])
        match = "truncated"
    elif damage == "longer":
        path.write_bytes(reference.read_bytes() + b"\0")
    elif damage == "another layout":
        save_candidates(tmp_path, SHA, _candidates(k=4, d=8))
        match = "4 candidates of width 8"
    elif damage == "format 1":
        np.save(path, np.zeros(5, [("patch_index", "<i4"), ("pred_boxes", "<f4", (4,)), ("logit_shift", "<f4"),
                                   ("logit_scale", "<f4"), ("class_embeds", "<f2", (8,))]))
        error, match = CandidatesFormatError, "earlier autolabel .* --keep-candidates"
    else:
        np.save(path, np.zeros((5, 8), np.float32))
    with pytest.raises(error, match=match):
        CandidateBuffer(1, 5, 8).read(0, path)
