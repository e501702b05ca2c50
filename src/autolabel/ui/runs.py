"""Run folders under the runs root: folders holding ``autolabel.db`` (CLI runs placed there included).
Names come from the client: each is checked to be a plain folder name before it touches the disk."""

from __future__ import annotations

import html
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
    """The store of an existing run, for one UI action (``with open_run(...) as store``): a connection
    per action (about a millisecond), never shared between Gradio's threads; WAL lets them read while
    the batch thread writes."""
    return open_store(run_dir(runs_dir, name), create=False)


def run_summary(store: Store) -> str:
    """A Markdown summary of a run: mode, classes, images, labels per class, review progress. Names
    come from users (run folders, class names): escaped, so they show as text."""
    config = store.config or {}
    counts = store.counts()
    images = list(store.images("done"))
    reviewed = sum(1 for r in images if r.reviewed)
    classes = ", ".join(f"{_text(name)}: {counts['per_class'].get(name, 0)}" for name in store.ontology.names) \
        if config else "–"
    return (f"**{_text(store.run_dir.name)}** · mode `{config.get('mode', '?')}` · {counts['done']} images"
            f" ({counts['failed']} failed) · {reviewed} reviewed · labels: {classes}")


def _text(name: str) -> str:
    """``name`` for Markdown: HTML escaped and Markdown's emphasis/link characters backslashed."""
    return "".join("\\" + ch if ch in "\\`*_[]()#!|~" else ch for ch in html.escape(name))


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
