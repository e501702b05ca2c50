"""Relabelling a finished run from its kept candidates: equal to a full re-run on the kept boxes,
human review survives, resumable, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.candidates import CandidatesFormatError, candidates_path
from autolabel.errors import ConfigError, StoreError
from autolabel.labeling import label_into_store
from autolabel.models.owlv2 import postprocess_logits
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig, Labeler
from autolabel.relabel import relabel_run
from autolabel.store import open_store
from autolabel.testing.photos import synthetic_photo

ONTOLOGY = Ontology.from_prompts(["car", "person"])
NEW = Ontology.from_prompts(["car=car,van", "person", "dog"])
ALL = DetectConfig(threshold=0.0, nms_iou=None)  # every kept box survives: comparisons see them all
K = 6  # of the tiny model's 16 patches, so the restriction matters


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i, (w, h) in enumerate([(160, 120), (96, 64), (120, 200), (128, 128)]):
        synthetic_photo(w, h, seed=i).save(folder / f"img_{i}.jpg")
    return folder


@pytest.fixture(scope="module")
def source_run(tiny_owlv2, photos, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "source"
    with open_store(run) as store:
        label_into_store(Labeler(ONTOLOGY, model=str(tiny_owlv2), config=ALL), [photos], store, keep_candidates=K)
    return run


def _labels(run):
    with open_store(run, create=False) as store:
        return {img.path: (img, store.labels(img.id, include_rejected=True)) for img in store.images(status=None)}


def test_relabel_equals_a_full_rerun_restricted_to_the_kept_boxes(tiny_owlv2, source_run, tmp_path):
    summary = relabel_run(source_run, tmp_path / "new", NEW, ALL)
    assert (summary.done, summary.failed, summary.missing) == (4, 0, [])
    labeler = Labeler(NEW, model=str(tiny_owlv2), config=ALL)
    text = labeler.detector.encode_text(NEW.queries)
    source, new = _labels(source_run), _labels(tmp_path / "new")
    assert [(i.path, i.sha256, i.width, i.height) for i, _ in source.values()] == \
           [(i.path, i.sha256, i.width, i.height) for i, _ in new.values()]
    for path, (image, dets) in new.items():
        prepared = labeler.prepare(path)
        features = labeler.detector.encode_images(prepared.detector_input[None])
        scores = labeler.detector.score(features, text)
        kept = labeler.detector.candidates(features, K)[0].to_host().patch_index
        expected = postprocess_logits(scores.logits.numpy()[0, kept], scores.pred_boxes.numpy()[0, kept],
                                      prepared.size, NEW, ALL)
        order = np.lexsort(dets.xyxy.T), np.lexsort(expected.xyxy.T)
        np.testing.assert_allclose(dets.xyxy[order[0]], expected.xyxy[order[1]], atol=1e-4)
        np.testing.assert_array_equal(dets.class_ids[order[0]], expected.class_ids[order[1]])
        np.testing.assert_allclose(dets.scores[order[0]], expected.scores[order[1]], atol=2e-3)  # fp16 embeddings
        assert candidates_path(tmp_path / "new", image.sha256).exists()  # relabellable again


def _full_rerun_on_kept_boxes(labeler: Labeler, path):
    """What labelling ``path`` with ``labeler`` gives when only its K kept candidates may become boxes:
    the engine's own scores (every query column) restricted to those patches, then post-processed."""
    from autolabel.models.postprocess import BoxScores

    prepared = labeler.prepare(path)
    launched = labeler.score(labeler.encode([prepared]))
    kept = labeler.candidates(launched, K)[0].to_host().patch_index
    restricted = BoxScores(launched.scores.logits[:, kept], launched.scores.pred_boxes[:, kept])
    return labeler.detector.postprocess(restricted, [prepared.size], labeler.ontology, labeler.config)[0]


def _assert_same_detections(dets, expected):
    order = np.lexsort(dets.xyxy.T), np.lexsort(expected.xyxy.T)
    np.testing.assert_allclose(dets.xyxy[order[0]], expected.xyxy[order[1]], atol=1e-4)
    np.testing.assert_array_equal(dets.class_ids[order[0]], expected.class_ids[order[1]])
    np.testing.assert_array_equal(dets.prompt_ids[order[0]], expected.prompt_ids[order[1]])
    np.testing.assert_allclose(dets.scores[order[0]], expected.scores[order[1]], atol=2e-3)  # fp16 embeddings


@pytest.mark.parametrize("case", ["negative prompt", "exemplars"])
def test_negatives_and_exemplars_relabel_like_a_full_rerun(tiny_owlv2, photos, source_run, tmp_path, case):
    if case == "negative prompt":
        ontology = Ontology.from_prompts(["car=car,van;not=toy car,truck", "person"])
    else:  # a class found by example boxes alone (one of them negative), beside a text class
        ontology = Ontology.from_data([
            {"name": "car", "prompts": ["car"]},
            {"name": "widget", "exemplars": [{"image": str(photos / "img_0.jpg"), "box": [10, 10, 90, 70]},
                                             {"image": str(photos / "img_3.jpg"), "box": [0, 0, 40, 40],
                                              "negative": True}]},
        ])
    summary = relabel_run(source_run, tmp_path / "new", ontology, ALL)
    assert summary.done == 4
    labeler = Labeler(ontology, model=str(tiny_owlv2), config=ALL)
    plain = Labeler(Ontology.from_data([{"name": c.name, "prompts": list(c.prompts) or [c.name]}
                                        for c in ontology.classes]), model=str(tiny_owlv2), config=ALL)
    changed = 0
    for path, (_, dets) in _labels(tmp_path / "new").items():
        _assert_same_detections(dets, _full_rerun_on_kept_boxes(labeler, path))
        without = _full_rerun_on_kept_boxes(plain, path)
        changed += len(dets) != len(without) or not np.array_equal(dets.class_ids, without.class_ids)
    assert changed  # the negatives (exemplars) decided something: the comparison can fail


def test_relabel_applies_the_threshold_like_a_full_rerun(tiny_owlv2, source_run, tmp_path):
    """Most candidates die at the threshold before post-processing; the survivors are the same."""
    config = DetectConfig(threshold=0.5, nms_iou=0.3)
    relabel_run(source_run, tmp_path / "new", NEW, config)
    labeler = Labeler(NEW, model=str(tiny_owlv2), config=config)
    kept = [_full_rerun_on_kept_boxes(labeler, path) for path in _labels(tmp_path / "new")]
    assert 0 < sum(map(len, kept)) < 4 * K  # the threshold drops some boxes, not all
    for (path, (_, dets)), expected in zip(_labels(tmp_path / "new").items(), kept):
        _assert_same_detections(dets, expected)


def test_candidates_of_an_earlier_format_are_refused_in_one_line(source_run, tmp_path):
    import shutil

    run = tmp_path / "old"
    shutil.copytree(source_run, run)
    with open_store(run, create=False) as store:
        image = next(store.images())
    old = np.zeros(K, [("patch_index", "<i4"), ("pred_boxes", "<f4", (4,)), ("logit_shift", "<f4"),
                       ("logit_scale", "<f4"), ("class_embeds", "<f2", (32,))])
    np.save(candidates_path(run, image.sha256), old)
    with pytest.raises(CandidatesFormatError, match="label the run again") as caught:
        relabel_run(run, tmp_path / "new", NEW, ALL)
    assert "\n" not in str(caught.value)


def test_human_review_survives_a_relabel_and_its_resume(source_run, tmp_path):
    import shutil

    run = tmp_path / "reviewed"
    shutil.copytree(source_run, run)
    with open_store(run, create=False) as store:
        image = next(store.images())
        labels = store.labels(image.id)
        rejected, edited = int(labels.ids[0]), int(labels.ids[1])
        rejected_box, rejected_class = labels.xyxy[0], labels.class_ids[0]
        store.set_review(rejected, "rejected")
        store.update_detection(edited, class_name="person", xyxy=[1, 2, 30, 40])
        added = store.add_detection(image.id, "car", [5, 5, 50, 50])
        store.set_image_reviewed(image.id)
        before = {r["id"]: r for r in map(store.detection_row, (rejected, edited, added))}
    # The same prompts, so the model finds the rejected box again.
    relabel_run(run, tmp_path / "new", ONTOLOGY, ALL)
    again = relabel_run(run, tmp_path / "new", ONTOLOGY, ALL)  # resume: nothing to do, nothing duplicated
    assert again.skipped == 4 and again.done == 0
    with open_store(tmp_path / "new", create=False) as out:
        new_image = next(img for img in out.images() if img.path == image.path)
        assert new_image.reviewed
        labels = out.labels(new_image.id, include_rejected=True)
        touched = labels.ids[(labels.sources == "human") | (labels.reviews != "pending")]
        rows = [out.detection_row(int(i)) for i in touched]
        strip = lambda r: {k: v for k, v in r.items() if k not in ("id", "image_id")}  # noqa: E731
        assert sorted(map(str, map(strip, rows))) == sorted(map(str, map(strip, before.values())))
        pending = labels[labels.reviews == "pending"]
        same_box = np.all(np.abs(pending.xyxy - rejected_box) < 1e-3, axis=1) & (pending.class_ids == rejected_class)
        assert not same_box.any()  # the rejected prediction does not come back as a new one


def test_an_interrupted_copy_of_human_labels_is_completed_on_resume(source_run, tmp_path):
    import shutil

    run = tmp_path / "reviewed"
    shutil.copytree(source_run, run)
    with open_store(run, create=False) as store:
        image = next(store.images())
        store.add_detection(image.id, "person", [1, 1, 9, 9])
    relabel_run(run, tmp_path / "new", NEW, ALL)
    with open_store(tmp_path / "new", create=False) as out:  # as if stopped before the final pass
        new_image = next(img for img in out.images() if img.path == image.path)
        human = out.labels(new_image.id).ids[out.labels(new_image.id).sources == "human"]
        out.delete_detection(int(human[0]))
    relabel_run(run, tmp_path / "new", NEW, ALL)
    with open_store(tmp_path / "new", create=False) as out:
        assert (out.labels(new_image.id).sources == "human").sum() == 1


def test_a_missing_candidates_file_is_reported_not_a_crash(source_run, tmp_path):
    import shutil

    run = tmp_path / "damaged"
    shutil.copytree(source_run, run)
    with open_store(run, create=False) as store:
        image = next(store.images())
    candidates_path(run, image.sha256).unlink()
    summary = relabel_run(run, tmp_path / "new", NEW, ALL)
    assert summary.missing == [image.path] and summary.done == 3 and summary.failed == 1
    with open_store(tmp_path / "new", create=False) as out:
        assert "--keep" not in out.failures()[0][1] and "no candidates" in out.failures()[0][1]


def test_small_batches_read_ahead_give_the_same_run(source_run, tmp_path):
    """Batches of one image: each file is read into the other buffer while the previous is scored;
    a missing file in the middle blanks only its own slot."""
    import shutil

    run = tmp_path / "damaged"
    shutil.copytree(source_run, run)
    with open_store(run, create=False) as store:
        second = list(store.images())[1]
    candidates_path(run, second.sha256).unlink()
    whole = relabel_run(run, tmp_path / "whole", NEW, ALL)
    small = relabel_run(run, tmp_path / "small", NEW, ALL, batch_size=1, workers=3)
    assert (small.done, small.failed, small.missing) == (whole.done, whole.failed, whole.missing) == (3, 1, [second.path])
    assert whole.failed_in_source == 0  # it failed here, for want of its candidates
    expected = _labels(tmp_path / "whole")
    for path, (image, dets) in _labels(tmp_path / "small").items():
        assert image.status == expected[path][0].status
        np.testing.assert_array_equal(dets.xyxy, expected[path][1].xyxy)
        np.testing.assert_array_equal(dets.class_ids, expected[path][1].class_ids)
        np.testing.assert_allclose(dets.scores, expected[path][1].scores, rtol=0, atol=1e-6)  # another product size
    # The relabelled run relabels again; its failed image comes in a batch of its own.
    again = relabel_run(tmp_path / "small", tmp_path / "again", NEW, ALL, batch_size=1)
    assert (again.done, again.failed, again.missing, again.failed_in_source) == (3, 1, [], 1)


@pytest.mark.parametrize("case", ["no candidates", "class of a human label dropped", "out is the source"])
def test_clear_errors(tiny_owlv2, photos, source_run, tmp_path, case):
    import shutil

    run, ontology, out = source_run, NEW, tmp_path / "new"
    if case == "no candidates":
        run = tmp_path / "plain"
        with open_store(run) as store:
            label_into_store(Labeler(ONTOLOGY, model=str(tiny_owlv2), config=ALL), [photos], store, keep_candidates=0)
        match = "--keep-candidates"
    elif case == "class of a human label dropped":
        run = tmp_path / "human"
        shutil.copytree(source_run, run)
        with open_store(run, create=False) as store:
            store.add_detection(next(store.images()).id, "person", [1, 1, 9, 9])
        ontology, match = Ontology.from_prompts(["car"]), "'person'"
    else:
        out, match = source_run, "new run folder"
    with pytest.raises(ConfigError, match=match):
        relabel_run(run, out, ontology, ALL)


def test_resuming_with_other_prompts_is_refused(source_run, tmp_path):
    relabel_run(source_run, tmp_path / "new", NEW, ALL)
    with pytest.raises(StoreError, match="another configuration"):
        relabel_run(source_run, tmp_path / "new", ONTOLOGY, ALL)


def test_a_loaded_detector_is_used_as_is_and_must_be_the_runs(tiny_owlv2, source_run, tmp_path, monkeypatch):
    from autolabel.models import registry

    detector = registry.load_detector(str(tiny_owlv2))
    loaded = []
    load = registry.load_detector
    monkeypatch.setattr(registry, "load_detector", lambda *a, **k: loaded.append(a) or load(*a, **k))
    relabel_run(source_run, tmp_path / "own", NEW, ALL, detector=detector)
    assert loaded == []  # no second copy of the model
    relabel_run(source_run, tmp_path / "copy", NEW, ALL)
    assert len(loaded) == 1
    own, copy = _labels(tmp_path / "own"), _labels(tmp_path / "copy")
    for path, (_, dets) in own.items():
        np.testing.assert_array_equal(dets.xyxy, copy[path][1].xyxy)
        np.testing.assert_array_equal(dets.scores, copy[path][1].scores)
    detector.name = "another/checkpoint"
    with pytest.raises(ConfigError, match="relabel it with its own detector"):
        relabel_run(source_run, tmp_path / "other", NEW, ALL, detector=detector)
    assert not (tmp_path / "other").exists()
