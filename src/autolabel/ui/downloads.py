"""The export folders under the UI's work folder (``work_dir/exports/<run>-xxxx``), one per export
and batch ZIP. Gradio keeps its own copy of a served ZIP, so all but the newest few are removed."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

EXPORTS = "exports"
KEEP_EXPORTS = 3
MIN_EXPORT_AGE_S = 300.0


def prune_exports(work_dir: Path, keep: int = KEEP_EXPORTS, min_age_s: float = MIN_EXPORT_AGE_S,
                  now: float | None = None) -> list[Path]:
    """Remove the export folders beyond the ``keep`` newest that are older than ``min_age_s``
    seconds; returns the removed folders. Younger ones stay whatever their number: another browser
    session may still be writing or about to be served one."""
    root = Path(work_dir) / EXPORTS
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.is_symlink()),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    removed = []
    for folder in folders[keep:]:
        if now - folder.stat().st_mtime > min_age_s:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def export_dir(work_dir: Path, run: str) -> Path:
    """A fresh folder for one export of ``run`` (older ones pruned first)."""
    prune_exports(work_dir)
    base = Path(work_dir) / EXPORTS
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{run}-", dir=base))
