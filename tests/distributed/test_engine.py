"""``label_on_ray`` on a local Ray cluster (2 CPUs) with the tiny checkpoints: the export equals the
single-process engine's, a killed actor's batch is retried, a killed driver resumes on re-run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from ray_helpers import coco_export, need_ray, write_photos

from autolabel.distributed import RayOptions, label_on_ray
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
