"""ui.batch: a batch is a run in the shared store (resumable, visible to the CLI) plus a ZIP."""

from __future__ import annotations

import json
import os
import shutil
import threading
import zipfile
from dataclasses import replace

import pytest
from PIL import Image

from autolabel.errors import ConfigError, StoreError
from autolabel.store import open_store
from autolabel.ui.batch import BatchRunner, copy_uploads, failed_images
from autolabel.ui.runs import list_runs, open_run, read_sidecar, run_dir
from autolabel.ui.session import parse_prompts

PROMPTS = "car=car,van\nperson"


def _wait(job, timeout=120):
    job.thread.join(timeout)
    assert not job.running, "batch did not finish"
    assert job.error is None, job.error
    return job


@pytest.fixture
def uploads(tmp_path, photos):
    """Photos as Gradio hands uploads over: in its temp folder, under the client's file names."""
    folder = tmp_path / "gradio-upload"
    folder.mkdir()
    names = ["../../escape.jpg", "My Photo (2).JPG", "img_000.jpg"]
    out = []
    for i, (src, name) in enumerate(zip(photos, names)):
        sub = folder / str(i)
        sub.mkdir()
        dst = sub / name.replace("/", "_")  # Gradio's own cleaning keeps odd names
        shutil.copyfile(src, dst)
        out.append(str(dst))
    return out


def test_copy_uploads_sanitizes_and_reuses(tmp_path, uploads):
    dest = tmp_path / "run" / "uploads"
    copied = copy_uploads(uploads, dest)
    assert all(p.parent == dest for p in copied)
    assert sorted(p.name for p in copied) == ["My Photo (2).JPG", "_.._escape.jpg", "img_000.jpg"]
    # The same files again: reused, not duplicated; a different file with a taken name: renamed.
    assert copy_uploads(uploads, dest) == copied
    other = tmp_path / "other" / "img_000.jpg"
    other.parent.mkdir()
    Image.new("RGB", (10, 10)).save(other)
    (renamed,) = copy_uploads([str(other)], dest)
    assert renamed.name == "img_000_1.jpg"


def test_batch_run_is_a_store_run_with_a_zip(ui_config, models, uploads):
    runner = BatchRunner(ui_config, models)
    job = _wait(runner.start_new("street", parse_prompts(PROMPTS), "detect", 0.0, uploads, [], "64"))
    assert (job.total, job.processed) == (3, 3) and job.per_second > 0
    assert "finished 3/3" in job.status_text()
    assert list_runs(ui_config.runs_dir) == ["street"]
    # Everything the run owns is in its folder: store, uploaded copies, sidecar.
    folder = run_dir(ui_config.runs_dir, "street")
    with open_run(ui_config.runs_dir, "street") as store:
        paths = [r.path for r in store.images("done")]
        assert len(paths) == 3 and all(p.startswith(str(folder / "uploads")) for p in paths)
        assert store.config["ontology"]["classes"][0]["name"] == "car"
    assert read_sidecar(folder)["inputs"] == [str((folder / "uploads").resolve())]
    # The ZIP has `autolabel export --zip`'s layout, images at the chosen training size, and sits in
    # the UI's work folder (never the checkout).
    assert job.zip_path.is_relative_to(ui_config.work_dir) and job.zip_path.name == "street_coco.zip"
    with zipfile.ZipFile(job.zip_path) as z:
        coco = json.loads(z.read("coco_export.json"))
        assert len(coco["images"]) == 3
        for entry in coco["images"]:
            assert max(entry["width"], entry["height"]) == 64
            assert Image.open(z.open(f"images/{entry['file_name']}")).size == (entry["width"], entry["height"])


def test_resume_skips_done_images_and_cli_sees_the_run(ui_config, models, uploads):
    runner = BatchRunner(ui_config, models)
    _wait(runner.start_new("r1", parse_prompts(PROMPTS), "detect", 0.2, uploads[:2], [], None))
    # Same set-up, one more image: only the new one is labelled.
    job = _wait(runner.start_new("r1", parse_prompts(PROMPTS), "detect", 0.2, uploads, [], None))
    assert (job.total, job.summary.skipped) == (1, 2)
    job = _wait(runner.resume("r1", None))
    assert job.total == 0 and job.summary.skipped == 3
    # The CLI's export reads the UI's run like its own.
    from click.testing import CliRunner

    from autolabel.cli import main

    out = ui_config.work_dir / "cli-export"
    result = CliRunner().invoke(main, ["export", str(run_dir(ui_config.runs_dir, "r1")), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(json.loads((out / "coco_export.json").read_text())["images"]) == 3


def test_another_setup_into_the_same_run_is_refused_before_copying(ui_config, models, uploads):
    runner = BatchRunner(ui_config, models)
    _wait(runner.start_new("r2", parse_prompts("person"), "detect", 0.1, uploads[:1], [], None))
    with pytest.raises(StoreError, match="another configuration"):
        runner.start_new("r2", parse_prompts("dog"), "detect", 0.1, uploads[1:], [], None)
    assert len(list((run_dir(ui_config.runs_dir, "r2") / "uploads").iterdir())) == 1


def test_a_video_run_folder_is_refused_before_copying(ui_config, models, uploads):
    from autolabel.video.store import DB_NAME

    folder = run_dir(ui_config.runs_dir, "clip")
    folder.mkdir(parents=True)
    (folder / DB_NAME).write_bytes(b"")
    with pytest.raises(ConfigError, match="video run"):
        BatchRunner(ui_config, models).start_new("clip", parse_prompts("person"), "detect", 0.1, uploads[:1], [], None)
    assert sorted(p.name for p in folder.iterdir()) == [DB_NAME]


def test_one_batch_at_a_time(ui_config, models, uploads, monkeypatch):
    runner = BatchRunner(ui_config, models)
    release = threading.Event()
    import autolabel.labeling as labeling

    real = labeling.label_into_store

    def slow(*args, **kwargs):
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(labeling, "label_into_store", slow)
    job = runner.start_new("slow", parse_prompts("person"), "detect", 0.1, uploads[:1], [], None)
    assert job.running and runner.current() is job
    with pytest.raises(ConfigError, match="still running"):
        runner.start_new("other", parse_prompts("person"), "detect", 0.1, uploads[:1], [], None)
    release.set()
    _wait(job)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(uploads=[], folders=[]), "add images"),
        (dict(image_size="huge"), "image-size"),
        (dict(run_name="../.."), "no usable characters"),
    ],
)
def test_bad_requests_are_user_errors(ui_config, models, uploads, kwargs, message):
    args = dict(run_name="x", uploads=uploads[:1], folders=[], image_size=None) | kwargs
    runner = BatchRunner(ui_config, models)
    with pytest.raises((ConfigError, StoreError), match=message):
        runner.start_new(args["run_name"], parse_prompts("person"), "detect", 0.1, args["uploads"], args["folders"],
                         args["image_size"])
    assert list_runs(ui_config.runs_dir) == []  # nothing half-made left behind


def test_folder_input_and_failed_images(ui_config, models, photos, corrupt_image, tmp_path):
    folder = tmp_path / "allowed"
    (folder / "sub").mkdir(parents=True)
    for p in photos[:2]:
        shutil.copyfile(p, folder / p.name)
    shutil.copyfile(corrupt_image, folder / "broken.jpg")
    # Links that lead out of the allowed folder are left out and reported, files and folders alike.
    secret = tmp_path / "secret"
    secret.mkdir()
    shutil.copyfile(photos[2], secret / "private.jpg")
    os.symlink(secret / "private.jpg", folder / "linked.jpg")
    os.symlink(secret, folder / "sub" / "linked-folder")
    os.symlink(folder / "img_000.jpg", folder / "sub" / "inside.jpg")  # a link that stays inside is fine
    runner = BatchRunner(replace(ui_config, allow_folders=(folder.resolve(),)), models)
    job = _wait(runner.start_new("folder-run", parse_prompts("person"), "segment", 0.0, [], [folder], "32"))
    assert (job.summary.done, job.summary.failed) == (2, 1) and "1 failed" in job.status_text()
    assert [p.name for p in job.refused] == ["private.jpg"] and "1 left out" in job.status_text()
    with open_store(run_dir(ui_config.runs_dir, "folder-run"), create=False) as store:
        assert not any("secret" in r.path for r in store.images(None))
        failed = failed_images(store, job.refused)
    assert [name for name, _ in failed] == ["broken.jpg", "private.jpg"]
    assert "outside the allowed folders" in failed[1][1]
    with open_store(run_dir(ui_config.runs_dir, "folder-run"), create=False) as store:
        assert store.config["mode"] == "segment"
        for r in store.images("done"):
            labels = store.labels(r.id)
            assert len(labels) == 0 or (labels.masks is not None and all(m is not None for m in labels.masks))
    assert models.segmenter.embed_calls >= 1


def test_a_folder_whose_images_all_link_outside_ends_the_job_with_an_error(ui_config, models, photos, tmp_path):
    folder, secret = tmp_path / "allowed", tmp_path / "secret"
    folder.mkdir()
    secret.mkdir()
    shutil.copyfile(photos[0], secret / "private.jpg")
    os.symlink(secret / "private.jpg", folder / "linked.jpg")
    runner = BatchRunner(replace(ui_config, allow_folders=(folder.resolve(),)), models)
    job = runner.start_new("all-out", parse_prompts("person"), "detect", 0.0, [], [folder], None)
    job.thread.join(120)
    assert not job.running and job.summary is None
    assert job.error == "every image links outside the allowed folders (1 left out)"
    assert "stopped: every image links outside" in job.status_text()
    with open_store(run_dir(ui_config.runs_dir, "all-out"), create=False) as store:
        assert list(store.images(None)) == []


def test_resume_refuses_runs_of_a_model_the_ui_does_not_list(ui_config, models):
    from autolabel.ontology import Ontology

    with open_store(run_dir(ui_config.runs_dir, "cli-run")) as store:
        store.bind_config({"model": "google/owlv2-base-patch16", "sam_model": None, "mode": "detect",
                           "ontology": Ontology.from_prompts(["person"]).to_dict(),
                           "detect": {"threshold": 0.1, "nms_iou": 0.5, "agnostic_nms_iou": None,
                                      "min_area_frac": 0.0, "max_area_frac": 1.0}})
    with pytest.raises(ConfigError, match="does not list .*cannot be resumed here"):
        BatchRunner(ui_config, models).resume("cli-run", None)


def test_resume_of_a_cli_run_without_recorded_inputs_explains(ui_config, models, photos):
    from click.testing import CliRunner

    from autolabel.cli import main

    folder = run_dir(ui_config.runs_dir, "from-cli")
    result = CliRunner().invoke(main, ["label", str(photos[0]), "--out", str(folder), "--prompt", "person",
                                       "--model", ui_config.model, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "from-cli" in list_runs(ui_config.runs_dir)  # CLI runs under the runs root are listed
    with pytest.raises(ConfigError, match="made on the command line"):
        BatchRunner(ui_config, models).resume("from-cli", None)


def test_a_stopped_batch_keeps_what_is_done_and_resume_continues(ui_config, models, tmp_path):
    from ui_helpers import write_photos

    photos = write_photos(tmp_path / "many", count=8)
    runner = BatchRunner(ui_config, models)
    job = runner.start_new("stop-me", parse_prompts("person"), "detect", 0.0, [str(p) for p in photos], [], "")
    assert runner.stop() is job  # asked at once: the run ends at its next committed batch
    job.thread.join(120)
    assert job.stopped and job.error is None and job.zip_path is None
    assert "stopped after" in job.status_text() and "Resume" in job.status_text()
    with open_run(ui_config.runs_dir, "stop-me") as store:
        done = store.counts()["done"]
    assert done < len(photos)
    resumed = _wait(runner.resume("stop-me", ""))
    assert resumed.summary.skipped == done and resumed.summary.done == len(photos) - done
    assert resumed.zip_path.exists()


def test_progress_text_estimates_the_time_left(monkeypatch):
    from pathlib import Path

    from autolabel.ui import batch
    from autolabel.ui.batch import BatchJob, format_duration

    monkeypatch.setattr(batch.time, "perf_counter", lambda: 100.0)
    job = BatchJob("r", Path("r"), None, started=0.0, total=100)
    assert job.eta_seconds is None  # nothing done yet: no estimate
    job.processed = 25  # 0.25 images/s, 75 to go
    assert job.eta_seconds == pytest.approx(300) and "about 5 min left" in job.status_text()
    job.stop_requested = True
    assert "stopping after the current batch" in job.status_text()
    assert [format_duration(s) for s in (42, 180, 7500)] == ["42 s", "3 min", "2 h 05 min"]


def test_a_batch_keeps_candidates_and_relabels_into_a_new_run(ui_config, models, uploads, monkeypatch):
    """A UI batch of an OWLv2 model keeps its candidates (as ``autolabel label`` does), so it can be
    relabelled with new prompts into ``<run>-relabel-N`` without the backbone, on the UI's own
    loaded detector (no second copy is loaded)."""
    from autolabel.models import registry

    _wait(BatchRunner(ui_config, models).start_new("street", parse_prompts(PROMPTS), "detect", 0.1, uploads, [],
                                                   None))
    with open_run(ui_config.runs_dir, "street") as store:
        assert store.config["keep_candidates"] > 0
    runner = BatchRunner(ui_config, models)
    calls = models.detector.backbone_calls
    def no_second_copy(*args, **kwargs):
        raise AssertionError("relabel loaded another detector")

    monkeypatch.setattr(registry, "load_detector", no_second_copy)
    encode_text = models.detector.inner.encode_text
    texts = []
    monkeypatch.setattr(models.detector.inner, "encode_text", lambda q: texts.append(q) or encode_text(q))
    job = _wait(runner.relabel("street", parse_prompts("truck\nperson"), 0.2))
    assert texts and list(texts[0]) == ["truck", "person"]  # the prompts went through the UI's model
    assert job.run == "street-relabel-1" and job.total == 3 and job.processed == 3 and job.summary.done == 3
    assert models.detector.backbone_calls == calls  # the shared model never ran
    with open_run(ui_config.runs_dir, "street-relabel-1") as store:
        assert store.ontology.names == ["truck", "person"] and store.config["detect"]["threshold"] == 0.2
    assert "street-relabel-1" in list_runs(ui_config.runs_dir)
    assert _wait(runner.relabel("street", parse_prompts("bus"), 0.3)).run == "street-relabel-2"


def test_relabel_uses_the_test_tabs_example_boxes_as_a_batch_does(ui_config, models, uploads, photos):
    """The Batch tab's relabel takes the Test tab's example boxes the way its batches do
    (``exemplars.query_ontology``): a box joins its class or makes one of its own."""
    from autolabel.ui.app import AutolabelApp
    from autolabel.ui.exemplars import add_box

    app = AutolabelApp(ui_config, models)
    app.build()
    _wait(app.runner.start_new("street", parse_prompts(PROMPTS), "detect", 0.1, uploads, [], None))
    boxes = add_box((), photos[1], (5, 5, 50, 40), "widget", False, ui_config.work_dir, 10**7)
    boxes = add_box(boxes, photos[1], (60, 60, 110, 100), "person", True, ui_config.work_dir, 10**7)
    shown = app.batch.relabel("street", "person", 0.2, boxes)
    job = _wait(app.runner.current())
    assert job.run == "street-relabel-1" and job.summary.done == 3 and "street-relabel-1" in shown[app.batch.progress]
    with open_run(ui_config.runs_dir, "street-relabel-1") as store:
        classes = {c.name: c for c in store.ontology.classes}
    assert list(classes) == ["person", "widget"] and classes["widget"].prompts == ()
    assert [(e.sha256, e.negative) for e in classes["widget"].exemplars] == [(boxes[0].sha256, False)]
    assert [(e.sha256, e.negative) for e in classes["person"].exemplars] == [(boxes[1].sha256, True)]
    # Without boxes the prompt box alone gives the classes, as before.
    app.batch.relabel("street", "person", 0.2, ())
    with open_run(ui_config.runs_dir, _wait(app.runner.current()).run) as store:
        assert [c.exemplars for c in store.ontology.classes] == [()]


def test_a_run_without_candidates_says_why_it_cannot_be_relabelled(ui_config, models, photos):
    from autolabel.ui.batch import relabel_refusal

    folder = run_dir(ui_config.runs_dir, "old")
    with open_store(folder) as store:
        store.bind_config({"model": ui_config.model, "sam_model": None, "mode": "detect",
                           "ontology": parse_prompts("car").to_dict(), "detect": {}})
    with pytest.raises(ConfigError, match="run old was labelled without kept candidates"):
        BatchRunner(ui_config, models).relabel("old", parse_prompts("car"), 0.2)
    assert "not a labelling run" in relabel_refusal({"mode": "import"})
    assert relabel_refusal({"mode": "detect", "keep_candidates": 300}) is None
    assert not (ui_config.runs_dir / "old-relabel-1").exists()


def test_tiles_and_example_boxes_reach_the_run_and_its_resume(ui_config, models, uploads, photos):
    from autolabel.tiling import tiling_from_dict
    from autolabel.ui.exemplars import add_box, query_ontology

    boxes = add_box((), photos[1], (5, 5, 50, 40), "widget", False, ui_config.work_dir, 10**7)
    runner = BatchRunner(ui_config, models)
    _wait(runner.start_new("tiled", query_ontology("person", boxes), "detect", 0.1, uploads[:1], [], None,
                           tiles="auto"))
    with open_run(ui_config.runs_dir, "tiled") as store:
        config = store.config
    assert config["tiles"]["auto"] is True and tiling_from_dict(config["tiles"]).to_dict() == config["tiles"]
    (widget,) = [c for c in config["ontology"]["classes"] if c["name"] == "widget"]
    assert widget["exemplars"][0]["sha256"] == boxes[0].sha256
    job = _wait(runner.resume("tiled", None))  # the stored tiling and exemplars: the same set-up
    assert job.summary.skipped == 1
