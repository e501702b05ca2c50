"""The store of a video run: ``video.sqlite`` in the run folder, apart from the image runs' store.

Tables: ``frames`` (each labelled frame: position among the selected frames, source frame index,
timestamp, size), ``tracks`` (first-class rows: class, first/last position, score, review state) and
``labels`` (one row per track per frame: box, score, mask RLE). A chunk of frames is written in one
``BEGIN IMMEDIATE`` transaction together with the ``committed`` position, so after a kill the run
resumes at the first frame after the last committed chunk. The run's configuration is bound on
first use and a different one is refused, as for image runs.

Track edits (review, class, delete, split, merge) are each one durable (``synchronous=FULL``)
transaction, like the image store's review edits. An edited track is the person's: a resumed run
never extends, rescores or relabels it (the tracker does not follow it again; if the object is
still there, the next keyframe starts a new track), and the id of a deleted or merged-away track is
never given out again. Edit a run while no process is labelling it: a running tracker hands out
track ids of its own.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autolabel.detections import Detections
from autolabel.errors import StoreError
from autolabel.geometry import Size
from autolabel.store import transaction
from autolabel.video.track import FrameLabels, Track

DB_NAME = "video.sqlite"
TRACK_REVIEWS = ("pending", "accepted", "rejected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS frames (
    position INTEGER PRIMARY KEY, frame_index INTEGER NOT NULL, timestamp REAL NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, keyframe INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY, class_id INTEGER NOT NULL, prompt_id INTEGER NOT NULL DEFAULT -1,
    score REAL, first_position INTEGER NOT NULL, last_position INTEGER NOT NULL,
    review TEXT NOT NULL DEFAULT 'pending' CHECK (review IN ('pending', 'accepted', 'rejected')),
    edited INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS retired_tracks (id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY, position INTEGER NOT NULL REFERENCES frames(position),
    track_id INTEGER NOT NULL REFERENCES tracks(id), x0 REAL, y0 REAL, x1 REAL, y1 REAL,
    score REAL, mask TEXT, UNIQUE (position, track_id));
CREATE INDEX IF NOT EXISTS labels_by_track ON labels (track_id, position);
"""


@dataclass(frozen=True)
class StoredTrack:
    """A track as stored: ``edited`` once a person changed it; ``frames``: how many frames it labels."""

    track: Track
    review: str
    edited: bool
    frames: int

    @property
    def id(self) -> int:
        return self.track.id


@dataclass(frozen=True)
class StoredFrame:
    position: int
    index: int
    timestamp: float
    size: Size
    keyframe: bool


class VideoStore:
    """One video run's labels. Single writer: the thread that opened it."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self._conn = conn
        self.path = path

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "VideoStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- configuration and progress -------------------------------------------------------------------

    def bind_config(self, config: dict) -> None:
        """Record the run's configuration, or refuse one that differs from the recorded one."""
        stored = self._meta("config")
        wanted = json.loads(json.dumps(config, sort_keys=True))
        if stored is None:
            with self._transaction() as conn:
                conn.execute("INSERT INTO meta VALUES ('config', ?)", (json.dumps(wanted, sort_keys=True),))
        elif json.loads(stored) != wanted:
            raise StoreError(f"{self.path.parent} holds a video run with another configuration; "
                             "use a new run folder")

    @property
    def config(self) -> dict | None:
        stored = self._meta("config")
        return json.loads(stored) if stored is not None else None

    @property
    def committed(self) -> int:
        """The last position written (-1: nothing yet)."""
        return int(self._meta("committed") or -1)

    @property
    def finished(self) -> bool:
        return self._meta("finished") == "1"

    def mark_finished(self, stopped_early: str | None = None) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('finished', '1')")
            if stopped_early:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('stopped_early', ?)", (stopped_early,))

    # -- writing --------------------------------------------------------------------------------------

    def write_chunk(self, frames: list[FrameLabels], tracks: list[Track]) -> None:
        """One transaction: these frames' labels, the current state of ``tracks`` and the new
        committed position."""
        if not frames:
            return
        with self._transaction() as conn:
            frozen = self._frozen_ids(conn)
            tracks = [t for t in tracks if t.id not in frozen]
            conn.executemany(
                "INSERT OR REPLACE INTO frames VALUES (?, ?, ?, ?, ?, ?)",
                [(f.position, f.index, f.timestamp, f.size.width, f.size.height, int(f.keyframe)) for f in frames])
            conn.executemany(
                "INSERT INTO tracks (id, class_id, prompt_id, score, first_position, last_position) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "score = excluded.score, last_position = excluded.last_position",
                [(t.id, t.class_id, t.prompt_id, t.score, t.first, t.last) for t in tracks])
            rows = []
            for f in frames:
                d = f.detections
                for i, tid in enumerate(f.track_ids.tolist()):
                    if tid in frozen:
                        continue
                    mask = d.masks[i] if d.masks is not None else None
                    rows.append((f.position, tid, *map(float, d.xyxy[i]), _nan_to_none(d.scores[i]),
                                 json.dumps(mask) if mask is not None else None))
            conn.executemany("INSERT OR REPLACE INTO labels (position, track_id, x0, y0, x1, y1, score, mask) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('committed', ?)", (str(frames[-1].position),))

    # -- track edits (each one durable transaction) ---------------------------------------------------

    def set_track_review(self, track_id: int, review: str) -> None:
        if review not in TRACK_REVIEWS:
            raise StoreError(f"review must be one of {', '.join(TRACK_REVIEWS)}, got {review!r}")
        with self._edit(track_id) as conn:
            conn.execute("UPDATE tracks SET review = ?, edited = 1 WHERE id = ?", (review, track_id))

    def set_track_class(self, track_id: int, class_id: int) -> None:
        """Give the whole track another class (an index into the run's ontology)."""
        names = self._class_names()
        if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)) \
                or not 0 <= class_id < len(names):
            raise StoreError(f"class must be one of 0..{len(names) - 1} ({', '.join(names)}), got {class_id!r}")
        with self._edit(track_id) as conn:
            conn.execute("UPDATE tracks SET class_id = ?, edited = 1 WHERE id = ?", (int(class_id), track_id))

    def delete_track(self, track_id: int) -> None:
        """Remove the track and its labels on every frame; its id is never used again."""
        with self._edit(track_id) as conn:
            self._retire(conn, track_id)

    def split_track(self, track_id: int, position: int) -> int:
        """Cut the track before frame ``position``: its labels from there on go to a new track (same
        class and review), whose id is returned. Both parts must keep at least one label."""
        with self._edit(track_id) as conn:
            before, after = conn.execute(
                "SELECT SUM(position < ?), SUM(position >= ?) FROM labels WHERE track_id = ?",
                (position, position, track_id)).fetchone()
            if not before or not after:
                raise StoreError(f"track {track_id} cannot be split at frame position {position}: "
                                 "it has no labels on one side of it")
            new_id = self.next_track_id()
            conn.execute("INSERT INTO tracks (id, class_id, prompt_id, score, first_position, last_position, review, "
                         "edited) SELECT ?, class_id, prompt_id, score, 0, 0, review, 1 FROM tracks WHERE id = ?",
                         (new_id, track_id))
            conn.execute("UPDATE labels SET track_id = ? WHERE track_id = ? AND position >= ?",
                         (new_id, track_id, position))
            self._refresh_span(conn, track_id)
            self._refresh_span(conn, new_id)
        return new_id

    def merge_tracks(self, keep: int, absorb: int) -> None:
        """Move every label of track ``absorb`` into track ``keep`` (which keeps its class and review)
        and retire ``absorb``. Refused when both label a same frame: one track has one label a frame."""
        if keep == absorb:
            raise StoreError(f"track {keep} cannot be merged with itself")
        with self._edit(keep) as conn:
            self._require_track(conn, absorb)
            shared = conn.execute(
                "SELECT COUNT(*), MIN(a.position) FROM labels a JOIN labels b ON a.position = b.position "
                "WHERE a.track_id = ? AND b.track_id = ?", (keep, absorb)).fetchone()
            if shared[0]:
                raise StoreError(f"tracks {keep} and {absorb} overlap in time ({shared[0]} frames, from frame "
                                 f"position {shared[1]}): a frame would hold two labels of one track")
            conn.execute("UPDATE labels SET track_id = ? WHERE track_id = ?", (keep, absorb))
            self._retire(conn, absorb)
            self._refresh_span(conn, keep)

    # -- reading --------------------------------------------------------------------------------------

    def frames(self) -> list[StoredFrame]:
        rows = self._conn.execute("SELECT position, frame_index, timestamp, width, height, keyframe FROM frames "
                                  "ORDER BY position").fetchall()
        return [StoredFrame(p, i, t, Size(w, h), bool(k)) for p, i, t, w, h, k in rows]

    def tracks(self, *, include_rejected: bool = True) -> list[StoredTrack]:
        """Every track with its review state, whether a person edited it and its frame count, by id."""
        rows = self._conn.execute(
            "SELECT t.id, t.class_id, t.score, t.first_position, t.last_position, t.prompt_id, t.review, t.edited, "
            "(SELECT COUNT(*) FROM labels l WHERE l.track_id = t.id) FROM tracks t ORDER BY t.id").fetchall()
        out = [StoredTrack(Track(i, c, s if s is not None else float("nan"), f, la, p), r, bool(e), n)
               for i, c, s, f, la, p, r, e, n in rows]
        return [t for t in out if include_rejected or t.review != "rejected"]

    def labels(self, position: int, *, include_rejected: bool = False) -> tuple[Detections, np.ndarray]:
        """The labels of one frame (by track id) and their track ids; rejected tracks left out."""
        rows = self._conn.execute(
            "SELECT l.x0, l.y0, l.x1, l.y1, l.score, t.class_id, t.prompt_id, l.mask, l.track_id, l.id, t.review "
            "FROM labels l JOIN tracks t ON t.id = l.track_id WHERE l.position = ? "
            + ("" if include_rejected else "AND t.review != 'rejected' ") + "ORDER BY l.track_id", (position,),
        ).fetchall()
        if not rows:
            return Detections.empty(), np.zeros(0, np.int64)
        masks = [json.loads(r[7]) if r[7] is not None else None for r in rows]
        dets = Detections(
            np.array([r[:4] for r in rows], dtype=np.float64),
            np.array([r[4] if r[4] is not None else np.nan for r in rows], dtype=np.float64),
            np.array([r[5] for r in rows]), np.array([r[6] for r in rows]),
            masks if any(m is not None for m in masks) else None,
            ids=np.array([r[9] for r in rows]), reviews=np.array([r[10] for r in rows]),
        )
        return dets, np.array([r[8] for r in rows], dtype=np.int64)

    def next_track_id(self) -> int:
        """The next unused track id (never one of a deleted or merged-away track)."""
        return int(self._conn.execute("SELECT MAX(COALESCE((SELECT MAX(id) FROM tracks), 0), "
                                      "COALESCE((SELECT MAX(id) FROM retired_tracks), 0)) + 1").fetchone()[0])

    # -- internals ------------------------------------------------------------------------------------

    @contextmanager
    def _edit(self, track_id: int):
        """A durable transaction on an existing track."""
        with self._transaction(durable=True) as conn:
            self._require_track(conn, track_id)
            yield conn

    @staticmethod
    def _require_track(conn: sqlite3.Connection, track_id) -> None:
        if conn.execute("SELECT 1 FROM tracks WHERE id = ?", (int(track_id),)).fetchone() is None:
            raise StoreError(f"no track {track_id}")

    @staticmethod
    def _retire(conn: sqlite3.Connection, track_id: int) -> None:
        conn.execute("DELETE FROM labels WHERE track_id = ?", (track_id,))
        conn.execute("DELETE FROM tracks WHERE id = ?", (track_id,))
        conn.execute("INSERT OR IGNORE INTO retired_tracks VALUES (?)", (track_id,))

    @staticmethod
    def _refresh_span(conn: sqlite3.Connection, track_id: int) -> None:
        """First and last frame of a track from its labels; the track is now a person's."""
        conn.execute("UPDATE tracks SET edited = 1, first_position = (SELECT MIN(position) FROM labels WHERE "
                     "track_id = ?1), last_position = (SELECT MAX(position) FROM labels WHERE track_id = ?1) "
                     "WHERE id = ?1", (track_id,))

    @staticmethod
    def _frozen_ids(conn: sqlite3.Connection) -> set[int]:
        """Tracks a run must not write: edited by a person, or retired."""
        return {row[0] for row in conn.execute("SELECT id FROM tracks WHERE edited = 1 "
                                               "UNION SELECT id FROM retired_tracks")}

    def _class_names(self) -> list[str]:
        from autolabel.ontology import Ontology

        config = self.config
        if config is None:
            raise StoreError(f"{self.path.parent}: the video run has not started")
        return Ontology.from_data(config["ontology"]).names

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _transaction(self, durable: bool = False):
        return transaction(self._conn, durable)


def open_video_store(run_dir: str | Path) -> VideoStore:
    """Open (creating) the video store of ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / DB_NAME
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path}: not a usable video store ({exc})") from exc
    return VideoStore(conn, path)


def is_video_run(run_dir: str | Path) -> bool:
    return (Path(run_dir) / DB_NAME).is_file()


def _nan_to_none(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value
