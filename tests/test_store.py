import sqlite3

import numpy as np
import pytest

from autolabel.detections import Detections
from autolabel.errors import StoreError
from autolabel.ontology import Ontology
from autolabel.store import ImageResult, open_store

ONT = Ontology.from_prompts(["car=car,van", "person"])
CONFIG = {"model": "m", "mode": "detect", "ontology": ONT.to_dict(), "detect": {"threshold": 0.1}}


def _dets():
    return Detections([[1, 2, 30, 40], [5, 5, 9, 9]], [0.9, 0.3], [0, 1], [1, 2],
                      masks=[{"size": [50, 60], "counts": "abc"}, {"size": [50, 60], "counts": "def"}])


def test_write_and_read_back(tmp_path):
    with open_store(tmp_path / "run") as store:
        store.bind_config(CONFIG)
        store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets()), ImageResult("/b.jpg", error="bad")])
        [image] = list(store.images())
        assert (image.path, image.width, image.height, image.sha256) == ("/a.jpg", 60, 50, "h")
        dets = store.detections(image.id)
        assert [(d.class_name, d.prompt, round(d.score, 3)) for d in dets] == [("car", "van", 0.9), ("person", "person", 0.3)]
        assert dets[0].xyxy == (1, 2, 30, 40) and dets[0].rle == {"size": [50, 60], "counts": "abc"}
        assert store.counts() == {"done": 1, "failed": 1, "per_class": {"car": 1, "person": 1}}
        assert store.failures() == [("/b.jpg", "bad")]
        assert store.done_among(["/a.jpg", "/b.jpg", "/c.jpg"]) == {"/a.jpg"}


def test_rewrite_is_idempotent(tmp_path):
    with open_store(tmp_path) as store:
        store.bind_config(CONFIG)
        for _ in range(3):
            store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets())])
        assert store.counts()["per_class"] == {"car": 1, "person": 1}


def test_other_configuration_is_refused_with_the_difference(tmp_path):
    with open_store(tmp_path) as store:
        store.bind_config(CONFIG)
        store.bind_config(dict(CONFIG))  # same config: fine
        with pytest.raises(StoreError, match=r"detect.threshold: 0.1 -> 0.2"):
            store.bind_config({**CONFIG, "detect": {"threshold": 0.2}})


def test_review_edits(tmp_path):
    with open_store(tmp_path) as store:
        store.bind_config(CONFIG)
        store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets())])
        image_id = next(store.images()).id
        car, person = store.detections(image_id)
        store.set_review(person.id, "rejected")
        assert [d.id for d in store.detections(image_id)] == [car.id]
        assert len(store.detections(image_id, include_rejected=True)) == 2
        store.update_detection(car.id, class_name="person", xyxy=(2, 3, 20, 30))
        edited = store.detections(image_id)[0]
        assert (edited.class_name, edited.xyxy, edited.review, edited.rle) == ("person", (2, 3, 20, 30), "accepted", None)
        new_id = store.add_detection(image_id, "car", (10, 10, 20, 20))
        added = [d for d in store.detections(image_id) if d.id == new_id][0]
        assert (added.source, added.review, added.score) == ("human", "accepted", None)
        # Re-labelling the image replaces model labels but keeps human ones.
        store.write_results([ImageResult("/a.jpg", "h", 60, 50, Detections.empty())])
        assert [d.id for d in store.detections(image_id)] == [new_id]
        with pytest.raises(StoreError, match="unknown class"):
            store.add_detection(image_id, "dog", (0, 0, 1, 1))
        with pytest.raises(StoreError, match="empty"):
            store.add_detection(image_id, "car", (5, 5, 5, 9))


def test_wal_mode_and_missing_run(tmp_path):
    with open_store(tmp_path / "run"):
        pass
    conn = sqlite3.connect(tmp_path / "run" / "autolabel.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(StoreError, match="not a run folder"):
        open_store(tmp_path / "elsewhere", create=False)


def test_corrupt_database_is_a_clear_error(tmp_path):
    (tmp_path / "autolabel.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        open_store(tmp_path)
