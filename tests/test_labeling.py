"""The streaming labelling loop: same answers as the per-image path, bounded memory, threads that
do not fight the model, commits in order, loud unexpected failures."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel import labeling
from autolabel.geometry import mask_iou, rle_to_mask
from autolabel.labeling import _prefetch, _thread_pool, label_into_store
from autolabel.ontology import Ontology
from autolabel.errors import AutolabelError, ConfigError
from autolabel.geometry import Size
from autolabel.models.owlv2 import postprocess_logits
from autolabel.pipeline import DetectConfig, Labeler, StageTimes
from autolabel.store import open_store
from autolabel.testing.photos import synthetic_photo

ONTOLOGY = Ontology.from_prompts(["car=car,van", "person"])
CONFIG = DetectConfig(threshold=0.0, nms_iou=None, max_detections=8)


@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory):
    from autolabel.testing.sam2_checkpoint import build_sam2_checkpoint

    return build_sam2_checkpoint(tmp_path_factory.mktemp("sam2-tiny"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """JPEGs of several sizes (some draft-decodable for a 64 px model), one sideways (EXIF 6), a PNG."""
    folder = tmp_path_factory.mktemp("photos")
    for i, (w, h) in enumerate([(320, 240), (160, 120), (200, 300), (96, 64), (640, 480), (128, 128), (330, 210)]):
        image = synthetic_photo(w, h, seed=i)
        exif = Image.Exif()
        if i == 2:
            image, exif[0x0112] = image.transpose(Image.Transpose.ROTATE_90), 6
        image.save(folder / f"img_{i}.jpg", quality=90, exif=exif.tobytes())
    synthetic_photo(150, 100, seed=9).save(folder / "img_png.png")
    return folder


def _stored(run_dir):
    with open_store(run_dir, create=False) as store:
        return {img.path: (img, store.labels(img.id)) for img in store.images(status=None)}


def _run(labeler, inputs, run_dir, **kwargs):
    with open_store(run_dir) as store:
        return label_into_store(labeler, inputs, store, **kwargs)


def test_streaming_equals_the_per_image_computation(tiny_owlv2, photos, tmp_path):
    """Batched, threaded, pipelined labelling gives what one image at a time through the same
    steps (prepare -> pixel values -> model -> postprocess) gives."""
    labeler = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=CONFIG)
    summary = _run(labeler, [photos], tmp_path / "run", batch_size=3, workers=2)
    assert (summary.done, summary.failed) == (8, 0)
    detector = labeler.detector
    text = detector.encode_text(ONTOLOGY.queries)
    stored = _stored(tmp_path / "run")
    for path, (image, dets) in stored.items():
        prepared = labeler.prepare(path)
        assert (image.width, image.height) == prepared.size
        features = detector.encode_images(prepared.detector_input[None])
        scores = detector.score(features, text)
        expected = postprocess_logits(scores.logits.numpy()[0], scores.pred_boxes.numpy()[0], prepared.size,
                                      ONTOLOGY, CONFIG)
        assert len(dets) == len(expected)
        np.testing.assert_allclose(dets.xyxy, expected.xyxy, atol=1e-3)
        np.testing.assert_allclose(dets.scores, expected.scores, atol=1e-5)


def test_exact_path_equals_label_images_on_full_decodes(tiny_owlv2, photos, tmp_path):
    """exact=True: full decodes through the stock processor, as label_images does."""
    from autolabel.images import discover_images, load_image

    labeler = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=CONFIG, exact=True)
    _run(labeler, [photos], tmp_path / "run", batch_size=4)
    stored = _stored(tmp_path / "run")
    for path in discover_images([photos]):
        loaded = load_image(path)
        (expected,) = labeler.label_images([loaded.image])
        _, dets = stored[str(path)]
        np.testing.assert_allclose(dets.xyxy, expected.xyxy, atol=1e-4)


@pytest.fixture(scope="module")
def owlv2_960(tmp_path_factory):
    """Tiny widths at the real B/16 input size (960 px), so decode sizes are the real ones."""
    from autolabel.testing.owlv2_checkpoint import build_owlv2_checkpoint

    return build_owlv2_checkpoint(tmp_path_factory.mktemp("owlv2-960"), image_size=960)


@pytest.mark.parametrize("width, height, decoded", [(4000, 3000, (2000, 1500)), (1920, 1080, (1920, 1080))])
def test_draft_decoding_moves_outputs_no_more_than_a_jpeg_resave(owlv2_960, tmp_path, width, height, decoded):
    """The fast path's model outputs differ from the exact path's about as much as re-saving the
    JPEG at quality 90 moves them (12 MP: 1/2 draft); 2 MP is decoded at full size (no change but
    float rounding). Over all 3600 patches: random box heads react strongly on a few patches."""
    import io

    from autolabel.images import load_image

    path = tmp_path / "photo.jpg"
    synthetic_photo(width, height, seed=1).save(path, quality=90)
    from autolabel.models.base import model_inputs
    from autolabel.models.owlv2 import Owlv2Detector

    labeler = Labeler(ONTOLOGY, model=str(owlv2_960))
    detector = labeler.detector
    prepared = labeler.prepare(path)
    assert labeler.decode_side(Size(width, height)) in (None, max(decoded))
    full = load_image(path).image
    buffer = io.BytesIO()
    full.save(buffer, format="JPEG", quality=90)
    resaved = Image.open(buffer).convert("RGB")
    stock = Owlv2Detector(detector.model, detector.processor, "stock", exact=True).preprocessor
    exact = detector.encode_images(model_inputs(stock, [full])).pred_boxes
    fast = detector.encode_images(prepared.detector_input[None]).pred_boxes
    noise = detector.encode_images(model_inputs(stock, [resaved])).pred_boxes
    moved = ((fast - exact).abs() * max(width, height)).flatten()
    jpeg = ((noise - exact).abs() * max(width, height)).flatten()
    if decoded == (width, height):
        assert moved.max().item() < 0.05
    else:
        assert moved.median() <= 1.5 * jpeg.median() + 0.1
        assert moved.quantile(0.99) <= 1.5 * jpeg.quantile(0.99) + 1.0


def test_failures_order_and_progress(tiny_owlv2, photos, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for src in sorted(photos.iterdir())[:4]:
        (folder / src.name).write_bytes(src.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    (folder / "empty.jpg").write_bytes(b"")
    progress, totals = [], []
    labeler = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=CONFIG)
    summary = _run(labeler, [folder], tmp_path / "run", batch_size=2, on_progress=progress.append,
                   on_total=totals.append)
    assert (summary.done, summary.failed) == (4, 2) and totals == [6] and sum(progress) == 6
    assert {p.rsplit("/", 1)[-1] for p, _ in summary.failures} == {"broken.jpg", "empty.jpg"}
    again = _run(labeler, [folder], tmp_path / "run", batch_size=2)
    assert (again.done, again.skipped) == (0, 4)  # failed files are retried, and fail again
    assert again.failed == 2


def _decode_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("decode")]


def test_prefetch_is_bounded_and_ordered():
    ahead, peak, lock = [0], [0], threading.Lock()

    def work(i):
        with lock:
            ahead[0] += 1
            peak[0] = max(peak[0], ahead[0])
        time.sleep(0.002 * (i % 3))  # out-of-order completion
        return i

    out = []
    with _thread_pool(3, "decode") as pool:
        for item in _prefetch(work, range(60), pool, depth=5):
            with lock:
                ahead[0] -= 1
            time.sleep(0.003)  # a slow consumer: workers must wait, not pile up results
            out.append(item)
    assert out == list(range(60))
    assert peak[0] <= 5 + 1  # depth, plus the item the consumer holds
    assert not _decode_threads()  # joined on exit


def test_prefetch_joins_its_workers_when_the_consumer_stops_early():
    with _thread_pool(2, "decode") as pool:
        next(_prefetch(lambda i: time.sleep(0.01) or i, range(100), pool, depth=4))
    assert not _decode_threads()


def test_prefetch_reraises_worker_errors():
    def work(i):
        if i == 3:
            raise KeyError("boom")
        return i

    with pytest.raises(KeyError), _thread_pool(2, "decode") as pool:
        list(_prefetch(work, range(10), pool, depth=4))


def test_workers_use_one_torch_thread_and_the_model_keeps_its_own():
    before = torch.get_num_threads()
    seen = []
    with _thread_pool(2, "decode") as pool:
        list(_prefetch(lambda i: seen.append(torch.get_num_threads()) or i, range(4), pool, depth=2))
    assert set(seen) == {1}
    assert torch.get_num_threads() == before
    later = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [before]  # threads started afterwards get the process default back


def test_finished_batches_are_committed_when_the_model_loop_fails(tiny_owlv2, photos, tmp_path, monkeypatch):
    labeler = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=CONFIG)
    real_launch, calls = Labeler.launch, []

    def failing_launch(self, batch, *args, **kwargs):
        calls.append(len(batch))
        if len(calls) == 3:
            raise RuntimeError("model crashed")
        return real_launch(self, batch, *args, **kwargs)

    monkeypatch.setattr(Labeler, "launch", failing_launch)
    with pytest.raises(RuntimeError, match="model crashed"):
        _run(labeler, [photos], tmp_path / "run", batch_size=2)
    # Batch 1 was finished (and committed) when launching batch 3 failed; batch 2 was in flight.
    assert len(_stored(tmp_path / "run")) == 2
    monkeypatch.setattr(Labeler, "launch", real_launch)
    summary = _run(labeler, [photos], tmp_path / "run", batch_size=2)
    assert (summary.done, summary.skipped) == (6, 2)


def test_padded_batches_give_the_same_detections(tiny_owlv2, photos, tmp_path):
    """A compiled vision tower sees full batches only (static shapes): padding changes nothing."""
    plain = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=CONFIG)
    _run(plain, [photos], tmp_path / "plain", batch_size=3)
    padded = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=CONFIG)
    padded.compile = True
    padded.detector.compiled = True  # as compile_vision() leaves it, without compiling
    seen = []
    real = padded.detector.encode_images
    padded.detector.encode_images = lambda pv: seen.append(pv.shape[0]) or real(pv)
    _run(padded, [photos], tmp_path / "padded", batch_size=3)
    assert set(seen) == {3}
    a, b = _stored(tmp_path / "plain"), _stored(tmp_path / "padded")
    for path in a:
        np.testing.assert_allclose(a[path][1].xyxy, b[path][1].xyxy, atol=1e-3)


def test_segment_mode_streams_masks_at_original_size(tiny_owlv2, tiny_sam2, photos, tmp_path):
    config = DetectConfig(threshold=0.0, nms_iou=None, max_detections=3)
    labeler = Labeler(ONTOLOGY, model=str(tiny_owlv2), sam_model=str(tiny_sam2), mode="segment", config=config)
    times = StageTimes()
    summary = _run(labeler, [photos], tmp_path / "run", batch_size=3, workers=2, times=times)
    assert (summary.done, summary.failed) == (8, 0)
    assert {"decode", "preprocess", "vision", "sam2_encoder", "sam2_decoder", "masks", "store"} <= set(times.as_dict())
    # The same boxes through the segmenter's own per-image API give the same masks.
    from autolabel.images import load_image

    from autolabel.models.base import model_inputs

    segmenter = labeler.segmenter
    for path, (image, dets) in _stored(tmp_path / "run").items():
        assert len(dets) == 3
        loaded = load_image(path)
        (embedding,) = segmenter.embed(model_inputs(segmenter.preprocessor, [loaded.image]),
                                       [Size(loaded.width, loaded.height)])
        expected = segmenter.predict(embedding, dets.xyxy)
        for rle_stored, rle in zip(dets.masks, expected):
            assert rle_stored["size"] == [image.height, image.width]
            assert mask_iou(rle_to_mask(rle_stored), rle_to_mask(rle)) > 0.98


def test_default_workers():
    assert labeling.default_workers("cpu") == 1
    assert 1 <= labeling.default_workers("cuda") <= 8


def test_device_side_preprocessing_gives_the_same_results(tiny_owlv2, tiny_sam2, photos, tmp_path, monkeypatch):
    """Beside a GPU the workers hand over uint8 pixels and the device makes the inputs; the same
    code path, run here on the CPU, must give what the worker-side path gives."""
    config = DetectConfig(threshold=0.0, nms_iou=None, max_detections=3)
    make = lambda: Labeler(ONTOLOGY, model=str(tiny_owlv2), sam_model=str(tiny_sam2), mode="segment", config=config)
    _run(make(), [photos], tmp_path / "worker", batch_size=3)
    device_side = make()
    monkeypatch.setattr(Labeler, "model_device", property(lambda self: "cuda"))
    prepared = device_side.prepare(sorted(photos.iterdir())[0])
    assert prepared.detector_input is None and prepared.segmenter_input is None
    assert prepared.pixels is not None and prepared.pixels.dtype == torch.uint8
    _run(device_side, [photos], tmp_path / "device", batch_size=3, workers=2)
    a, b = _stored(tmp_path / "worker"), _stored(tmp_path / "device")
    for path in a:
        np.testing.assert_allclose(a[path][1].xyxy, b[path][1].xyxy, atol=1e-3)
        assert a[path][1].masks == b[path][1].masks


def test_one_unexpected_failure_is_logged_with_its_traceback_and_the_run_goes_on(tiny_owlv2, photos, tmp_path,
                                                                                 monkeypatch, caplog):
    labeler = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=CONFIG)
    real_prepare = Labeler.prepare

    def prepare(self, path, *args, **kwargs):
        if str(path).endswith("img_3.jpg"):
            raise ZeroDivisionError("decoder bug")
        return real_prepare(self, path, *args, **kwargs)

    monkeypatch.setattr(Labeler, "prepare", prepare)
    summary = _run(labeler, [photos], tmp_path / "run", batch_size=2)
    assert (summary.done, summary.failed) == (7, 1)
    assert "unexpected ZeroDivisionError: decoder bug" in summary.failures[0][1]
    logged = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
    assert len(logged) == 1 and logged[0].exc_info[0] is ZeroDivisionError


def test_a_run_whose_first_images_all_fail_the_same_unexpected_way_stops(tiny_owlv2, tmp_path, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(20):
        synthetic_photo(40, 30, seed=i).save(folder / f"{i:02d}.jpg")
    monkeypatch.setattr(Labeler, "prepare", lambda self, path, *a, **k: 1 / 0)
    labeler = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=CONFIG)
    with pytest.raises(AutolabelError, match=r"first 8 images all failed .*ZeroDivisionError"):
        _run(labeler, [folder], tmp_path / "run", batch_size=2)
    assert len(_stored(tmp_path / "run")) < 20  # stopped early; what was written is kept


def test_entries_discovery_cannot_use_are_reported_as_failed(tiny_owlv2, photos, tmp_path):
    folder = tmp_path / "links"
    folder.mkdir()
    (folder / "ok.jpg").write_bytes((photos / "img_0.jpg").read_bytes())
    (folder / "gone.jpg").symlink_to(tmp_path / "no-such-file.jpg")
    labeler = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=CONFIG)
    summary = _run(labeler, [folder], tmp_path / "run")
    assert (summary.done, summary.failed) == (1, 1)
    assert "no-such-file.jpg" in summary.failures[0][0] and "not found" in summary.failures[0][1]  # where it points


def test_kept_candidates_are_saved_before_their_images_commit_and_recorded_in_the_config(tiny_owlv2, photos, tmp_path):
    """OWLv2 keeps candidates by default; every done image has its file; K is part of the run's
    configuration (another K is refused on resume); 0 keeps none and records nothing."""
    from autolabel.candidates import DEFAULT_KEEP, candidates_path, load_candidates
    from autolabel.errors import StoreError

    labeler = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=CONFIG)
    _run(labeler, [photos], tmp_path / "run", batch_size=3)
    with open_store(tmp_path / "run", create=False) as store:
        assert store.config["keep_candidates"] == DEFAULT_KEEP
        images = list(store.images())
    assert images and all(len(load_candidates(tmp_path / "run", img.sha256)) == 16 for img in images)  # 4x4 patches
    _run(labeler, [photos], tmp_path / "run")  # the default follows what the folder recorded
    with pytest.raises(StoreError, match="keep_candidates"):
        _run(labeler, [photos], tmp_path / "run", keep_candidates=5)
    _run(labeler, [photos], tmp_path / "off", keep_candidates=0)
    with open_store(tmp_path / "off", create=False) as store:
        assert "keep_candidates" not in store.config
        assert not candidates_path(tmp_path / "off", images[0].sha256).exists()


def test_remove_done_filters_in_place_asking_the_store_in_parts(tmp_path, monkeypatch):
    from autolabel.detections import Detections
    from autolabel.store import ImageResult

    paths = [f"/images/{i:02d}.jpg" for i in range(10)]
    asked = []
    monkeypatch.setattr(labeling, "_RESUME_QUERY", 3)
    with open_store(tmp_path / "run") as store:
        store.bind_config({"model": "m", "mode": "detect", "ontology": {"car": ["car"]}, "detect": {}})
        store.write_results([ImageResult(p, "h", 1, 1, Detections.empty()) for p in paths[::3]]
                            + [ImageResult("/images/01.jpg", error="bad")])  # failed: labelled again
        real_done_among = store.done_among
        monkeypatch.setattr(store, "done_among", lambda part: asked.append(len(part)) or real_done_among(part))
        todo = list(paths)
        assert labeling.remove_done(store, todo) == 4
        assert todo == [p for i, p in enumerate(paths) if i % 3]  # the list itself, filtered in order
        assert asked == [3, 3, 3, 1]
        assert real_done_among(iter(paths[:2])) == {paths[0]}  # any iterable


def test_images_that_link_outside_within_are_left_out_and_reported(tiny_owlv2, photos, tmp_path, caplog):
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    (allowed / "sub").mkdir(parents=True)
    secret.mkdir()
    for name in ("img_0.jpg", "img_1.jpg"):
        (allowed / name).write_bytes((photos / name).read_bytes())
    (secret / "private.jpg").write_bytes((photos / "img_3.jpg").read_bytes())
    (allowed / "linked.jpg").symlink_to(secret / "private.jpg")
    (allowed / "sub" / "linked-folder").symlink_to(secret)
    (allowed / "sub" / "inside.jpg").symlink_to(allowed / "img_0.jpg")  # a link that stays inside is kept
    # A link to a file outside that does not exist yet: refused too, or it could be created later.
    (allowed / "dangling.jpg").symlink_to(secret / "later.jpg")
    labeler = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=CONFIG)
    summary = _run(labeler, [allowed], tmp_path / "run", within=[allowed])
    assert (summary.done, summary.failed, summary.skipped) == (2, 0, 0)
    assert summary.refused == [str((secret / "later.jpg").resolve()), str((secret / "private.jpg").resolve())]
    assert "left out 2 images that link outside" in caplog.text
    assert sorted(_stored(tmp_path / "run")) == [str((allowed / n).resolve()) for n in ("img_0.jpg", "img_1.jpg")]
    (allowed / "img_2.jpg").write_bytes((photos / "img_2.jpg").read_bytes())
    resumed = _run(labeler, [allowed], tmp_path / "run", within=[allowed])  # resume: only the new image
    assert (resumed.done, resumed.skipped, len(resumed.refused)) == (1, 2, 2)
    assert len(_stored(tmp_path / "run")) == 3
    assert _run(labeler, [allowed], tmp_path / "cli").refused == []  # without within, nothing is refused
    with pytest.raises(ConfigError, match=r"every image links outside the allowed folders \(1 left out\)"):
        _run(labeler, [allowed / "linked.jpg"], tmp_path / "none", within=[allowed])


def test_remove_outside_compares_whole_folder_names_in_place(tmp_path):
    base = tmp_path.resolve()
    root = base / "data"
    paths = [f"{root}/a.jpg", f"{root}-copy/b.jpg", f"{root}/sub/c.jpg", f"{base}/d.jpg"]
    todo = list(paths)
    assert labeling.remove_outside(todo, [root, base / "data" / ".." / "data"]) == [paths[1], paths[3]]
    assert todo == [paths[0], paths[2]]
    assert labeling.remove_outside(todo, []) == [paths[0], paths[2]] and todo == []
