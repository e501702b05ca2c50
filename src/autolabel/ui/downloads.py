"""Pruning of the export folders under the UI's work folder (``work_dir/exports/<run>-xxxx``).

Each export and each batch ZIP gets a folder there. Once Gradio has served a ZIP it keeps its own
copy in its cache, so old export folders are only disk use: before each new export or batch, all
but the newest few are removed. No Gradio import here.
"""

from __future__ import annotations

import shutil
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
