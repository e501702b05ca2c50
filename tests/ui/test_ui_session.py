"""ui.session: prompt parsing, shared model handles, and the Test tab's feature cache."""

from __future__ import annotations

import ctypes
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from autolabel.errors import ConfigError, ImageLoadError, ModelLoadError
from autolabel.ui import session
from autolabel.ui.exemplars import add_box
from autolabel.ui.session import (
    CachedImage,
    FeatureCache,
    ModelHandles,
    PromptTester,
    detection_rows,
    display_copy,
    make_labeler,
    parse_prompts,
)


@pytest.mark.parametrize(
    "text, names, queries",
    [
        ("person", ["person"], ["person"]),
        ("car=car,automobile,van\nperson", ["car", "person"], ["car", "automobile", "van", "person"]),
        ("\n  person  \n\n# a comment\ndog=dog, puppy\n", ["person", "dog"], ["person", "dog", "puppy"]),
    ],
)
def test_parse_prompts_uses_the_cli_syntax(text, names, queries):
    ontology = parse_prompts(text)
    assert ontology.names == names and ontology.queries == queries


@pytest.mark.parametrize("text, message", [("", "at least one class"), ("  \n# only a comment", "at least one class"),
                                           ("car=", "no prompts"), ("car\ncar", "twice")])
def test_parse_prompts_errors_are_readable(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_prompts(text)


def test_display_copy_shrinks_large_and_enlarges_small():
    big = Image.new("RGB", (4000, 3000))
    small = Image.new("RGB", (120, 170))
    out, scale = display_copy(big, 1000)
    assert out.size == (1000, 750) and scale == pytest.approx(0.25)
    out, scale = display_copy(small, 1000, min_side=510)
    assert out.size == (360, 510) and scale == pytest.approx(3.0)


def test_feature_cache_is_an_lru():
    cache = FeatureCache(capacity=2)
    items = [CachedImage(k, (1, 1), None, None, None, 1.0) for k in "abc"]
    for item in items[:2]:
        cache.put(item)
    assert cache.get("a") is items[0]  # "a" is now the most recent
    cache.put(items[2])
    assert cache.get("b") is None and cache.get("a") is items[0] and cache.get("c") is items[2]


def test_threshold_prompt_and_mode_changes_reuse_the_backbone(ui_config, models, photos):
    """The Test tab's promise: one vision-backbone pass (and one SAM2 embedding) per image."""
    tester = PromptTester(ui_config, models)
    first = tester.query(photos[0], "car=car,van\nperson", 0.0, "detect")
    assert first.backbone_seconds is not None and models.detector.backbone_calls == 1
    counts = [len(first.detections)]
    for threshold in (0.3, 0.5, 0.9, 0.0):
        result = tester.query(photos[0], "car=car,van\nperson", threshold, "detect")
        assert result.backbone_seconds is None
        counts.append(len(result.detections))
    assert counts[0] == counts[-1] and counts == sorted(counts[:4], reverse=True) + [counts[0]]
    tester.query(photos[0], "dog\ncat=cat,kitten", 0.2, "detect")  # new prompts: text tower only
    seg = tester.query(photos[0], "car=car,van\nperson", 0.0, "segment")
    seg_again = tester.query(photos[0], "car=car,van\nperson", 0.5, "segment")
    assert seg.sam_embed_seconds is not None and seg_again.sam_embed_seconds is None
    assert models.segmenter.embed_calls == 1
    assert models.detector.backbone_calls == 1
    assert len(seg.detections.masks) == len(seg.detections)
    assert "no backbone pass" in seg_again.timing_text() and "backbone passes so far: 1" in seg_again.timing_text()
    # A second image is one more pass; a copy of the first (same bytes, new path) is none.
    tester.query(photos[1], "person", 0.1)
    copy = photos[0].parent / "copy_of_first.jpg"
    copy.write_bytes(photos[0].read_bytes())
    tester.query(copy, "person", 0.1)
    assert models.detector.backbone_calls == 2


@pytest.fixture(scope="module")
def photo_12mp(tmp_path_factory):
    """A 4000 x 3000 JPEG: the engine draft-decodes it (1/8 for the 64 px test model)."""
    from autolabel.testing.photos import synthetic_photo

    path = tmp_path_factory.mktemp("big") / "big.jpg"
    synthetic_photo(4000, 3000, seed=3).save(path, quality=90)
    return path


def test_test_tab_equals_a_ui_batch_and_the_cli_on_a_12mp_jpeg(ui_config, models, photo_12mp, tmp_path):
    """The same file, prompts and threshold give identical detections in the Test tab, in a UI
    batch and in ``autolabel label``, on a file that batches draft-decode."""
    from click.testing import CliRunner

    from autolabel.cli import main
    from autolabel.store import open_store
    from autolabel.ui.batch import BatchRunner

    prompts, threshold = "car=car,van\nperson", 0.2
    tester = PromptTester(ui_config, models)
    result = tester.query(photo_12mp, prompts, threshold)
    test_tab, cached = result.detections, result.cached
    assert cached.size == (4000, 3000) and cached.decode_side == 500 and len(test_tab) > 0
    assert cached.display.size == (1024, 768) and cached.display_scale == pytest.approx(1024 / 4000)

    job = BatchRunner(ui_config, models).start_new("same", parse_prompts(prompts), "detect", threshold,
                                                   [str(photo_12mp)], [], None)
    job.thread.join(timeout=120)
    assert job.error is None and job.summary.done == 1
    cli = CliRunner().invoke(main, ["label", str(photo_12mp), "--out", str(tmp_path / "cli"), "--model",
                                    ui_config.model, "--prompt", "car=car,van", "--prompt", "person", "--threshold",
                                    str(threshold), "--nms-iou", str(ui_config.nms_iou), "--device", "cpu", "--quiet"])
    assert cli.exit_code == 0, cli.output
    for run_dir in (job.run_dir, tmp_path / "cli"):
        with open_store(run_dir, create=False) as store:
            (image,) = store.images()
            stored = store.labels(image.id)
        np.testing.assert_array_equal(stored.xyxy.astype(np.float32), test_tab.xyxy)
        np.testing.assert_array_equal(stored.scores.astype(np.float32), test_tab.scores)
        np.testing.assert_array_equal(stored.class_ids, test_tab.class_ids)
    rows = detection_rows(tester.query(photo_12mp, prompts, threshold))
    assert rows and rows[0][1] in ("car", "person") and len(rows[0]) == 8


def _memory(field: str) -> int:
    """This process's resident memory (``VmRSS``) or its peak (``VmHWM``), freed heap returned first."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field))


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    """12000 x 9000 (108 MP, under the pixel limit), mostly flat: small on disk."""
    from PIL import ImageDraw

    path = tmp_path_factory.mktemp("huge") / "huge.png"
    image = Image.new("RGB", (12000, 9000), (120, 140, 160))
    ImageDraw.Draw(image).rectangle((2000, 2000, 6000, 5000), fill=(200, 30, 30))
    image.save(path)
    return path


def test_a_108_mp_png_goes_through_the_test_tab_in_bounded_memory(ui_config, models, huge_png):
    """The decode peaks as in a batch, and the cache keeps no decoded pixels (they used to stay:
    324 MB for this image)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:  # resets the peak (VmHWM) to the current RSS
            fh.write("5")
    except OSError:
        pytest.skip("measuring peak memory needs Linux's /proc/self/clear_refs")
    tester = PromptTester(ui_config, models)
    models.detector  # loaded outside the measurement
    before = _memory("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    result = tester.query(huge_png, "car\nperson", 0.1)
    peak, held = _memory("VmHWM") - before, _memory("VmRSS") - before
    assert peak < 1.5 * 2**30, f"peak {peak / 2**30:.2f} GiB"
    assert held < 0.15 * 2**30, f"held {held / 2**30:.2f} GiB"
    prepared = result.cached.encoded.batch[0]
    assert prepared.pixels is None and prepared.detector_input is None  # the features replace them
    assert result.cached.size == (12000, 9000) and max(result.cached.display.size) == 1024


def test_an_image_over_the_decode_budget_is_refused_before_decoding(ui_config, models, photos, monkeypatch):
    from autolabel.images import file_sha256

    tester = PromptTester(ui_config, models)
    monkeypatch.setattr(session, "DECODE_BUDGET", 120 * 170 * session.DECODE_BYTES_PER_PIXEL - 1)
    with pytest.raises(ImageLoadError, match="img_000.jpg is 120x170 pixels: .* more than the Test tab's"):
        tester.query(photos[0], "person", 0.1)
    assert tester.cache.get(file_sha256(photos[0])) is None and models.detector.backbone_calls == 0
    assert tester.query(photos[1], "person", 0.1).cached.size == (160, 120)  # within the budget


def test_work_on_one_image_does_not_wait_for_another(ui_config, models, photos):
    """A long decode of one image (its lock held here) holds up only queries of that image."""
    import threading

    from autolabel.images import file_sha256

    tester = PromptTester(ui_config, models)
    with tester._image_lock(file_sha256(photos[0])):
        other = threading.Thread(target=tester.query, args=(photos[1], "person", 0.1))
        other.start()
        other.join(timeout=60)
        assert not other.is_alive() and tester.cache.get(session.feature_key(file_sha256(photos[1]), models.model)) is not None


def test_bad_image_and_bad_mode_are_user_errors(ui_config, models, corrupt_image, photos):
    tester = PromptTester(ui_config, models)
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        tester.query(corrupt_image, "person", 0.1)
    with pytest.raises(ConfigError, match="mode"):
        tester.query(photos[0], "person", 0.1, "panoptic")
    with pytest.raises(ConfigError, match="at least one class"):
        tester.query(photos[0], "", 0.1)


def test_model_load_failure_is_one_line_and_shows_in_status(tmp_path):
    models = ModelHandles(str(tmp_path / "no-such-model"), None, device="cpu")
    assert "not loaded" in models.status()
    with pytest.raises(ModelLoadError, match="cannot load .*no-such-model"):
        models.detector
    assert "failed to load" in models.status()
    with pytest.raises(ConfigError, match="--sam-model"):
        models.segmenter


def test_unexpected_loader_errors_become_model_load_errors():
    def broken(name, device, precision):
        raise RuntimeError("weights have the wrong shape")

    models = ModelHandles("x", "y", device="cpu", loaders={"detector": broken, "segmenter": broken})
    with pytest.raises(ModelLoadError, match="wrong shape"):
        models.detector
    assert "wrong shape" in models.status()


def test_models_load_once_and_only_when_used(ui_config):
    loads = []

    def fake(name, device, precision):
        loads.append(name)
        return SimpleNamespace(name=name, device=device, preprocessor=None, compiled=False)

    models = ModelHandles("owl", "sam", device="cpu", loaders={"detector": fake, "segmenter": fake})
    assert not models.is_loaded("detector") and loads == []
    assert models.detector is models.detector
    assert loads == ["owl"] and "ready on cpu" in models.status()


def test_shared_models_expose_the_model_api(ui_config, models):
    """The batch's engine sees the model API through the shared wrappers (the preprocessor as is),
    while the network calls are counted and serialised."""
    from autolabel.models.base import Detector, Segmenter

    detector, segmenter = models.detector, models.segmenter
    assert isinstance(detector, Detector) and isinstance(segmenter, Segmenter)
    assert detector.preprocessor is detector.inner.preprocessor and segmenter.device == "cpu"
    with pytest.raises(AttributeError):
        detector.no_such_attribute
    labeler = make_labeler(ui_config, models, parse_prompts("person"), "segment", 0.1)
    assert labeler.detector is detector and labeler.segmenter is segmenter


def test_shared_detector_passes_the_family_extras_through_under_the_lock(ui_config, models, photos):
    """Negatives, exemplars and kept candidates reach the model through the wrapper (they used to be
    refused with a ConfigError); a family without them shows none: the engine tells what a family
    supports by their presence."""
    detector = models.detector
    inner = detector.inner
    assert (detector.family, detector.image_size) == (inner.family, inner.image_size)
    assert detector.supports_negatives is True and detector.ranks_candidates is True
    boxes = add_box((), photos[0], (10, 10, 60, 80), "widget", False, ui_config.work_dir, 10**7)
    result = PromptTester(ui_config, models).query(photos[0], "car;not=toy car", 0.0, examples=boxes)
    assert result.ontology.names == ["car", "widget"] and len(result.detections)

    fake = SimpleNamespace(name="x", device="cpu", preprocessor=None, compiled=False, family="Fake")
    shared = session.SharedDetector(fake)
    assert shared.family == "Fake" and not hasattr(shared, "supports_negatives")
    assert not any(hasattr(shared, n) for n in session.DETECTOR_CALLS)
    for name in session.DETECTOR_CALLS:
        setattr(fake, name, lambda: shared.lock.locked())
    shared = session.SharedDetector(fake)
    assert all(getattr(shared, n)() for n in session.DETECTOR_CALLS)  # each ran under the lock
    assert not shared.lock.locked()


def test_a_detection_found_by_an_example_box_names_no_prompt(ui_config, models, photos):
    tester = PromptTester(ui_config, models)
    boxes = add_box((), photos[0], (10, 10, 60, 80), "widget", False, ui_config.work_dir, 10**7)
    result = tester.query(photos[0], "person", 0.0, examples=boxes)
    assert {row[2] for row in detection_rows(result) if row[1] == "widget"} == {session.EXAMPLE_BOX}
    # The prompt column of a mixed result: prompt id -1 is the example boxes', never a prompt's.
    from autolabel.detections import Detections

    mixed = Detections(np.zeros((2, 4), np.float32), np.array([0.5, 0.4], np.float32), np.array([0, 1]),
                       np.array([0, -1]))
    rows = detection_rows(SimpleNamespace(detections=mixed, ontology=result.ontology))
    assert [row[1:3] for row in rows] == [["person", "person"], ["widget", session.EXAMPLE_BOX]]
    # Only the exemplar image's encoding is extra: the photo itself was encoded once, and the
    # exemplar's embedding is remembered by the shared detector across queries.
    calls = models.detector.backbone_calls
    again = tester.query(photos[0], "person", 0.5, examples=boxes)
    assert again.backbone_seconds is None and models.detector.backbone_calls == calls


def test_tiles_reach_the_engine_and_their_encoding_is_cached(ui_config, models, photo_12mp):
    tester = PromptTester(ui_config, models)
    tiled = tester.query(photo_12mp, "person", 0.2, tiles="auto")
    calls = models.detector.backbone_calls
    assert tiled.tiles > 1 and f"{tiled.tiles} tiles" in tiled.timing_text()
    assert tiled.cached.decode_side is None  # tiles are cut at full resolution
    again = tester.query(photo_12mp, "person", 0.3, tiles="auto")
    assert again.backbone_seconds is None and models.detector.backbone_calls == calls
    assert again.cached.encoded.tiles == tiled.cached.encoded.tiles
    plain = tester.query(photo_12mp, "person", 0.2, tiles="off")
    assert plain.tiles == 0 and plain.cached.decode_side == 500
