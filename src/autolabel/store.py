"""The label store: one SQLite database per run folder.

SQLite as a single-writer job store: WAL journal, one writer connection, ``BEGIN IMMEDIATE``, one
transaction per batch of images, idempotent writes keyed by image path. A run killed at any point
(Ctrl-C, ``kill -9``) keeps every committed image; re-running skips them. WAL does not work on
network filesystems (NFS, SMB): keep run folders on a local disk.

The run's configuration (models, prompts, thresholds, mode) is stored once; opening the folder with
a different configuration is refused, so one run never mixes labels from two set-ups.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autolabel.configs import config_diff
from autolabel.detections import Detections
from autolabel.errors import StoreError
from autolabel.ontology import Ontology

DB_NAME = "autolabel.db"
SCHEMA_VERSION = 1
REVIEW_STATES = ("pending", "accepted", "rejected")

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
    review TEXT NOT NULL DEFAULT 'pending' CHECK (review IN ('pending', 'accepted', 'rejected'))
);
CREATE INDEX IF NOT EXISTS detections_by_image ON detections(image_id);
"""


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
class DetectionRecord:
    """One stored label. ``xyxy`` in original oriented pixels; ``rle`` a COCO RLE dict or None."""

    id: int
    image_id: int
    class_name: str
    prompt: str | None
    score: float | None
    xyxy: tuple[float, float, float, float]
    rle: dict | None
    source: str
    review: str


@dataclass(frozen=True)
class ImageResult:
    """What the labelling loop hands the store for one image: success or failure."""

    path: str
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    detections: Detections | None = None
    error: str | None = None


class Store:
    def __init__(self, run_dir: Path, conn: sqlite3.Connection):
        self.run_dir = run_dir
        self._conn = conn
        # The UI calls in from several threads; one lock keeps each transaction whole.
        self._lock = threading.RLock()

    # -- configuration ------------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @property
    def config(self) -> dict | None:
        value = self._meta("config")
        return json.loads(value) if value else None

    @property
    def ontology(self) -> Ontology:
        config = self.config
        if not config:
            raise StoreError(f"{self.run_dir} has no configuration yet")
        return Ontology.from_data(config["ontology"])

    def bind_config(self, config: dict) -> None:
        """Record the run's configuration, or refuse if the folder holds a different one."""
        existing = self.config
        normalised = json.loads(json.dumps(config))
        if existing is None:
            with self._transaction():
                self._conn.execute("INSERT INTO meta VALUES ('config', ?)", (json.dumps(normalised, sort_keys=True),))
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('created_at', ?)", (str(time.time()),))
            return
        diffs = config_diff(existing, normalised)
        if diffs:
            raise StoreError(
                f"{self.run_dir} holds a run made with another configuration ({'; '.join(diffs)}); "
                "re-run with the same options to resume it, or choose a new --out folder"
            )

    # -- writes -------------------------------------------------------------------------------------

    def _transaction(self, immediate: bool = True):
        store = self

        class _Tx:
            def __enter__(self_inner):
                store._lock.acquire()
                try:
                    store._conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
                except BaseException:
                    store._lock.release()
                    raise

            def __exit__(self_inner, exc_type, exc, tb):
                try:
                    store._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
                finally:
                    store._lock.release()
                return False

        return _Tx()

    def _upsert_image(self, res: ImageResult, now: float, reviewed: bool | None = None) -> int:
        """Insert or update one image row (inside a transaction); ``reviewed=None`` keeps the flag."""
        status = "failed" if res.error else "done"
        self._conn.execute(
            """INSERT INTO images (path, sha256, width, height, status, error, reviewed, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(path) DO UPDATE SET sha256=excluded.sha256, width=excluded.width,
                 height=excluded.height, status=excluded.status, error=excluded.error,
                 reviewed=COALESCE(?, images.reviewed), updated_at=excluded.updated_at""",
            (res.path, res.sha256, res.width, res.height, status, res.error, int(bool(reviewed)), now,
             None if reviewed is None else int(reviewed)),
        )
        return self._conn.execute("SELECT id FROM images WHERE path = ?", (res.path,)).fetchone()[0]

    def write_results(self, results: list[ImageResult]) -> None:
        """Store a batch of results in one transaction. Re-writing an image replaces its model labels."""
        if not results:
            return
        names = self.ontology.names
        queries = self.ontology.queries
        now = time.time()
        with self._transaction():
            for res in results:
                image_id = self._upsert_image(res, now)
                self._conn.execute("DELETE FROM detections WHERE image_id = ? AND source = 'model'", (image_id,))
                if res.detections is not None and len(res.detections):
                    d = res.detections
                    rows = [
                        (image_id, names[int(d.class_ids[i])], queries[int(d.prompt_ids[i])], float(d.scores[i]),
                         *map(float, d.xyxy[i]), json.dumps(d.masks[i]) if d.masks is not None else None)
                        for i in range(len(d))
                    ]
                    self._conn.executemany(
                        """INSERT INTO detections (image_id, class_name, prompt, score, x0, y0, x1, y1, rle)
                           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                        rows,
                    )

    def write_human_labels(self, items: list[tuple[ImageResult, list[tuple[str, tuple, dict | None]]]]) -> None:
        """Store images with human labels (an imported dataset) in one transaction.

        Each item is ``(image, labels)``; a label is ``(class_name, xyxy, rle_or_None)`` in original
        oriented pixels. Labels are stored as ``source='human'``, ``review='accepted'``, no score, and
        the image is marked reviewed. Re-writing an image replaces its human labels (idempotent
        re-import); its model labels, if any, stay.
        """
        if not items:
            return
        names = set(self.ontology.names)
        now = time.time()
        with self._transaction():
            for res, labels in items:
                image_id = self._upsert_image(res, now, reviewed=not res.error)
                self._conn.execute("DELETE FROM detections WHERE image_id = ? AND source = 'human'", (image_id,))
                rows = []
                for class_name, xyxy, rle in labels:
                    if class_name not in names:
                        raise StoreError(f"unknown class {class_name!r}; the run's classes are {', '.join(sorted(names))}")
                    rows.append((image_id, class_name, *map(float, xyxy), json.dumps(rle) if rle else None))
                self._conn.executemany(
                    """INSERT INTO detections (image_id, class_name, prompt, score, x0, y0, x1, y1, rle, source, review)
                       VALUES (?, ?, NULL, NULL, ?, ?, ?, ?, ?, 'human', 'accepted')""",
                    rows,
                )

    # -- reads --------------------------------------------------------------------------------------

    def done_among(self, paths: list[str]) -> set[str]:
        """Which of ``paths`` are already labelled (resume skips them)."""
        done: set[str] = set()
        for start in range(0, len(paths), 500):
            chunk = paths[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT path FROM images WHERE status = 'done' AND path IN ({marks})", chunk
            ).fetchall()
            done.update(r[0] for r in rows)
        return done

    def images(self, status: str | None = "done") -> Iterator[ImageRecord]:
        """Images ordered by path (a stable order for exports); ``status=None`` for all."""
        sql = "SELECT id, path, sha256, width, height, status, error, reviewed FROM images"
        args: tuple = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (status,)
        for row in self._conn.execute(sql + " ORDER BY path", args):
            yield ImageRecord(*row[:7], bool(row[7]))

    def image(self, image_id: int) -> ImageRecord:
        row = self._conn.execute(
            "SELECT id, path, sha256, width, height, status, error, reviewed FROM images WHERE id = ?", (image_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no image with id {image_id} in {self.run_dir}")
        return ImageRecord(*row[:7], bool(row[7]))

    def detections(self, image_id: int, include_rejected: bool = False) -> list[DetectionRecord]:
        """Labels of one image, highest score first (human boxes, which have no score, last)."""
        sql = """SELECT id, image_id, class_name, prompt, score, x0, y0, x1, y1, rle, source, review
                 FROM detections WHERE image_id = ?"""
        if not include_rejected:
            sql += " AND review != 'rejected'"
        sql += " ORDER BY score IS NULL, score DESC, id"
        return [
            DetectionRecord(r[0], r[1], r[2], r[3], r[4], (r[5], r[6], r[7], r[8]),
                            json.loads(r[9]) if r[9] else None, r[10], r[11])
            for r in self._conn.execute(sql, (image_id,))
        ]

    def counts(self) -> dict:
        """Summary: images done/failed and labels per class (rejected ones excluded)."""
        status = dict(self._conn.execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())
        per_class = dict(self._conn.execute(
            "SELECT class_name, COUNT(*) FROM detections WHERE review != 'rejected' GROUP BY class_name"
        ).fetchall())
        return {"done": status.get("done", 0), "failed": status.get("failed", 0), "per_class": per_class}

    def failures(self) -> list[tuple[str, str]]:
        return self._conn.execute("SELECT path, error FROM images WHERE status = 'failed' ORDER BY path").fetchall()

    # -- human review -------------------------------------------------------------------------------
    # Review edits are durable at once (synchronous=FULL for these commits): no lost work on refresh.

    def _edit(self, sql: str, args: tuple) -> int:
        self._conn.execute("PRAGMA synchronous = FULL")
        try:
            with self._transaction():
                cur = self._conn.execute(sql, args)
            return cur.lastrowid if cur.rowcount else 0
        finally:
            self._conn.execute("PRAGMA synchronous = NORMAL")

    def set_review(self, detection_id: int, review: str) -> None:
        if review not in REVIEW_STATES:
            raise StoreError(f"review must be one of {', '.join(REVIEW_STATES)}, got {review!r}")
        self._edit("UPDATE detections SET review = ? WHERE id = ?", (review, detection_id))

    def update_detection(self, detection_id: int, *, class_name: str | None = None, xyxy=None) -> None:
        """Change a label's class or box; it becomes a human-reviewed (accepted) label."""
        if class_name is not None and class_name not in self.ontology.names:
            raise StoreError(f"unknown class {class_name!r}; the run's classes are {', '.join(self.ontology.names)}")
        row = self._conn.execute("SELECT class_name, x0, y0, x1, y1 FROM detections WHERE id = ?",
                                 (detection_id,)).fetchone()
        if row is None:
            raise StoreError(f"no detection with id {detection_id}")
        box = tuple(map(float, xyxy)) if xyxy is not None else row[1:]
        rle_sql = ", rle = NULL" if xyxy is not None else ""  # a moved box no longer matches its mask
        self._edit(f"UPDATE detections SET class_name = ?, x0 = ?, y0 = ?, x1 = ?, y1 = ?, review = 'accepted'{rle_sql}"
                   " WHERE id = ?", (class_name or row[0], *box, detection_id))

    def add_detection(self, image_id: int, class_name: str, xyxy, rle: dict | None = None) -> int:
        """Add a human-drawn label (accepted, no score)."""
        if class_name not in self.ontology.names:
            raise StoreError(f"unknown class {class_name!r}; the run's classes are {', '.join(self.ontology.names)}")
        self.image(image_id)
        x0, y0, x1, y1 = map(float, xyxy)
        if not (x1 > x0 and y1 > y0):
            raise StoreError(f"box {xyxy} is empty: need x1 > x0 and y1 > y0")
        return self._edit(
            """INSERT INTO detections (image_id, class_name, prompt, score, x0, y0, x1, y1, rle, source, review)
               VALUES (?, ?, NULL, NULL, ?, ?, ?, ?, ?, 'human', 'accepted')""",
            (image_id, class_name, x0, y0, x1, y1, json.dumps(rle) if rle else None),
        )

    def delete_detection(self, detection_id: int) -> None:
        self._edit("DELETE FROM detections WHERE id = ?", (detection_id,))

    def set_image_reviewed(self, image_id: int, reviewed: bool = True) -> None:
        self._edit("UPDATE images SET reviewed = ? WHERE id = ?", (int(reviewed), image_id))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_store(run_dir: str | Path, create: bool = True) -> Store:
    """Open (or create) the store of a run folder."""
    run_dir = Path(run_dir)
    db_path = run_dir / DB_NAME
    if not db_path.exists():
        if not create:
            raise StoreError(f"{run_dir} is not a run folder (no {DB_NAME}); label into it first")
        run_dir.mkdir(parents=True, exist_ok=True)
    try:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so the write lock is taken up front.
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=30.0, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(_SCHEMA)
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version is None:
            conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(version[0]) > SCHEMA_VERSION:
            raise StoreError(f"{db_path} was written by a newer autolabel (schema {version[0]})")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open the label store {db_path}: {exc}") from None
    return Store(run_dir, conn)
