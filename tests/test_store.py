import json
import sqlite3
import threading

import numpy as np
import pytest

from autolabel import store as store_module
from autolabel.detections import NO_PROMPT, Detections
from autolabel.errors import StoreError
from autolabel.ontology import Ontology
from autolabel.store import ImageResult, as_rows, from_rows, open_store

ONT = Ontology.from_prompts(["car=car,van", "person"])
CONFIG = {"model": "m", "mode": "detect", "ontology": ONT.to_dict(), "detect": {"threshold": 0.1}}
RLE = {"size": [50, 60], "counts": "abc"}


def _dets():
    return Detections(np.array([[1, 2, 30, 40], [5, 5, 9, 9]], dtype=np.float32), np.array([0.9, 0.3], dtype=np.float32),
                      [0, 1], [1, 2], masks=[RLE, {"size": [50, 60], "counts": "def"}])


@pytest.fixture()
def store(tmp_path):
    with open_store(tmp_path / "run") as opened:
        opened.bind_config(CONFIG)
        yield opened


def test_write_and_read_back(store):
    store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets()), ImageResult("/b.jpg", error="bad")])
    [image] = list(store.images())
    assert (image.path, image.width, image.height, image.sha256) == ("/a.jpg", 60, 50, "h")
    labels = store.labels(image.id)
    assert labels.class_ids.tolist() == [0, 1] and labels.prompt_ids.tolist() == [1, 2]
    assert labels.scores.round(3).tolist() == [0.9, 0.3] and labels.xyxy[0].tolist() == [1, 2, 30, 40]
    assert labels.masks[0] == RLE and len(set(labels.ids.tolist())) == 2
    assert labels.sources.tolist() == ["model", "model"] and labels.reviews.tolist() == ["pending", "pending"]
    assert store.counts() == {"done": 1, "failed": 1, "per_class": {"car": 1, "person": 1}}
    assert store.failures() == [("/b.jpg", "bad")]
    assert store.done_among(["/a.jpg", "/b.jpg", "/c.jpg"]) == {"/a.jpg"}


def test_rows_round_trip_exactly():
    # float64 values that float32 would change, a label without score/prompt/mask, a rejected one
    det = Detections(np.array([[0.1, 0.2, 10.3, 20.7], [1 / 3, 2, 3, 4]]), [0.123456789012, np.nan], [1, 0],
                     [2, NO_PROMPT], [RLE, None], sources=["model", "human"], reviews=["rejected", "accepted"])
    rows = as_rows(5, det, ONT)
    assert rows[1][2:4] == (None, None) and rows[1][8] is None  # no prompt, score, mask
    back = from_rows([(10 + i, *row[1:]) for i, row in enumerate(rows)], ONT)
    assert back.xyxy.tolist() == det.xyxy.tolist() and back.scores[0] == det.scores[0] and np.isnan(back.scores[1])
    assert back.class_ids.tolist() == [1, 0] and back.prompt_ids.tolist() == [2, NO_PROMPT]
    assert back.masks == [RLE, None] and back.ids.tolist() == [10, 11]
    assert back.sources.tolist() == ["model", "human"] and back.reviews.tolist() == ["rejected", "accepted"]
    with pytest.raises(StoreError, match=r"class ids \[2\]"):
        as_rows(5, Detections([[0, 0, 1, 1]], [0.5], [2], [0]), ONT)


def test_rewrite_is_idempotent(store):
    for _ in range(3):
        store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets())])
    assert store.counts()["per_class"] == {"car": 1, "person": 1}


def test_other_configuration_is_refused_with_the_difference(store):
    store.bind_config(dict(CONFIG))  # same config: fine
    with pytest.raises(StoreError, match=r"detect.threshold: 0.1 -> 0.2"):
        store.bind_config({**CONFIG, "detect": {"threshold": 0.2}})


def test_human_labels_replace_human_labels_only(store):
    store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets())])
    human = Detections(np.array([[1.5, 2.5, 3.5, 4.5]]), [0.7], [1], [2], sources=["human"])
    for _ in range(2):  # a re-import replaces the image's human labels
        store.write_human_labels([ImageResult("/a.jpg", "h", 60, 50, human), ImageResult("/c.jpg", error="gone")])
    image = store.image(next(store.images()).id)
    labels = store.labels(image.id)
    assert image.reviewed and labels.sources.tolist() == ["model", "model", "human"]
    last = labels[2]
    assert last.reviews.tolist() == ["accepted"] and np.isnan(last.scores[0]) and last.prompt_ids.tolist() == [NO_PROMPT]
    assert last.xyxy.tolist() == [[1.5, 2.5, 3.5, 4.5]] and last.masks == [None]
    store.write_results([ImageResult("/a.jpg", "h", 60, 50, Detections.empty())])
    assert store.labels(image.id).sources.tolist() == ["human"]


def test_review_edits(store):
    store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets())])
    image_id = next(store.images()).id
    car, person = store.labels(image_id).ids.tolist()
    store.set_review(person, "rejected")
    assert store.labels(image_id).ids.tolist() == [car]
    assert len(store.labels(image_id, include_rejected=True)) == 2
    store.update_detection(car, class_name="person", xyxy=(2, 3, 20, 30))
    edited = store.labels(image_id)
    assert (edited.class_ids.tolist(), edited.xyxy.tolist(), edited.reviews.tolist(), edited.masks) == \
        ([1], [[2, 3, 20, 30]], ["accepted"], None)
    new_id = store.add_detection(image_id, "car", (10, 10, 20, 20))
    added = store.labels(image_id)[store.labels(image_id).ids == new_id]
    assert (added.sources.tolist(), added.reviews.tolist(), added.has_score.tolist()) == (["human"], ["accepted"], [False])
    # Re-labelling the image replaces model labels but keeps human ones, the edited one included.
    store.write_results([ImageResult("/a.jpg", "h", 60, 50, Detections.empty())])
    assert store.labels(image_id).ids.tolist() == [car, new_id]
    with pytest.raises(StoreError, match="unknown class"):
        store.add_detection(image_id, "dog", (0, 0, 1, 1))
    with pytest.raises(StoreError, match="empty"):
        store.add_detection(image_id, "car", (5, 5, 5, 9))
    with pytest.raises(StoreError, match="review must be one of"):
        store.set_review(new_id, "maybe")


def test_an_edited_label_becomes_human_and_keeps_the_model_prediction(store):
    store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets())])
    image_id = next(store.images()).id
    before = store.labels(image_id)
    car = int(before.ids[0])
    store.update_detection(car, xyxy=(2, 3, 20, 30))
    store.update_detection(car, class_name="person")  # a second edit keeps the first prediction
    edited = store.labels(image_id)[store.labels(image_id).ids == car]
    assert (edited.sources.tolist(), edited.reviews.tolist(), edited.has_score.tolist()) == (["human"], ["accepted"], [False])
    assert edited.prompt_ids.tolist() == [NO_PROMPT] and edited.xyxy.tolist() == [[2, 3, 20, 30]]
    predicted = store.model_predictions(image_id)
    assert predicted.ids.tolist() == before.ids.tolist()
    np.testing.assert_array_equal(predicted.xyxy, before.xyxy)
    np.testing.assert_array_equal(predicted.scores, before.scores)
    assert predicted.class_ids.tolist() == before.class_ids.tolist() and set(predicted.sources) == {"model"}


def test_an_unchanged_edit_only_accepts(store):
    store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets())])
    image_id = next(store.images()).id
    label = store.labels(image_id)[0]
    store.update_detection(int(label.ids[0]), class_name=store.ontology.names[int(label.class_ids[0])],
                           xyxy=label.xyxy[0])
    after = store.labels(image_id)[0]
    assert (after.sources.tolist(), after.reviews.tolist(), after.scores.tolist()) == (["model"], ["accepted"],
                                                                                       label.scores.tolist())


def test_a_moved_box_takes_its_new_mask_in_the_same_edit(store):
    from autolabel.geometry import box_to_rle

    store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets())])
    image_id = next(store.images()).id
    car, person = store.labels(image_id).ids.tolist()
    mask = box_to_rle((2, 3, 20, 30), 50, 60)
    store.update_detection(car, xyxy=(2, 3, 20, 30), rle=mask)
    moved = store.labels(image_id)[store.labels(image_id).ids == car]
    assert (moved.xyxy.tolist(), moved.masks, moved.sources.tolist()) == ([[2, 3, 20, 30]], [mask], ["human"])
    assert store.model_predictions(image_id).masks[0] == RLE  # the model's mask stays with its prediction
    store.update_detection(car, xyxy=(2, 3, 20, 30), rle=mask)  # the same box and mask: only accepted
    store.update_detection(car, class_name="person")  # a new class keeps the mask of an unmoved box
    assert store.labels(image_id)[store.labels(image_id).ids == car].masks == [mask]
    store.update_detection(person, xyxy=(5, 5, 12, 12))  # no mask given: a moved box has none
    assert store.labels(image_id)[store.labels(image_id).ids == person].masks == [None]


def test_a_new_mask_for_the_same_box_is_stored_and_the_label_becomes_human(store):
    from autolabel.geometry import box_to_rle

    store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets())])
    image_id = next(store.images()).id
    car = int(store.labels(image_id).ids[0])
    row = store.detection_row(car)
    box = tuple(row[k] for k in ("x0", "y0", "x1", "y1"))
    refined = box_to_rle((2, 3, 20, 30), 50, 60)
    store.update_detection(car, xyxy=box, rle=refined)
    labels = store.labels(image_id)
    car_labels = labels[labels.ids == car]
    assert car_labels.masks == [refined] and car_labels.sources.tolist() == ["human"]
    assert car_labels.xyxy.tolist() == [list(box)] and np.isnan(car_labels.scores).all()
    assert store.model_predictions(image_id).masks[0] == RLE  # the model's mask stays with its prediction
    edited = store.detection_row(car)
    store.set_review(car, "pending")
    store.update_detection(car, xyxy=box, rle={"counts": refined["counts"], "size": refined["size"]})
    assert store.detection_row(car) == edited  # the same mask, whatever its key order: only accepted
    again = box_to_rle((4, 3, 20, 30), 50, 60)
    store.update_detection(car, xyxy=box, rle=again)
    assert json.loads(store.detection_row(car)["rle"]) == again


@pytest.mark.parametrize("bad, why", [
    ({"size": [60, 50], "counts": "0"}, "not the image's"),  # height and width swapped
    ({"size": [50, 60], "counts": [10, 20]}, "cover 30 pixels"),  # too short: another image's
    ("not a mask", "COCO RLE dict"),
])
def test_a_mask_of_the_wrong_size_is_refused_and_nothing_changes(store, bad, why):
    store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets())])
    image_id = next(store.images()).id
    car = int(store.labels(image_id).ids[0])
    before = store.detection_row(car)
    with pytest.raises(StoreError, match=why):
        store.update_detection(car, xyxy=(2, 3, 20, 30), rle=bad)
    assert store.detection_row(car) == before
    with pytest.raises(StoreError, match=why):  # a drawn box's mask is checked the same way
        store.add_detection(image_id, "car", (2, 3, 20, 30), rle=bad)
    assert len(store.labels(image_id)) == 2


def test_a_label_snapshot_puts_back_exactly(store):
    store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets())])
    image_id = next(store.images()).id
    car = int(store.labels(image_id).ids[0])
    snapshot = store.detection_row(car)
    store.update_detection(car, xyxy=(2, 3, 20, 30))
    store.delete_detection(car)
    assert store.detection_row(car) is None
    store.put_detection_row(snapshot)
    assert store.detection_row(car) == snapshot
    with pytest.raises(StoreError, match="snapshot needs"):
        store.put_detection_row({"id": car})


def test_a_schema_1_store_gains_the_original_column(tmp_path):
    with open_store(tmp_path) as store:
        store._conn.execute("ALTER TABLE detections DROP COLUMN original")
        store._conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with open_store(tmp_path) as store:
        columns = {r[1] for r in store._conn.execute("PRAGMA table_info(detections)")}
        version = store._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert "original" in columns and version == "2"


def test_accept_image_is_one_durable_transaction(store, monkeypatch):
    store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets())])
    image_id = next(store.images()).id
    store.set_review(int(store.labels(image_id).ids[1]), "rejected")
    statements = []
    store._conn.set_trace_callback(statements.append)
    assert store.accept_image(image_id) == 1
    store._conn.set_trace_callback(None)
    assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"]
    assert statements[0] == "PRAGMA synchronous = FULL" and statements[-1] == "PRAGMA synchronous = NORMAL"
    assert store.image(image_id).reviewed
    assert store.labels(image_id, include_rejected=True).reviews.tolist() == ["accepted", "rejected"]


def test_a_failed_edit_rolls_back(store):
    store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets())])
    with pytest.raises(StoreError, match="no detection"):
        store.update_detection(12345, class_name="car")
    store.set_review(int(store.labels(next(store.images()).id).ids[0]), "accepted")  # no transaction left open


def _in_thread(fn):
    caught = []
    thread = threading.Thread(target=lambda: caught.append(_call(fn)))
    thread.start()
    thread.join()
    return caught[0]


def _call(fn):
    try:
        return fn()
    except Exception as exc:  # handed back to the test's thread
        return exc


def test_one_writer_thread_besides_the_opening_one(store):
    writer_started, release = threading.Event(), threading.Event()

    def writer():
        store.write_results([ImageResult("/a.jpg", "h", 60, 50, _dets())])
        writer_started.set()
        release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        writer_started.wait(10)
        error = _in_thread(lambda: store.counts())  # a third thread while the writer lives
        assert isinstance(error, RuntimeError) and "open another store" in str(error)
        assert store.counts()["done"] == 1  # the opening thread still may
    finally:
        release.set()
        thread.join()
    assert _in_thread(lambda: store.counts())["done"] == 1  # the writer is gone: a new one may take over


def test_open_store_closes_its_connection_when_opening_fails(tmp_path, monkeypatch):
    with open_store(tmp_path):
        pass
    conn = sqlite3.connect(tmp_path / "autolabel.db")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    opened = []
    real_connect = sqlite3.connect
    monkeypatch.setattr(store_module.sqlite3, "connect", lambda *a, **k: opened.append(real_connect(*a, **k)) or opened[-1])
    with pytest.raises(StoreError, match="newer autolabel"):
        open_store(tmp_path)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[0].execute("SELECT 1")


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
