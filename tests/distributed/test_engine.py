"""``label_on_ray`` on a local Ray cluster (2 CPUs) with the tiny checkpoints: the export equals the
single-process engine's (also with tiles and exemplars), a killed actor's batch is retried, a killed
driver resumes on re-run, a run whose images all fail the same unexpected way stops."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from ray_helpers import coco_export, need_ray, write_photos

from autolabel.distributed import RayOptions, label_on_ray, workers
from autolabel.errors import AutolabelError, ConfigError
from autolabel.labeling import label_into_store
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig, Labeler
from autolabel.store import open_store

ray = need_ray()
# Ray Data reads its own deprecated DataContext fields (not our code).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
ONTOLOGY = Ontology.from_prompts(["car=car,van", "person"])


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray per module (2 CPUs, no dashboard, localhost only); ``label_on_ray`` uses it."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


def _labeler(owlv2, sam2=None) -> Labeler:
    return Labeler(ONTOLOGY, model=str(owlv2), sam_model=str(sam2) if sam2 else None,
                   mode="segment" if sam2 else "detect", config=DetectConfig(threshold=0.0), device="cpu")


def _single_process_export(labeler, photos, tmp_path) -> str:
    with open_store(tmp_path / "single") as store:
        label_into_store(labeler, [photos], store, batch_size=2)
    return coco_export(tmp_path / "single", tmp_path / "export-single")


def test_detect_run_matches_the_single_process_engine(ray_local, tiny_owlv2, tmp_path):
    photos = write_photos(tmp_path / "photos", 6)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")  # fails alone, as in a local run
    with open_store(tmp_path / "ray") as store:
        summary = label_on_ray(_labeler(tiny_owlv2), [photos], store, RayOptions(batch_size=2))
    assert (summary.done, summary.failed, summary.skipped) == (6, 1, 0)
    assert "broken.jpg" in summary.failures[0][1]
    assert sum(summary.per_actor.values()) == 7
    assert coco_export(tmp_path / "ray", tmp_path / "export-ray") == _single_process_export(
        _labeler(tiny_owlv2), photos, tmp_path)

    with open_store(tmp_path / "ray") as store:  # resume: nothing left to do, Ray not even needed
        again = label_on_ray(_labeler(tiny_owlv2), [photos], store, RayOptions(batch_size=2))
    assert (again.done, again.skipped) == (0, 6)


def test_a_killed_actor_is_restarted_and_its_batch_retried(ray_local, tiny_owlv2, tiny_sam2, tmp_path):
    photos = write_photos(tmp_path / "photos", 8, seed=3)
    killed = []

    def kill_first_actor(count, actor):
        if not killed:  # the actor reports host:pid; it is busy with its next batch now
            killed.append(actor)
            os.kill(int(actor.rsplit(":", 1)[1]), signal.SIGKILL)

    with open_store(tmp_path / "ray") as store:
        summary = label_on_ray(_labeler(tiny_owlv2, tiny_sam2), [photos], store, RayOptions(batch_size=2),
                               on_progress=kill_first_actor)
    assert killed and len(summary.per_actor) == 2, summary.per_actor  # a second process took over
    assert (summary.done, summary.failed) == (8, 0)  # nothing lost, nothing twice
    assert coco_export(tmp_path / "ray", tmp_path / "export-ray") == _single_process_export(
        _labeler(tiny_owlv2, tiny_sam2), photos, tmp_path)


@pytest.fixture(scope="module")
def owlv2_slow(tmp_path_factory):
    """A bigger input size so each image takes long enough to kill the driver part way."""
    from autolabel.testing.owlv2_checkpoint import build_owlv2_checkpoint

    return build_owlv2_checkpoint(tmp_path_factory.mktemp("owlv2-320"), image_size=320)


def _done_count(db_path) -> int:
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM images WHERE status = 'done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_killed_driver_resumes_on_rerun_with_the_same_export(ray_local, owlv2_slow, tmp_path):
    photos = write_photos(tmp_path / "photos", 10, seed=1)
    address = ray.get_runtime_context().gcs_address  # the driver joins the module's cluster
    run = tmp_path / "killed"
    args = [sys.executable, "-m", "autolabel", "label", str(photos), "--out", str(run), "--prompt", "car=car,van",
            "--prompt", "person", "--model", str(owlv2_slow), "--threshold", "0.0", "--device", "cpu",
            "--batch-size", "1", "--quiet", "--engine", "ray", "--ray-address", address]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while _done_count(run / "autolabel.db") < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = _done_count(run / "autolabel.db")
    assert 0 < done_at_kill < 10, f"the kill must land part way (done={done_at_kill})"

    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{10 - done_at_kill} done, 0 failed, {done_at_kill} skipped" in rerun.stdout
    assert "actor " in rerun.stdout  # per-actor counts in the summary
    reference = Labeler(ONTOLOGY, model=str(owlv2_slow), config=DetectConfig(threshold=0.0), device="cpu")
    assert coco_export(run, tmp_path / "export-killed") == _single_process_export(reference, photos, tmp_path)


def test_a_tiled_run_matches_the_single_process_engine(ray_local, tiny_owlv2, tmp_path):
    # auto tiles of the tiny model's 64 px side: the decode tasks must plan them as the actors do
    photos = write_photos(tmp_path / "photos", 2, seed=5)
    labeler = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=DetectConfig(threshold=0.0), device="cpu", tiles="auto")
    with open_store(tmp_path / "ray") as store:
        summary = label_on_ray(labeler, [photos], store, RayOptions(batch_size=2))
    assert (summary.done, summary.failed) == (2, 0), summary.failures
    reference = Labeler(ONTOLOGY, model=str(tiny_owlv2), config=DetectConfig(threshold=0.0), device="cpu",
                        tiles="auto")
    assert coco_export(tmp_path / "ray", tmp_path / "export-ray") == _single_process_export(
        reference, photos, tmp_path)


def test_an_exemplar_run_matches_the_single_process_engine(ray_local, tiny_owlv2, tmp_path):
    photos = write_photos(tmp_path / "photos", 3, seed=6)
    exemplar = write_photos(tmp_path / "exemplars", 1, seed=7) / "img_000.jpg"
    ontology = Ontology.from_data([{"name": "car", "prompts": ["car"]},
                                   {"name": "widget", "exemplars": [{"image": str(exemplar), "box": [5, 5, 60, 50]}]}])

    def labeler():
        return Labeler(ontology, model=str(tiny_owlv2), config=DetectConfig(threshold=0.0), device="cpu")

    with open_store(tmp_path / "ray") as store:
        summary = label_on_ray(labeler(), [photos], store, RayOptions(batch_size=2))
    assert (summary.done, summary.failed) == (3, 0), summary.failures
    assert summary.per_class["widget"] > 0
    assert coco_export(tmp_path / "ray", tmp_path / "export-ray") == _single_process_export(
        labeler(), photos, tmp_path)


def test_a_run_whose_first_images_all_fail_the_same_unexpected_way_stops(ray_local, tiny_owlv2, tmp_path,
                                                                         monkeypatch, caplog):
    class BrokenPreprocessor:  # defined here, so pickled by value to the decode tasks
        on_device = False

        def decode_side(self, size):
            return None

        def __call__(self, pixels, size, device):
            raise ZeroDivisionError("preprocessor bug")

    real_decoder = workers.decoding_labeler

    def broken_decoder(*args):
        decoder = real_decoder(*args)
        decoder.detector.preprocessor = BrokenPreprocessor()
        return decoder

    monkeypatch.setattr(workers, "decoding_labeler", broken_decoder)
    photos = write_photos(tmp_path / "photos", 20, seed=8)
    with open_store(tmp_path / "ray") as store, \
            pytest.raises(AutolabelError, match=r"first \d+ images all failed .*ZeroDivisionError: preprocessor bug"):
        label_on_ray(_labeler(tiny_owlv2), [photos], store, RayOptions(batch_size=2))
    with open_store(tmp_path / "ray") as store:
        failed = list(store.images("failed"))
    assert 8 <= len(failed) < 20  # stopped early; what was written is kept
    logged = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
    assert len(logged) == 1 and "preprocessor bug" in logged[0].exc_info[1].remote_traceback  # the worker's


def test_a_run_folder_that_keeps_candidates_is_refused(tiny_owlv2, tmp_path):
    from autolabel.labeling import run_config

    labeler = _labeler(tiny_owlv2)
    with open_store(tmp_path / "run") as store:
        store.bind_config(run_config(labeler, 300))  # started by a local run keeping candidates
        with pytest.raises(ConfigError, match="keeps detector candidates.*--engine local"):
            label_on_ray(labeler, [tmp_path], store)
