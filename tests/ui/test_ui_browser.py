"""End to end in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

The app runs in this process on a free localhost port with the tiny random checkpoints, so the
tests can read its model counters: the Test tab must not run the vision backbone again when the
threshold, prompts or mode change. Screenshots go to ``test-artifacts/ui/`` (git-ignored).

Chromium comes from ``apt-get install chromium`` (``make test`` installs it when missing); never
``playwright install``, which downloads a browser. Without it these tests skip locally and fail
under CI (``CI=true``).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ui_helpers import (ARTIFACTS, TIMEOUT, VIEWPORT, choose, download, live_server, make_config, set_slider,
                        shot, table_rows, toast, wait_text, write_photos)

# Gradio 6.31's queue calls pandas options that pandas 3 deprecates (not our code).
pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated:Warning"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning")]


@pytest.fixture(scope="module")
def server(browser, tiny_owlv2, tiny_sam2, tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-e2e")
    allowed = root / "server-photos"
    write_photos(allowed, 2, seed=5)
    with live_server(make_config(root, tiny_owlv2, tiny_sam2, allow_folders=(allowed.resolve(),))) as live:
        yield live


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(server.url)
    page.wait_for_selector("#test-run")
    yield page
    context.close()


# -- Test tab -------------------------------------------------------------------------------------


def test_test_tab_requeries_without_the_backbone(page, server, photos):
    models = server.app.models
    page.set_input_files("#test-upload input[type=file]", str(photos[0]))
    page.fill("#test-prompts textarea", "car=car,van\nperson")
    page.click("#test-run")
    timing = wait_text(page, "#test-timing", "threshold 0.10, detect, classes car, person")
    assert "backbone passes so far: 1" in timing
    assert page.locator("#test-result img").get_attribute("src")
    assert "ready" in page.inner_text("#model-status")
    rows_low = table_rows(page, "test-table")
    assert rows_low and {r[1] for r in rows_low} <= {"car", "person"}
    shot(page, "01-test-detect")

    # Move the threshold: the table shrinks, the backbone does not run again.
    set_slider(page, "test-threshold", 0.45)
    timing = wait_text(page, "#test-timing", "threshold 0.45")
    assert "no backbone pass" in timing
    rows_high = table_rows(page, "test-table")
    assert len(rows_high) <= len(rows_low)
    assert all(float(r[3]) > 0.45 for r in rows_high)

    # Edit the prompts: only the text tower runs.
    page.fill("#test-prompts textarea", "dog\ncar=car,truck")
    page.click("#test-timing")  # leaving the box re-queries
    timing = wait_text(page, "#test-timing", "classes dog, car")
    assert "no backbone pass" in timing
    shot(page, "02-test-threshold-and-prompts")

    # Segmentation: SAM2 embeds once; masks are drawn.
    page.locator("#test-mode label", has_text="segment").click()
    page.wait_for_function("document.querySelector('#test-run').innerText.trim() === 'Segment'")
    timing = wait_text(page, "#test-timing", "segment")
    assert "SAM2 image embedding" in timing
    set_slider(page, "test-threshold", 0.2)
    wait_text(page, "#test-timing", "threshold 0.20, segment")
    shot(page, "03-test-segment")
    assert models.detector.backbone_calls == 1
    assert models.segmenter.embed_calls == 1

    # Clearing the image clears its result.
    page.locator("#test-upload button[aria-label='Clear']").click()
    page.wait_for_function("!document.querySelector('#test-result img')")
    assert table_rows(page, "test-table") == [] and page.inner_text("#test-timing").strip() == ""


def test_an_example_box_drawn_on_the_test_tab_finds_its_class(page, server, photos):
    page.set_input_files("#test-upload input[type=file]", str(photos[0]))
    wait_text(page, "#test-timing", "Enter classes")  # the canvas has the image too
    page.locator("#test-examples").get_by_text("Example boxes: draw on the image").click()
    canvas = page.locator("#test-canvas canvas")
    canvas.wait_for()
    page.wait_for_function("document.querySelector('#test-canvas canvas').width > 0")
    page.fill("#test-example-class input", "widget")
    page.keyboard.press("Enter")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 30, cy - 40)
    page.mouse.down()
    page.mouse.move(cx, cy, steps=5)
    page.mouse.move(cx + 30, cy + 40, steps=5)
    page.mouse.up()
    page.wait_for_function("document.querySelectorAll('#test-example-list .virtual-row').length === 1")
    (listed,) = table_rows(page, "test-example-list")
    assert listed[1:4] == ["widget", "positive", photos[0].name]
    timing = wait_text(page, "#test-timing", "classes widget")
    assert "backbone" in timing
    rows = table_rows(page, "test-table")
    assert rows and {r[1] for r in rows} == {"widget"} and {r[2] for r in rows} == {"(example box)"}
    shot(page, "08-test-example-box")
    # The Batch tab says it uses the box.
    page.get_by_role("tab", name="Batch").click()
    wait_text(page, "#batch-examples", "1 example box drawn on the Test tab (widget)")
    page.get_by_role("tab", name="Test").click()
    page.click("#test-example-clear")
    page.wait_for_function("document.querySelectorAll('#test-example-list .virtual-row').length === 0")


def test_errors_show_as_messages(page, server, corrupt_image, photos):
    page.set_input_files("#test-upload input[type=file]", str(corrupt_image))
    page.fill("#test-prompts textarea", "person")
    page.click("#test-run")
    assert "broken.jpg" in toast(page, "broken.jpg")
    page.reload()
    page.wait_for_selector("#test-run")
    page.set_input_files("#test-upload input[type=file]", str(photos[1]))
    page.fill("#test-prompts textarea", "")
    page.click("#test-run")
    toast(page, "at least one class")
    page.get_by_role("tab", name="Batch").click()
    page.fill("#batch-prompts textarea", "person")
    page.fill("#batch-folder textarea, #batch-folder input", "/etc")
    page.click("#batch-start")
    toast(page, "outside the allowed folders")
    shot(page, "04-error-messages")
    content = page.content()
    assert "Traceback" not in content and 'File "' not in content


# -- Batch -> Review -> Export ----------------------------------------------------------------------


def test_batch_review_export(page, server, photos, tmp_path):
    # Batch: three uploads, a run name, a training size.
    page.get_by_role("tab", name="Batch").click()
    page.set_input_files("#batch-files input[type=file]", [str(p) for p in photos])
    page.fill("#batch-prompts textarea", "car=car,van\nperson")
    set_slider(page, "batch-threshold", 0.3)
    page.fill("#batch-run-name input, #batch-run-name textarea", "e2e")
    page.fill("#batch-image-size input, #batch-image-size textarea", "64")
    page.click("#batch-start")
    page.wait_for_selector("#batch-progress-inner[data-run=e2e][data-state=finished]")
    progress = page.inner_text("#batch-progress")
    assert "finished 3/3 images" in progress and "images/s" in progress
    page.wait_for_function("document.querySelectorAll('#batch-gallery img').length >= 3")
    page.wait_for_selector("#batch-zip", state="visible")
    shot(page, "05-batch")
    with zipfile.ZipFile(download(page, "batch-zip", tmp_path / "batch.zip")) as z:
        coco = json.loads(z.read("coco_export.json"))
        assert len(coco["images"]) == 3 and all(max(i["width"], i["height"]) == 64 for i in coco["images"])
        assert all(f"images/{i['file_name']}" in z.namelist() for i in coco["images"])

    # A refresh loses nothing: the run is in the store and listed.
    page.reload()
    page.wait_for_selector("#test-run")
    page.get_by_role("tab", name="Review").click()
    choose(page, "review-run", "e2e")
    page.click("#review-load")
    wait_text(page, "#review-position", "Image 1 of 3")
    with server.app.open_run("e2e") as store:
        first = next(store.images("done"))
        model_labels = store.labels(first.id)
    assert len(model_labels) > 0, "the tiny model should label the first photo at threshold 0.3"
    selected = page.input_value("#review-select input")
    rejected_id = int(selected.split()[0].lstrip("#"))

    # Reject the selected box with the keyboard shortcut.
    page.click("#review-position")  # focus out of any text field
    page.keyboard.press("r")
    wait_text(page, "#review-hint", f"Saved: reject #{rejected_id}")

    shot(page, "06-review")  # drawing boxes is covered by the Review tab's own tests

    # Export: the reviewed labels, at original size.
    page.get_by_role("tab", name="Export").click()
    choose(page, "export-run", "e2e")
    page.fill("#export-image-size input, #export-image-size textarea", "")
    page.click("#export-button")
    page.wait_for_selector("#export-download", state="visible")
    wait_text(page, "#export-summary", "Exported e2e")
    shot(page, "07-export")
    with zipfile.ZipFile(download(page, "export-download", tmp_path / "export.zip")) as z:
        coco = json.loads(z.read("coco_export.json"))
    image_id = next(i["id"] for i in coco["images"] if i["file_name"].startswith(Path(first.path).stem))
    anns = [a for a in coco["annotations"] if a["image_id"] == image_id]
    assert len(anns) == len(model_labels) - 1  # the rejected one is left out
    (rejected,) = np.flatnonzero(model_labels.ids == rejected_id)
    x0, y0, x1, y1 = map(float, model_labels.xyxy[rejected])
    assert not any(a.get("score") is not None and a["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=0.05)
                   for a in anns)


def test_relabel_a_finished_run_into_a_new_one(page, server):
    """After the batch above: its candidates give a new run with new prompts, listed for review."""
    page.get_by_role("tab", name="Batch").click()
    page.get_by_text("Relabel a finished run").click()
    choose(page, "batch-relabel-run", "e2e")
    wait_text(page, "#batch-relabel-note", "e2e-relabel-N")
    page.wait_for_function("document.querySelector('#batch-relabel-prompts textarea').value.includes('car=car,van')")
    page.fill("#batch-relabel-prompts textarea", "car=car,van\nperson\ntruck")  # the reviewed classes stay
    page.click("#batch-relabel")
    page.wait_for_selector("#batch-progress-inner[data-run=e2e-relabel-1][data-state=finished]")
    assert "finished 3/3 images" in page.inner_text("#batch-progress")
    shot(page, "09-batch-relabel")
    page.get_by_role("tab", name="Review").click()
    choose(page, "review-run", "e2e-relabel-1")
    page.click("#review-load")
    wait_text(page, "#review-summary", "truck")


def test_folder_batch_on_the_server(page, server):
    folder = server.config.allow_folders[0]
    page.get_by_role("tab", name="Batch").click()
    page.fill("#batch-folder textarea, #batch-folder input", str(folder))
    page.fill("#batch-prompts textarea", "person")
    page.fill("#batch-run-name input, #batch-run-name textarea", "from-folder")
    page.click("#batch-start")
    page.wait_for_selector("#batch-progress-inner[data-run=from-folder][data-state=finished]")
    assert "finished 2/2 images" in page.inner_text("#batch-progress")
    with server.app.open_run("from-folder") as store:
        assert [Path(r.path).parent for r in store.images("done")] == [folder, folder]


def test_a_running_batch_survives_a_refresh(page, server, photos, monkeypatch):
    """The job runs in the server: a reloaded page finds it and follows it to the end."""
    release = _gate_labelling(monkeypatch)
    try:
        page.get_by_role("tab", name="Batch").click()
        page.set_input_files("#batch-files input[type=file]", [str(p) for p in photos[:2]])
        page.fill("#batch-prompts textarea", "person")
        page.fill("#batch-run-name input, #batch-run-name textarea", "refresh")
        page.click("#batch-start")
        page.wait_for_selector("#batch-progress-inner[data-run=refresh][data-state=running]")
        page.reload()
        page.wait_for_selector("#test-run")
        page.get_by_role("tab", name="Batch").click()
        page.wait_for_selector("#batch-progress-inner[data-run=refresh][data-state=running]")
    finally:
        release.set()
    page.wait_for_selector("#batch-progress-inner[data-run=refresh][data-state=finished]")
    assert "finished 2/2 images" in page.inner_text("#batch-progress")
    page.wait_for_selector("#batch-zip", state="visible")
    # The finished run is in the Resume list without a reload ...
    page.get_by_text("Resume a run").first.click()
    choose(page, "batch-resume-run", "refresh")
    # ... and a refresh after the end keeps the gallery and the ZIP.
    page.reload()
    page.wait_for_selector("#test-run")
    page.get_by_role("tab", name="Batch").click()
    page.wait_for_selector("#batch-progress-inner[data-run=refresh][data-state=finished]")
    page.wait_for_selector("#batch-zip", state="visible")
    page.wait_for_function("document.querySelectorAll('#batch-gallery img').length >= 2")


def _gate_labelling(monkeypatch):
    """Hold every batch before it labels anything until the returned event is set."""
    import threading

    import autolabel.labeling as labeling

    release = threading.Event()
    real = labeling.label_into_store

    def gated(*args, **kwargs):
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(labeling, "label_into_store", gated)
    return release


def test_stop_then_resume(page, server, photos, monkeypatch):
    release = _gate_labelling(monkeypatch)
    try:
        page.get_by_role("tab", name="Batch").click()
        page.set_input_files("#batch-files input[type=file]", [str(p) for p in photos[:2]])
        page.fill("#batch-prompts textarea", "person")
        page.fill("#batch-run-name input, #batch-run-name textarea", "halt")
        page.click("#batch-start")
        page.wait_for_selector("#batch-progress-inner[data-run=halt][data-state=running]")
        page.click("#batch-stop")
        wait_text(page, "#batch-progress", "stopping")
    finally:
        release.set()
    page.wait_for_selector("#batch-progress-inner[data-run=halt][data-state=stopped]")
    assert "Resume continues" in page.inner_text("#batch-progress")
    assert not page.locator("#batch-stop").is_visible()
    page.get_by_text("Resume a run").first.click()
    choose(page, "batch-resume-run", "halt")
    page.click("#batch-resume")
    page.wait_for_selector("#batch-progress-inner[data-run=halt][data-state=finished]")
    assert "finished 2/2 images" in page.inner_text("#batch-progress")


def test_failed_images_are_listed_with_a_retry(page, server, photos, corrupt_image):
    page.get_by_role("tab", name="Batch").click()
    page.set_input_files("#batch-files input[type=file]", [str(photos[0]), str(corrupt_image)])
    page.fill("#batch-prompts textarea", "person")
    name = "Köln & <b>Fotos</b>"  # kept as typed but for its path separator, and shown as text
    page.fill("#batch-run-name input, #batch-run-name textarea", name)
    page.click("#batch-start")
    run = "Köln & <b>Fotos<_b>"
    finished = """run => { const el = document.querySelector('#batch-progress-inner');
                           return el && el.dataset.run === run && el.dataset.state === 'finished'; }"""
    page.wait_for_function(finished, arg=run)
    assert "1 failed" in page.inner_text("#batch-progress") and run in page.inner_text("#batch-progress")
    assert run in server.app.runs()
    page.wait_for_selector("#batch-failed", state="visible")
    rows = table_rows(page, "batch-failed")
    assert [r[0] for r in rows] == ["broken.jpg"] and "truncated" in rows[0][1]
    assert not any("/" in cell for row in rows for cell in row)  # no server paths
    shot(page, "08-batch-failed")
    page.click("#batch-retry")
    page.wait_for_function("() => document.querySelector('#batch-progress-inner').dataset.state === 'running'")
    page.wait_for_function(finished, arg=run)
    # Only the failed image was tried again.
    assert "finished 1/1 images, 1 failed, 1 already done" in page.inner_text("#batch-progress")


@pytest.mark.parametrize("viewport", [{"width": 1366, "height": 768}, {"width": 1920, "height": 1080}])
def test_many_uploads_keep_run_and_progress_in_view(browser, server, tmp_path, viewport):
    files = write_photos(tmp_path / "many", 150, seed=3)
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    try:
        page.goto(server.url)
        page.get_by_role("tab", name="Batch").click()
        page.set_input_files("#batch-files input[type=file]", [str(p) for p in files])
        wait_text(page, "#batch-file-count", "150 files")
        page.evaluate("window.scrollTo(0, 0)")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"09-batch-150-files-{viewport['width']}x{viewport['height']}.png"))
        for elem_id in ("batch-start", "batch-progress", "batch-file-count"):
            box = page.locator(f"#{elem_id}").bounding_box()
            assert box and box["y"] + box["height"] <= viewport["height"], elem_id
    finally:
        context.close()


def test_nothing_written_into_the_checkout(server):
    """Runs, uploads and downloads live in the run folders and the UI's work folder only."""
    repo = Path(__file__).resolve().parents[2]
    assert not (repo / ".gradio").exists() or not any((repo / ".gradio").iterdir())
    work = server.config.work_dir
    assert (work / "gradio").is_dir() and any((work / "exports").iterdir())
