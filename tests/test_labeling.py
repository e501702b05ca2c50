"""The streaming labelling loop: same answers as the per-image path, bounded memory, threads that
do not fight the model, commits in order, and the exact path for models that only take PIL images."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel import labeling
from autolabel.geometry import mask_iou, rle_to_mask
from autolabel.labeling import _Prefetcher, label_into_store
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig, Labeler, StageTimes, postprocess
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
        return {img.path: (img, store.detections(img.id)) for img in store.images(status=None)}


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
        assert (image.width, image.height) == (prepared.width, prepared.height)
        features = detector.encode_images(prepared.owl[None])
        logits = detector.class_logits(features, text).numpy()[0]
        expected = postprocess(logits, features.pred_boxes.numpy()[0], prepared.width, prepared.height, ONTOLOGY, CONFIG)
        assert len(dets) == len(expected)
        np.testing.assert_allclose([d.xyxy for d in dets], expected.xyxy, atol=1e-3)
        np.testing.assert_allclose([d.score for d in dets], expected.scores, atol=1e-5)


def test_exact_path_equals_label_images_on_full_decodes(tiny_owlv2, photos, tmp_path):
    """fast=False: full decodes through the stock processor, as label_images does."""
    from autolabel.images import discover_images, load_image

    labeler = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=CONFIG, fast=False)
    _run(labeler, [photos], tmp_path / "run", batch_size=4)
    stored = _stored(tmp_path / "run")
    for path in discover_images([photos]):
        loaded = load_image(path)
        (expected,) = labeler.label_images([loaded.image])
        _, dets = stored[str(path)]
        np.testing.assert_allclose([d.xyxy for d in dets], expected.xyxy, atol=1e-4)


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
    labeler = Labeler(ONTOLOGY, model=str(owlv2_960))
    detector = labeler.detector
    prepared = labeler.prepare(path)
    assert labeler.decode_side(width, height) in (None, max(decoded))
    full = load_image(path).image
    buffer = io.BytesIO()
    full.save(buffer, format="JPEG", quality=90)
    resaved = Image.open(buffer).convert("RGB")
    exact = detector.encode_images(detector.preprocess([full])).pred_boxes
    fast = detector.encode_images(prepared.owl[None]).pred_boxes
    noise = detector.encode_images(detector.preprocess([resaved])).pred_boxes
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


def test_prefetch_is_bounded_and_ordered():
    ahead, peak, lock = [0], [0], threading.Lock()

    def work(i):
        with lock:
            ahead[0] += 1
            peak[0] = max(peak[0], ahead[0])
        time.sleep(0.002 * (i % 3))  # out-of-order completion
        return i

    out = []
    with _Prefetcher(work, list(range(60)), workers=3, depth=5) as prefetch:
        for item in prefetch:
            with lock:
                ahead[0] -= 1
            time.sleep(0.003)  # a slow consumer: workers must wait, not pile up results
            out.append(item)
    assert out == list(range(60))
    assert peak[0] <= 5 + 1  # depth, plus the item the consumer holds


def test_prefetch_reraises_worker_errors():
    def work(i):
        if i == 3:
            raise KeyError("boom")
        return i

    with pytest.raises(KeyError), _Prefetcher(work, list(range(10)), workers=2, depth=4) as prefetch:
        list(prefetch)


def test_workers_use_one_torch_thread_and_the_model_keeps_its_own():
    before = torch.get_num_threads()
    seen = []
    with _Prefetcher(lambda i: seen.append(torch.get_num_threads()) or i, list(range(4)), workers=2, depth=2) as p:
        list(p)
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
    padded.detector.compiled = True  # as compile_vision() leaves it, without compiling
    seen = []
    real = padded.detector.encode_images
    padded.detector.encode_images = lambda pv: seen.append(pv.shape[0]) or real(pv)
    _run(padded, [photos], tmp_path / "padded", batch_size=3)
    assert set(seen) == {3}
    a, b = _stored(tmp_path / "plain"), _stored(tmp_path / "padded")
    for path in a:
        np.testing.assert_allclose([d.xyxy for d in a[path][1]], [d.xyxy for d in b[path][1]], atol=1e-3)


def test_segment_mode_streams_masks_at_original_size(tiny_owlv2, tiny_sam2, photos, tmp_path):
    config = DetectConfig(threshold=0.0, nms_iou=None, max_detections=3)
    labeler = Labeler(ONTOLOGY, model=str(tiny_owlv2), sam_model=str(tiny_sam2), mode="segment", config=config)
    times = StageTimes()
    summary = _run(labeler, [photos], tmp_path / "run", batch_size=3, workers=2, times=times)
    assert (summary.done, summary.failed) == (8, 0)
    assert {"decode", "preprocess", "vision", "sam2_encoder", "sam2_decoder", "masks", "store"} <= set(times.as_dict())
    # The same boxes through the segmenter's own per-image API give the same masks.
    from autolabel.images import load_image

    segmenter = labeler.segmenter
    for path, (image, dets) in _stored(tmp_path / "run").items():
        assert len(dets) == 3
        loaded = load_image(path)
        (embedding,) = segmenter.embed([loaded.image])
        expected = segmenter.predict(embedding, np.array([d.xyxy for d in dets]))
        for det, rle in zip(dets, expected):
            assert det.rle["size"] == [image.height, image.width]
            assert mask_iou(rle_to_mask(det.rle), rle_to_mask(rle)) > 0.98


class _PilOnlyDetector:
    """Like the UI's shared wrapper: only the PIL-level API."""

    def __init__(self, inner):
        self.inner = inner
        self.image_size = inner.image_size

    def encode_text(self, queries):
        return self.inner.encode_text(queries)

    def preprocess(self, images):
        return self.inner.preprocess(images)

    def encode_images(self, pixel_values):
        return self.inner.encode_images(pixel_values)

    def class_logits(self, features, text):
        return self.inner.class_logits(features, text)


def test_models_with_only_the_pil_api_take_the_exact_path(tiny_owlv2, photos, tmp_path):
    exact = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=CONFIG, fast=False)
    _run(exact, [photos], tmp_path / "exact")
    wrapped = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=CONFIG)
    wrapped._detector = _PilOnlyDetector(exact.detector)
    assert not wrapped.uses_fast_path
    _run(wrapped, [photos], tmp_path / "wrapped")
    a, b = _stored(tmp_path / "exact"), _stored(tmp_path / "wrapped")
    for path in a:
        np.testing.assert_allclose([d.xyxy for d in a[path][1]], [d.xyxy for d in b[path][1]], atol=1e-4)


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
    assert prepared.owl is None and prepared.pixels is not None and prepared.pixels.dtype == torch.uint8
    _run(device_side, [photos], tmp_path / "device", batch_size=3, workers=2)
    a, b = _stored(tmp_path / "worker"), _stored(tmp_path / "device")
    for path in a:
        np.testing.assert_allclose([d.xyxy for d in a[path][1]], [d.xyxy for d in b[path][1]], atol=1e-3)
        for da, db in zip(a[path][1], b[path][1]):
            assert da.rle == db.rle
