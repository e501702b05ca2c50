"""The label store: one SQLite database per run folder.

A single-writer job store: WAL journal, ``BEGIN IMMEDIATE``, one transaction per batch of images,
idempotent writes keyed by image path, so a run killed at any point keeps every committed image and
re-running skips them. WAL does not work on network filesystems (NFS, SMB): keep run folders on a
local disk. The run's configuration is stored once; opening the folder with another is refused.

Threads: a :class:`Store` is one connection, used by the thread that opened it and by at most one
writer thread at a time (the labelling loop commits from a background thread); any other thread
gets ``RuntimeError`` and should open its own store (WAL lets readers and the writer work side by
side). A lock serialises the two threads, so a transaction is never interleaved with another call.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

import numpy as np

from autolabel.configs import config_diff
from autolabel.detections import NO_PROMPT, REVIEWS, Detections
from autolabel.errors import StoreError
from autolabel.ontology import Ontology

DB_NAME = "autolabel.db"
SCHEMA_VERSION = 2  # 2: detections.original (a person's edit keeps the model's prediction)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    sha256 TEXT,
    width INTEGER,
    height INTEGER,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    error TEXT,
    reviewed INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS detections (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    class_name TEXT NOT NULL,
    prompt TEXT,
    score REAL,
    x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,
    rle TEXT,
    source TEXT NOT NULL DEFAULT 'model' CHECK (source IN ('model', 'human')),
    review TEXT NOT NULL DEFAULT 'pending' CHECK (review IN ('pending', 'accepted', 'rejected')),
    original TEXT
);
CREATE INDEX IF NOT EXISTS detections_by_image ON detections(image_id);
"""

# The columns ``from_rows`` reads and ``as_rows`` writes, in order.
_LABEL_COLUMNS = "class_name, prompt, score, x0, y0, x1, y1, rle, source, review"
_IMAGE_COLUMNS = "id, path, sha256, width, height, status, error, reviewed"
_INSERT_LABELS = f"INSERT INTO detections (image_id, {_LABEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# Every column of a label, for exact snapshots (``detection_row`` / ``put_detection_row``, the
# Review tab's undo and redo).
_ROW_COLUMNS = ("id", "image_id", *_LABEL_COLUMNS.split(", "), "original")


@dataclass(frozen=True)
class ImageRecord:
    id: int
    path: str
    sha256: str | None
    width: int | None
    height: int | None
    status: str
    error: str | None
    reviewed: bool


@dataclass(frozen=True)
class ImageResult:
    """What the labelling loop (or an importer) hands the store for one image: success or failure."""

    path: str
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    detections: Detections | None = None
    error: str | None = None


# -- store rows <-> Detections ----------------------------------------------------------------------


def from_rows(rows, ontology: Ontology) -> Detections:
    """Rows ``(id, class_name, prompt, score, x0, y0, x1, y1, rle, source, review)`` -> Detections
    (float64 values kept; NULL score -> NaN, NULL prompt -> -1). Rows of a class the ontology lacks
    (only a hand-edited database has them) are left out."""
    class_index = {name: i for i, name in enumerate(ontology.names)}
    prompt_index = {(ontology.names[c], q): k for k, (c, q) in enumerate(zip(ontology.query_class_ids, ontology.queries))}
    rows = [r for r in rows if r[1] in class_index]
    rles = [json.loads(r[8]) if r[8] else None for r in rows]
    return Detections(
        np.array([r[4:8] for r in rows], dtype=np.float64).reshape(-1, 4),
        np.array([np.nan if r[3] is None else r[3] for r in rows], dtype=np.float64),
        [class_index[r[1]] for r in rows],
        [prompt_index.get((r[1], r[2]), NO_PROMPT) for r in rows],
        rles if any(m is not None for m in rles) else None,
        ids=[r[0] for r in rows], sources=[r[9] for r in rows], reviews=[r[10] for r in rows],
    )


def as_rows(image_id: int, detections: Detections, ontology: Ontology) -> list[tuple]:
    """Detections of one image -> rows for ``_INSERT_LABELS`` (NaN score and prompt -1 -> NULL)."""
    names, queries = ontology.names, ontology.queries
    bad = [int(c) for c in detections.class_ids if not 0 <= c < len(names)]
    if bad:
        raise StoreError(f"class ids {bad} are not in the run's classes ({', '.join(names)})")
    masks = detections.masks or [None] * len(detections)
    return [
        (image_id, names[int(detections.class_ids[i])],
         queries[int(detections.prompt_ids[i])] if detections.prompt_ids[i] >= 0 else None,
         None if np.isnan(detections.scores[i]) else float(detections.scores[i]),
         *map(float, detections.xyxy[i]), json.dumps(masks[i]) if masks[i] else None,
         str(detections.sources[i]), str(detections.reviews[i]))
        for i in range(len(detections))
    ]



@contextmanager
def transaction(conn: sqlite3.Connection, durable: bool = False):
    """One ``BEGIN IMMEDIATE`` transaction on ``conn`` (autocommit mode); ``durable`` commits with
    ``synchronous=FULL`` (a review edit must survive a power cut), then goes back to NORMAL."""
    if durable:
        conn.execute("PRAGMA synchronous = FULL")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        if durable:
            conn.execute("PRAGMA synchronous = NORMAL")


class Store:
    """The labels of one run folder (open it with :func:`open_store`; close it, or use ``with``).
    Threads: see the module docstring."""

    def __init__(self, run_dir: Path, conn: sqlite3.Connection):
        self.run_dir = run_dir
        self._conn = conn
        self._lock = threading.RLock()
        self._owner = threading.current_thread()
        self._writer: threading.Thread | None = None
        self._config: dict | None = None
        self._ontology: Ontology | None = None

    @contextmanager
    def _use(self):
        """Hold the connection for one call, from an allowed thread (see the module docstring)."""
        thread = threading.current_thread()
        if thread is not self._owner:
            with self._lock:
                if self._writer is None or not self._writer.is_alive():
                    self._writer = thread
            if self._writer is not thread:
                raise RuntimeError(f"the store of {self.run_dir} is used by {self._owner.name} and {self._writer.name}; "
                                   f"open another store in {thread.name}")
        with self._lock:
            yield self._conn

    @contextmanager
    def _transaction(self, durable: bool = False):
        with self._use() as conn, transaction(conn, durable):
            yield conn

    # -- configuration ------------------------------------------------------------------------------

    @property
    def config(self) -> dict | None:
        if self._config is None:
            with self._use() as conn:
                row = conn.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
            self._config = json.loads(row[0]) if row else None
        return self._config

    @property
    def ontology(self) -> Ontology:
        if self._ontology is None:
            config = self.config
            if not config:
                raise StoreError(f"{self.run_dir} has no configuration yet")
            self._ontology = Ontology.from_data(config["ontology"])
        return self._ontology

    def bind_config(self, config: dict) -> None:
        """Record the run's configuration, or refuse if the folder holds a different one."""
        existing = self.config
        normalised = json.loads(json.dumps(config))
        if existing is None:
            with self._transaction() as conn:
                conn.execute("INSERT INTO meta VALUES ('config', ?)", (json.dumps(normalised, sort_keys=True),))
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('created_at', ?)", (str(time.time()),))
            self._config = None  # read back as stored
            return
        diffs = config_diff(existing, normalised)
        if diffs:
            raise StoreError(
                f"{self.run_dir} holds a run made with another configuration ({'; '.join(diffs)}); "
                "re-run with the same options to resume it, or choose a new --out folder"
            )

    # -- labelling ----------------------------------------------------------------------------------

    @staticmethod
    def _upsert_image(conn: sqlite3.Connection, res: ImageResult, now: float, reviewed: bool | None = None) -> int:
        """Insert or update one image row (inside a transaction); ``reviewed=None`` keeps the flag."""
        status = "failed" if res.error else "done"
        conn.execute(
            """INSERT INTO images (path, sha256, width, height, status, error, reviewed, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(path) DO UPDATE SET sha256=excluded.sha256, width=excluded.width,
                 height=excluded.height, status=excluded.status, error=excluded.error,
                 reviewed=COALESCE(?, images.reviewed), updated_at=excluded.updated_at""",
            (res.path, res.sha256, res.width, res.height, status, res.error, int(bool(reviewed)), now,
             None if reviewed is None else int(reviewed)),
        )
        return conn.execute("SELECT id FROM images WHERE path = ?", (res.path,)).fetchone()[0]

    def _write(self, results: list[ImageResult], source: str, review: str) -> None:
        """One transaction: each image's labels of ``source`` replaced by its detections, stored
        with ``source`` and ``review``; human labels carry no score and no prompt."""
        ontology = self.ontology
        human = source == "human"
        now = time.time()
        with self._transaction() as conn:
            for res in results:
                image_id = self._upsert_image(conn, res, now, reviewed=(not res.error) if human else None)
                conn.execute("DELETE FROM detections WHERE image_id = ? AND source = ?", (image_id, source))
                det = res.detections
                if det is None or not len(det):
                    continue
                n = len(det)
                det = replace(det, sources=[source] * n, reviews=[review] * n, ids=None,
                              **({"scores": np.full(n, np.nan), "prompt_ids": np.full(n, NO_PROMPT)} if human else {}))
                conn.executemany(_INSERT_LABELS, as_rows(image_id, det, ontology))

    def write_results(self, results: list[ImageResult]) -> None:
        """Store a batch of model results in one transaction. Re-writing an image replaces its model
        labels (pending review); its human labels stay."""
        if results:
            self._write(results, "model", "pending")

    def write_human_labels(self, results: list[ImageResult]) -> None:
        """Store an imported dataset's labels (accepted, no score or prompt) on reviewed images, in one
        transaction. Re-writing an image replaces its human labels; its model labels stay."""
        if results:
            self._write(results, "human", "accepted")

    def done_among(self, paths: Iterable[str]) -> set[str]:
        """Which of ``paths`` (any iterable, read 500 at a time) are already labelled: resume skips
        them. The answer is as large as what is done: for millions, ask in parts (``labeling.remove_done``)."""
        done: set[str] = set()
        pending = iter(paths)
        with self._use() as conn:
            while chunk := list(islice(pending, 500)):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(f"SELECT path FROM images WHERE status = 'done' AND path IN ({marks})",
                                    chunk).fetchall()
                done.update(r[0] for r in rows)
        return done

    # -- reads --------------------------------------------------------------------------------------

    def images(self, status: str | None = "done") -> Iterator[ImageRecord]:
        """Images ordered by path (a stable order for exports); ``status=None`` for all."""
        where, args = (" WHERE status = ?", (status,)) if status is not None else ("", ())
        with self._use() as conn:
            cursor = conn.execute(f"SELECT {_IMAGE_COLUMNS} FROM images{where} ORDER BY path", args)
        # Rows are streamed (a run may hold millions); SQLite keeps the read consistent.
        for row in cursor:
            yield ImageRecord(*row[:7], bool(row[7]))

    def image(self, image_id: int) -> ImageRecord:
        with self._use() as conn:
            row = conn.execute(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise StoreError(f"no image with id {image_id} in {self.run_dir}")
        return ImageRecord(*row[:7], bool(row[7]))

    def labels(self, image_id: int, include_rejected: bool = False) -> Detections:
        """Labels of one image (rejected ones only with ``include_rejected``), highest score first,
        labels without a score (human ones) last; ``ids``, ``sources``, ``reviews`` and masks filled."""
        sql = f"SELECT id, {_LABEL_COLUMNS} FROM detections WHERE image_id = ?"
        if not include_rejected:
            sql += " AND review != 'rejected'"
        with self._use() as conn:
            rows = conn.execute(sql + " ORDER BY score IS NULL, score DESC, id", (image_id,)).fetchall()
        return from_rows(rows, self.ontology)

    def counts(self) -> dict:
        """Summary: images done/failed and labels per class (rejected ones excluded)."""
        with self._use() as conn:
            status = dict(conn.execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())
            per_class = dict(conn.execute(
                "SELECT class_name, COUNT(*) FROM detections WHERE review != 'rejected' GROUP BY class_name"
            ).fetchall())
        return {"done": status.get("done", 0), "failed": status.get("failed", 0), "per_class": per_class}

    def failures(self) -> list[tuple[str, str]]:
        with self._use() as conn:
            return conn.execute("SELECT path, error FROM images WHERE status = 'failed' ORDER BY path").fetchall()

    # -- human review -------------------------------------------------------------------------------
    # Each edit is one transaction committed with synchronous=FULL: no lost work on a refresh or crash.

    def _check_class(self, class_name: str) -> None:
        if class_name not in self.ontology.names:
            raise StoreError(f"unknown class {class_name!r}; the run's classes are {', '.join(self.ontology.names)}")

    def set_review(self, detection_id: int, review: str) -> None:
        if review not in REVIEWS:
            raise StoreError(f"review must be one of {', '.join(REVIEWS)}, got {review!r}")
        with self._transaction(durable=True) as conn:
            conn.execute("UPDATE detections SET review = ? WHERE id = ?", (review, detection_id))

    def update_detection(self, detection_id: int, *, class_name: str | None = None, xyxy=None,
                         rle: dict | None = None) -> None:
        """Change a label's class, box or mask. A changed label becomes a person's label: source
        ``human``, accepted, no score or prompt; a moved box takes ``rle`` as its mask (a COCO RLE of
        the image's size, e.g. from ``Labeler.masks_for_boxes``) or, without one, has none (the old
        mask no longer matches); the same box with a new ``rle`` (a refined mask) takes it too. The
        model's prediction it came from is kept (``model_predictions``). Setting the same class, box
        and mask only accepts the label."""
        if class_name is not None:
            self._check_class(class_name)
        with self._transaction(durable=True) as conn:
            row = conn.execute("SELECT class_name, prompt, score, x0, y0, x1, y1, rle, source, original, image_id "
                               "FROM detections WHERE id = ?", (detection_id,)).fetchone()
            if row is None:
                raise StoreError(f"no detection with id {detection_id}")
            old_box = tuple(map(float, row[3:7]))
            box = tuple(map(float, xyxy)) if xyxy is not None else old_box
            if not (box[2] > box[0] and box[3] > box[1]):
                raise StoreError(f"box {tuple(box)} is empty: need x1 > x0 and y1 > y0")
            if rle is not None:
                _check_image_rle(conn, row[10], rle)
                mask = json.dumps(rle)
            else:
                mask = row[7] if box == old_box else None
            new_class = class_name or row[0]
            # Masks compare as RLEs, not as text: a new mask for the same box (a refined one) is an
            # edit, the stored mask sent back in another key order is not.
            same_mask = (json.loads(mask) if mask else None) == (json.loads(row[7]) if row[7] else None)
            if (new_class, box) == (row[0], old_box) and same_mask:
                conn.execute("UPDATE detections SET review = 'accepted' WHERE id = ?", (detection_id,))
                return
            original = row[9]
            if original is None and row[8] == "model":
                original = json.dumps({"class_name": row[0], "prompt": row[1], "score": row[2], "xyxy": old_box,
                                       "rle": json.loads(row[7]) if row[7] else None})
            conn.execute("UPDATE detections SET class_name = ?, prompt = NULL, score = NULL, x0 = ?, y0 = ?, x1 = ?, "
                         "y1 = ?, rle = ?, source = 'human', review = 'accepted', original = ? WHERE id = ?",
                         (new_class, *box, mask, original, detection_id))

    def add_detection(self, image_id: int, class_name: str, xyxy, rle: dict | None = None) -> int:
        """Add a human-drawn label (accepted, no score), with ``rle`` as its mask (a COCO RLE of the
        image's size) if given; returns its id."""
        self._check_class(class_name)
        self.image(image_id)
        x0, y0, x1, y1 = map(float, xyxy)
        if not (x1 > x0 and y1 > y0):
            raise StoreError(f"box {xyxy} is empty: need x1 > x0 and y1 > y0")
        with self._transaction(durable=True) as conn:
            if rle:
                _check_image_rle(conn, image_id, rle)
            return conn.execute(_INSERT_LABELS, (image_id, class_name, None, None, x0, y0, x1, y1,
                                                 json.dumps(rle) if rle else None, "human", "accepted")).lastrowid

    def delete_detection(self, detection_id: int) -> None:
        with self._transaction(durable=True) as conn:
            conn.execute("DELETE FROM detections WHERE id = ?", (detection_id,))

    def set_image_reviewed(self, image_id: int, reviewed: bool = True) -> None:
        with self._transaction(durable=True) as conn:
            conn.execute("UPDATE images SET reviewed = ? WHERE id = ?", (int(reviewed), image_id))

    def accept_image(self, image_id: int) -> int:
        """Accept every pending label of the image and mark it reviewed, in one transaction; returns
        how many labels were accepted."""
        with self._transaction(durable=True) as conn:
            accepted = conn.execute("UPDATE detections SET review = 'accepted' WHERE image_id = ? AND review = 'pending'",
                                    (image_id,)).rowcount
            conn.execute("UPDATE images SET reviewed = 1 WHERE id = ?", (image_id,))
        return accepted

    def detection_row(self, detection_id: int) -> dict | None:
        """Every column of one label (None if there is none): an exact snapshot to put back later."""
        with self._use() as conn:
            row = conn.execute(f"SELECT {', '.join(_ROW_COLUMNS)} FROM detections WHERE id = ?",
                               (detection_id,)).fetchone()
        return None if row is None else dict(zip(_ROW_COLUMNS, row))

    def put_detection_row(self, row: dict) -> None:
        """Write a ``detection_row`` snapshot back as it was (same id), in one durable transaction."""
        if set(row) != set(_ROW_COLUMNS):
            raise StoreError(f"a label snapshot needs the columns {', '.join(_ROW_COLUMNS)}")
        self._check_class(row["class_name"])
        with self._transaction(durable=True) as conn:
            conn.execute(f"INSERT OR REPLACE INTO detections ({', '.join(_ROW_COLUMNS)}) "
                         f"VALUES ({', '.join('?' * len(_ROW_COLUMNS))})", [row[c] for c in _ROW_COLUMNS])

    def model_predictions(self, image_id: int) -> Detections:
        """What the model predicted for one image, whatever a person did with it since: model labels
        (rejected ones too) and, for labels a person changed, the prediction they came from; all
        pending, in store order. For evaluating the model against reviewed labels."""
        with self._use() as conn:
            rows = conn.execute(f"SELECT id, {_LABEL_COLUMNS}, original FROM detections WHERE image_id = ? AND "
                                "(source = 'model' OR original IS NOT NULL) ORDER BY id", (image_id,)).fetchall()
        predictions = []
        for label_id, *columns, original in rows:
            if original is not None:
                o = json.loads(original)
                columns = [o["class_name"], o["prompt"], o["score"], *o["xyxy"],
                           json.dumps(o["rle"]) if o["rle"] else None]
            predictions.append((label_id, *columns[:8], "model", "pending"))
        return from_rows(predictions, self.ontology)

    def close(self) -> None:
        with self._use() as conn:
            conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_image_rle(conn: sqlite3.Connection, image_id: int, rle) -> None:
    """Refuse a mask that is not a valid COCO RLE of the image's (oriented) size."""
    from autolabel.importers.segmentation import SegmentationError, check_rle

    height, width = conn.execute("SELECT height, width FROM images WHERE id = ?", (image_id,)).fetchone()
    if not isinstance(rle, dict):
        raise StoreError(f"a mask must be a COCO RLE dict, got {type(rle).__name__}")
    try:
        check_rle(rle, int(height), int(width))
    except SegmentationError as exc:
        raise StoreError(f"mask refused: {exc}") from None


def open_store(run_dir: str | Path, create: bool = True) -> Store:
    """Open (or create) the store of a run folder, for use by this thread (see the module docstring)."""
    run_dir = Path(run_dir)
    db_path = run_dir / DB_NAME
    if not db_path.exists():
        if not create:
            raise StoreError(f"{run_dir} is not a run folder (no {DB_NAME}); label into it first")
        run_dir.mkdir(parents=True, exist_ok=True)
    try:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so the write lock is taken up front.
        # check_same_thread=False only for the one writer thread, which Store._use enforces.
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=30.0, check_same_thread=False)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open the label store {db_path}: {exc}") from None
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(_SCHEMA)
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version is not None and int(version[0]) > SCHEMA_VERSION:
            raise StoreError(f"{db_path} was written by a newer autolabel (schema {version[0]})")
        if "original" not in {r[1] for r in conn.execute("PRAGMA table_info(detections)")}:
            conn.execute("ALTER TABLE detections ADD COLUMN original TEXT")  # a schema 1 store
        if version is None or int(version[0]) != SCHEMA_VERSION:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        return Store(run_dir, conn)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.DatabaseError):
            raise StoreError(f"cannot open the label store {db_path}: {exc}") from None
        raise
