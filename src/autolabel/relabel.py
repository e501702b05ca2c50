"""Re-prompt a finished run without the vision backbone: ``autolabel relabel``.

A run labelled with kept candidates (``autolabel.candidates``) holds, per image, the top-K patches
of the detector with what its class head needs. Re-scoring them against new prompts and thresholds
gives what a full re-run gives on those K boxes, at the cost of one matrix product per batch of images.

The new run folder gets the source run's images (same paths, hashes, sizes), the re-scored model
labels, and, unchanged, everything a person did: human labels, accepted and rejected model labels
and the reviewed flag of each image. A new prediction that overlaps a kept label of its class is
dropped (the person already decided about that object). Failed images stay failed; a done image
whose candidates file is missing is recorded as failed (its human labels are still copied).
The folder is resumable like a labelling run; human state is restored, and checked on every run,
in a final pass.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autolabel.candidates import (
    CandidateBuffer, Candidates, CandidatesMissing, candidates_layout, candidates_path, link_candidates,
)
from autolabel.detections import Detections
from autolabel.errors import ConfigError
from autolabel.geometry import Size, box_iou
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig, Labeler, StageTimes, _stage
from autolabel.store import ImageRecord, ImageResult, Store, open_store

# Images per read-ahead buffer, matrix product and store transaction: enough to amortise each, few
# enough that the first batch's reads (nothing overlaps them) and the buffers' first touch stay short.
BATCH_SIZE = 64
READ_WORKERS = 2  # threads reading candidates files ahead of scoring
_OVERLAP_IOU = 0.5  # a prediction this close to a kept label of its class is the same object


@dataclass
class RelabelSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    missing: list[str] = field(default_factory=list)  # done source images without a candidates file
    failed_in_source: int = 0  # images the source run could not label: carried over as failed
    per_class: Counter = field(default_factory=Counter)
    human_images: int = 0  # images whose human labels or reviewed flag were carried over
    seconds: float = 0.0  # everything after the model is loaded (prompts, files, scoring, writes)

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Kept:
    """What a person did to one source image: its reviewed flag and label snapshots
    (``Store.detection_row``, every column)."""

    reviewed: bool
    rows: list[dict]

    @property
    def boxes(self) -> np.ndarray:
        return np.array([[r["x0"], r["y0"], r["x1"], r["y1"]] for r in self.rows], dtype=np.float64).reshape(-1, 4)


def relabel_run(source_dir: str | Path, out_dir: str | Path, ontology: Ontology, config: DetectConfig, *,
                batch_size: int = BATCH_SIZE, on_total: Callable[[int], None] | None = None,
                on_progress: Callable[[int], None] | None = None, times: StageTimes | None = None,
                workers: int = READ_WORKERS, detector=None) -> RelabelSummary:
    """Re-score every image of the run ``source_dir`` with ``ontology`` and ``config`` into the new
    run folder ``out_dir`` (see the module docstring); resumes a folder made with the same options.
    ``times`` collects seconds per stage; ``workers`` threads read the candidates files ahead.
    ``detector``: the run's detector already loaded (a ``models.base.Detector`` named as the run
    records it, e.g. the UI's); by default a CPU fp32 copy is loaded."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    if out_dir.resolve() == source_dir.resolve():
        raise ConfigError("--out must be a new run folder, not the source run")
    with _stage(times, "source"), open_store(source_dir, create=False) as source:
        keep, source_config = _source_candidates(source)
        images = list(source.images(status=None))
        kept = _kept_state(source, images)
        _check_classes(kept, ontology)
    if detector is not None and detector.name != source_config["model"]:
        raise ConfigError(f"{source_dir} was labelled with {source_config['model']}, not {detector.name}: "
                          "relabel it with its own detector")
    # The run's detector for its text tower (the vision tower runs only for exemplars).
    labeler = (Labeler(ontology, detector=detector, config=config) if detector is not None
               else Labeler(ontology, model=source_config["model"], config=config, device="cpu", precision="fp32"))
    with _stage(times, "load_model"):
        if not getattr(labeler.detector, "ranks_candidates", False):
            raise ConfigError(f"{labeler.model} cannot re-score kept candidates (relabel supports OWLv2 runs)")
    started = time.perf_counter()
    summary = RelabelSummary()
    with open_store(out_dir) as out:
        out.bind_config(relabel_config(source_config, source_dir, ontology, config, keep))
        done_before = out.done_among([img.path for img in images])
        todo = [img for img in images if img.path not in done_before]
        summary.skipped = len(images) - len(todo)
        if on_total:
            on_total(len(todo))
        # The store commits each batch from its writer thread while the next one is scored.
        with _Reader(source_dir, out_dir, todo, batch_size, workers, times) as reader, _one_torch_thread(), \
                ThreadPoolExecutor(1, thread_name_prefix="store") as writer:
            committing = None
            for batch, candidates, errors in reader:
                scored = [img for img in batch if img.status == "done"]
                found = labeler.rescore(candidates, [Size(img.width, img.height) for img in scored], times)
                results = _results(batch, dict(zip((img.path for img in scored), zip(found, errors))), kept,
                                   ontology, summary)
                _committed(committing, on_progress)
                committing = writer.submit(_write, out, results, times)
            _committed(committing, on_progress)
        with _stage(times, "human"):
            summary.human_images = _restore_human_state(out, kept)
    summary.seconds = time.perf_counter() - started
    return summary


def _write(out: Store, results: list[ImageResult], times: StageTimes | None) -> int:
    with _stage(times, "store"):
        out.write_results(results)
    return len(results)


def _committed(write: Future | None, on_progress: Callable[[int], None] | None) -> None:
    """Wait for a batch's commit (raising its error) and report its images."""
    if write is not None:
        written = write.result()
        if on_progress:
            on_progress(written)


def _results(batch: list[ImageRecord], outcome: dict, kept: dict, ontology: Ontology,
             summary: RelabelSummary) -> list[ImageResult]:
    """What the store gets for a batch (``outcome``: per done image its detections and read error),
    counted into ``summary``."""
    names = ontology.names
    results = []
    for img in batch:
        error = img.error
        if img.status == "done":
            dets, missing = outcome[img.path]
            if missing is None:
                if img.path in kept:
                    dets = _without_overlaps(dets, kept[img.path], ontology)
                results.append(ImageResult(img.path, img.sha256, img.width, img.height, dets))
                summary.done += 1
                summary.per_class.update(names[int(i)] for i in dets.class_ids)
                continue
            summary.missing.append(img.path)
            error = f"{img.path}: no candidates to relabel ({missing}); label it again"
        else:
            summary.failed_in_source += 1
        summary.failed += 1
        results.append(ImageResult(img.path, img.sha256, img.width, img.height, error=error))
    return results


def relabel_config(source_config: dict, source_dir: Path, ontology: Ontology, config: DetectConfig, keep: int) -> dict:
    """The new run's configuration: a detect run of the source's detector with the new prompts and
    post-processing, its kept candidates (so it can be relabelled again) and where it came from (so
    ``autolabel label`` does not mix full re-runs into it)."""
    return {"model": source_config["model"], "sam_model": None, "mode": "detect", "ontology": ontology.to_dict(),
            "detect": config.to_dict(), "keep_candidates": keep, "relabelled_from": str(source_dir.resolve())}


def _source_candidates(source: Store) -> tuple[int, dict]:
    config = source.config
    if not config or config.get("mode") not in ("detect", "segment"):
        raise ConfigError(f"{source.run_dir} is not a labelling run: only runs made by `autolabel label` can be relabelled")
    keep = int(config.get("keep_candidates") or 0)
    if not keep:
        raise ConfigError(f"{source.run_dir} was labelled without kept candidates: label it again with "
                          "--keep-candidates K (an OWLv2 checkpoint) to relabel it")
    return keep, config


def _check_classes(kept: dict[str, _Kept], ontology: Ontology) -> None:
    """A relabel never erases a person's label, so the new classes must include theirs."""
    needed = {row["class_name"] for k in kept.values() for row in k.rows}
    missing = sorted(needed - set(ontology.names))
    if missing:
        raise ConfigError(f"the source run has reviewed or human labels of {', '.join(map(repr, missing))}: "
                          "keep these classes in --prompt/--ontology")


class _Reader:
    """The batches of ``images`` with their candidates, read ahead: while one batch is scored, a
    thread pool reads the next one's files (the reads release the GIL) into the other of two reused
    ``CandidateBuffer``s and links them into the new run (before its commit, as labelling does).

    Iterating yields ``(batch, candidates, errors)``: ``candidates`` stacks the batch's done images
    (views of a buffer, valid until the next batch); ``errors`` has per done image None, or why its
    file could not be read (then its slot is blank: it yields no detection)."""

    def __init__(self, source_dir: Path, out_dir: Path, images: list[ImageRecord], batch_size: int, workers: int,
                 times: StageTimes | None):
        self._source, self._out, self._times = source_dir, out_dir, times
        self._batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
        layout = _layout([img for img in images if img.status == "done"], source_dir) or (1, 1)
        self._buffers = [CandidateBuffer(batch_size, *layout) for _ in range(min(2, len(self._batches)))]
        self._workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="candidates")

    def __iter__(self) -> Iterator[tuple[list[ImageRecord], Candidates, list[str | None]]]:
        pending = self._start(0)
        for index, batch in enumerate(self._batches):
            current, pending = pending, self._start(index + 1)
            with _stage(self._times, "wait_files"):
                errors = [error for future in current for error in future.result()]
            yield batch, self._buffers[index % 2].candidates(len(errors)), errors

    def _start(self, index: int) -> list[Future]:
        """Submit the reads of batch ``index``: one task per worker, each a run of slots (a task
        per file would cost about as much as its read)."""
        done = [img for img in self._batches[index] if img.status == "done"] if index < len(self._batches) else []
        if not done:
            return []
        buffer = self._buffers[index % 2]
        step = -(-len(done) // self._workers)
        return [self._pool.submit(self._read, buffer, start, done[start:start + step])
                for start in range(0, len(done), step)]

    def _read(self, buffer: CandidateBuffer, first_slot: int, images: list[ImageRecord]) -> list[str | None]:
        errors = []
        with _stage(self._times, "files"):
            for slot, img in enumerate(images, first_slot):
                try:
                    buffer.read(slot, candidates_path(self._source, img.sha256))
                except CandidatesMissing as exc:
                    buffer.blank(slot)
                    errors.append(str(exc))
                    continue
                link_candidates(self._source, self._out, img.sha256)
                errors.append(None)
        return errors

    def __enter__(self) -> "_Reader":
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _one_torch_thread():
    """Score on one core while the readers use the other: two OpenMP threads that share a core
    with the readers (or other work) spin more than they compute."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _layout(done: list[ImageRecord], source_dir: Path) -> tuple[int, int] | None:
    """``(K, D)`` of the run's candidates files: the first readable one's (None when none is);
    a file of format 1 stops the relabel (``CandidatesFormatError``: the run must be labelled again)."""
    for img in done:
        try:
            return candidates_layout(candidates_path(source_dir, img.sha256))
        except CandidatesMissing:
            continue
    return None


def _kept_state(source: Store, images: list[ImageRecord]) -> dict[str, _Kept]:
    """Per source image path, what a person did: labels of source ``human`` or reviewed
    (accepted/rejected) model labels, and the reviewed flag."""
    kept = {}
    for img in images:
        labels = source.labels(img.id, include_rejected=True)
        touched = np.flatnonzero((labels.sources == "human") | (labels.reviews != "pending"))
        if len(touched) or img.reviewed:
            kept[img.path] = _Kept(img.reviewed, [source.detection_row(int(i)) for i in labels.ids[touched]])
    return kept


def _without_overlaps(dets: Detections, kept: _Kept, ontology: Ontology) -> Detections:
    """``dets`` minus predictions overlapping a kept label of the same class."""
    if not len(dets) or not kept.rows:
        return dets
    kept_classes = np.array([ontology.names.index(row["class_name"]) for row in kept.rows])
    same = dets.class_ids[:, None] == kept_classes[None, :]
    overlap = (box_iou(dets.xyxy, kept.boxes) >= _OVERLAP_IOU) & same
    return dets[~overlap.any(axis=1)]


def _restore_human_state(out: Store, kept: dict[str, _Kept]) -> int:
    """Copy each image's kept labels and reviewed flag into the new run where they are not there
    yet (a first run, or one stopped before this pass); returns how many images needed it."""
    restored = 0
    for img in list(out.images(status=None)):
        state = kept.get(img.path)
        if state is None:
            continue
        restored += 1
        if _has_human_state(out, img, state):
            continue
        labels = out.labels(img.id, include_rejected=True)
        for label_id in labels.ids[(labels.sources == "human") | (labels.reviews != "pending")]:
            out.delete_detection(int(label_id))  # a partial copy from a stopped run
        for row in state.rows:
            out.put_detection_row({**row, "id": None, "image_id": img.id})
        out.set_image_reviewed(img.id, state.reviewed)
    return restored


def _has_human_state(out: Store, img: ImageRecord, state: _Kept) -> bool:
    labels = out.labels(img.id, include_rejected=True)
    copied = int(((labels.sources == "human") | (labels.reviews != "pending")).sum())
    return img.reviewed == state.reviewed and copied == len(state.rows)
