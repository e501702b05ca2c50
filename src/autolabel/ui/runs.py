"""Run folders under the runs root, as the UI sees them (the CLI's runs placed there included).

A run is a folder directly under the runs root holding ``autolabel.db``. Names come from the
client, so every name is checked to be a plain folder name before it touches the disk.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from autolabel.errors import StoreError
from autolabel.store import DB_NAME, Store, open_store
from autolabel.ui.security import safe_child, sanitize_run_name

UI_SIDECAR = "ui_batch.json"  # what the Batch tab needs to resume a run: its inputs


def list_runs(runs_dir: Path) -> list[str]:
    """Names of the runs under ``runs_dir`` (folders holding a label store), sorted."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted(p.name for p in runs_dir.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / DB_NAME).is_file())


def run_dir(runs_dir: Path, name: str | None) -> Path:
    """The folder of run ``name`` (which must be a plain, clean name) under ``runs_dir``."""
    if not name:
        raise StoreError("choose a run first")
    if sanitize_run_name(name) != name:
        raise StoreError(f"{name!r} is not a run name")
    return safe_child(Path(runs_dir).resolve(), name)


def open_run(runs_dir: Path, name: str | None) -> Store:
    """Open the store of an existing run (use as a context manager: ``with open_run(...) as store``).

    Each UI action opens its own connection (about a millisecond): no SQLite connection is shared
    between Gradio's worker threads, and the batch thread writes through its own. WAL lets readers
    and the one writer work at the same time.
    """
    return open_store(run_dir(runs_dir, name), create=False)


def run_summary(store: Store) -> str:
    """A Markdown summary of a run: mode, classes, images, labels per class, review progress."""
    config = store.config or {}
    counts = store.counts()
    images = list(store.images("done"))
    reviewed = sum(1 for r in images if r.reviewed)
    classes = ", ".join(f"{name}: {counts['per_class'].get(name, 0)}" for name in store.ontology.names) \
        if config else "–"
    return (f"**{store.run_dir.name}** · mode `{config.get('mode', '?')}` · {counts['done']} images"
            f" ({counts['failed']} failed) · {reviewed} reviewed · labels: {classes}")


def read_sidecar(path: Path) -> dict:
    try:
        return json.loads((Path(path) / UI_SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_sidecar(path: Path, data: dict) -> None:
    """Write ``ui_batch.json`` atomically (temp file + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.replace(tmp, path / UI_SIDECAR)
