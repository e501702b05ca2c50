#!/usr/bin/env python
"""Listing a large folder: what ``autolabel label`` holds before its model loop starts.

For each count, builds a tree of empty ``*.jpg`` files (``--per-folder`` to a folder, folders
nested in groups of 100; discovery never opens a file); for each ``--done`` share, marks that share
of them as labelled in a new run store (0: a new run, 0.5: a run resumed half way), then runs ``labeling.label_into_store`` with a labeler that has no model
and stops it when it reports its total: discovery, the resume check and the list of images to do,
nothing else. Each measurement runs in a fresh interpreter, twice: once under ``tracemalloc`` (the
Python heap held at that point and its peak) and once without (wall time, and the growth of the
resident set held at that point and at its peak, which tracemalloc would inflate; the peak is reset
after the imports, Linux only). The trees are deleted afterwards.

Example: python benchmarks/discovery.py --counts 200000,1000000 --done 0,0.5
Against another checkout: PYTHONPATH=/path/to/other/src python benchmarks/discovery.py ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Appended, so that a PYTHONPATH naming another checkout wins.
sys.path.append(str(Path(__file__).resolve().parents[1] / "src"))

_CONFIG = {"model": "none", "mode": "detect", "ontology": {"object": ["object"]}, "detect": {}}


class _Stop(Exception):
    """Raised from ``on_total``: the listing is done and the models would load next."""


class _NoModel:
    """Just enough of a ``Labeler`` for ``label_into_store`` to reach its total."""

    def run_config(self) -> dict:
        return dict(_CONFIG)


def build_tree(root: Path, count: int, per_folder: int) -> str:
    """``count`` empty JPEG names under ``root``; returns the resolved root as discovery reports it."""
    for start in range(0, count, per_folder):
        folder = root / f"g{start // (per_folder * 100):03d}" / f"d{start // per_folder:05d}"
        folder.mkdir(parents=True)
        for i in range(start, min(start + per_folder, count)):
            (folder / f"img_{i:08d}.jpg").touch()
    return os.path.realpath(root)


def mark_done(run_dir: Path, root: str, fraction: float) -> int:
    """Every k-th image (by path) stored as done, so the resume check has work; returns how many."""
    from autolabel.detections import Detections
    from autolabel.store import ImageResult, open_store

    paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names)
    step = round(1 / fraction) if fraction > 0 else 0
    chosen = paths[::step] if step else []
    with open_store(run_dir) as store:
        store.bind_config(_CONFIG)
        for start in range(0, len(chosen), 10_000):
            store.write_results([ImageResult(path=p, sha256="0" * 64, width=1, height=1,
                                             detections=Detections.empty()) for p in chosen[start:start + 10_000]])
    return len(chosen)


def _resident() -> tuple[int, int]:
    """(resident set now, its high-water mark) in bytes, from /proc/self/status."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def measure(root: str, run_dir: str, trace: bool) -> dict:
    """One listing in this interpreter: seconds, resident set growth held and at its peak, and
    (traced) the Python heap held and its peak."""
    import tracemalloc

    from autolabel.labeling import label_into_store
    from autolabel.store import open_store

    with open_store(run_dir) as store:
        store.bind_config(_CONFIG)  # the run's own rows and caches, before the baseline
        if trace:
            tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        try:
            Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts from here
        except OSError:
            pass  # not allowed here: the peak then counts from the imports' high
        rss_before = _resident()[0]
        out: dict = {}

        def stop(total: int) -> None:
            out["todo"] = total
            out["seconds"] = time.perf_counter() - started
            rss, hwm = _resident()
            out["rss_held"], out["rss_peak"] = rss - rss_before, hwm - rss_before
            if trace:
                held, peak = tracemalloc.get_traced_memory()
                out["held"], out["peak"] = held - base, peak - base
            raise _Stop

        started = time.perf_counter()
        try:
            label_into_store(_NoModel(), [root], store, keep_candidates=0, on_total=stop)
        except _Stop:
            pass
    return out


def _measure_in_child(root: str, run_dir: Path, trace: bool) -> dict:
    command = [sys.executable, __file__, "--measure", root, str(run_dir)] + (["--trace"] if trace else [])
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", default="200000,1000000", help="comma-separated image counts")
    parser.add_argument("--per-folder", type=int, default=1000)
    parser.add_argument("--done", default="0,0.5", help="comma-separated shares of the images already labelled")
    parser.add_argument("--measure", nargs=2, metavar=("ROOT", "RUN"), help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, trace=args.trace)))
        return

    mib = 1024 * 1024
    print(f"{'images':>9} {'done':>8} {'to do':>9} {'seconds':>8} {'held MiB':>9} {'B/image':>8} "
          f"{'heap peak MiB':>13} {'RSS held MiB':>12} {'RSS peak MiB':>12}")
    for count in (int(c) for c in args.counts.split(",")):
        with tempfile.TemporaryDirectory(prefix="autolabel-discovery-") as tmp:
            root = build_tree(Path(tmp) / "images", count, args.per_folder)
            for k, share in enumerate(float(d) for d in args.done.split(",")):
                run_dir = Path(tmp) / f"run{k}"
                done = mark_done(run_dir, root, share)
                traced = _measure_in_child(root, run_dir, trace=True)
                plain = _measure_in_child(root, run_dir, trace=False)
                print(f"{count:>9} {done:>8} {plain['todo']:>9} {plain['seconds']:>8.2f} "
                      f"{traced['held'] / mib:>9.1f} {traced['held'] / count:>8.0f} {traced['peak'] / mib:>13.1f} "
                      f"{plain['rss_held'] / mib:>12.1f} {plain['rss_peak'] / mib:>12.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
