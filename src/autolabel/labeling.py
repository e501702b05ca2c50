"""The resumable labelling loop: files -> store, streamed so the model is the only thing that waits.

Three kinds of thread work side by side, joined by bounded queues (memory stays flat however many
images there are):

- decode workers (``Labeler.prepare``): read, hash, EXIF-orient, draft-decode and, on the CPU, make
  the model inputs; each runs torch on one core, leaving the model its intra-op threads.
- the model loop (this thread): ``Labeler.launch`` queues batch i+1 on the device before
  ``Labeler.finish`` collects batch i, so post-processing overlaps the next forward pass.
- a writer thread commits each batch in one transaction once its SAM2 masks (encoded in a small
  pool) are ready. Images already in the store are skipped, so a killed run resumes where it stopped.

With ``keep_candidates`` the writer also saves each image's top-K detector candidates
(``autolabel.candidates``) before the store commits the image, so every done image has its file and
``autolabel relabel`` can re-prompt the run without the backbone.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from autolabel.errors import ConfigError, ImageLoadError
from autolabel.failures import FailureWatch, Unexpected
from autolabel.images import DEFAULT_MAX_PIXELS, discover_image_paths
from autolabel.pipeline import DEFAULT_BATCH_SIZE, Labeler, PreparedImage, StageTimes, _stage
from autolabel.store import ImageResult, Store

log = logging.getLogger(__name__)

# Paths asked about per call when resuming (bounds the set the store answers with).
_RESUME_QUERY = 10_000


@dataclass
class RunSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    per_class: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    refused: list[str] = field(default_factory=list)  # listed images outside ``within`` (left out)

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


def _prepare(labeler: Labeler, path: str, max_pixels: int, times: StageTimes | None) -> PreparedImage | ImageResult:
    try:
        return labeler.prepare(path, max_pixels, times)
    except ImageLoadError as exc:
        return ImageResult(path=str(path), error=str(exc))
    except Exception as exc:  # a decoder bug on one odd file must not end a 10k-image run
        return Unexpected.of(path, exc)


def default_workers(device: str) -> int:
    """Decode workers: one on the CPU (the model needs the cores; decoding a draft is ~50 ms against
    seconds of forward pass), up to 8 beside a GPU."""
    cores = os.cpu_count() or 1
    return 1 if device == "cpu" else max(1, min(8, cores - 1))


def label_into_store(
    labeler: Labeler,
    inputs: Iterable[str | Path],
    store: Store,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    workers: int | None = None,
    times: StageTimes | None = None,
    keep_candidates: int | None = None,
    within: Sequence[str | Path] | None = None,
) -> RunSummary:
    """Label every image under ``inputs`` that the store does not hold yet.

    ``on_total(n)`` is called once with the number of images to process; ``on_progress(k)`` after
    each committed batch with the number of images it finished (done or failed), from this thread.
    ``workers``: decode threads (default ``default_workers``). ``times``: collects per-stage time.
    ``keep_candidates``: K candidates kept per image (see ``resolve_keep_candidates``; 0 keeps none).
    ``within``: folders the images must really lie in (links resolved); those listed elsewhere are
    left out and reported in ``RunSummary.refused``; ConfigError when that leaves none of them.
    """
    started = time.perf_counter()
    keep = resolve_keep_candidates(labeler, store, keep_candidates)
    store.bind_config(run_config(labeler, keep))
    todo = discover_image_paths(inputs)
    refused = remove_outside(todo, within) if within is not None else []
    if refused:
        log.warning("left out %d images that link outside %s", len(refused), ", ".join(map(str, within)))
        if not todo:
            raise ConfigError(f"every image links outside the allowed folders ({len(refused)} left out)")
    summary = RunSummary(skipped=remove_done(store, todo), refused=refused)
    if on_total:
        on_total(len(todo))
    names = labeler.ontology.names

    watch = FailureWatch.for_batch_size(batch_size)

    def record(results: list[ImageResult]) -> None:
        for res in results:
            if res.error:
                summary.failed += 1
                summary.failures.append((res.path, res.error))
                log.warning("skipped %s", res.error)
            else:
                summary.done += 1
                summary.per_class.update(names[int(c)] for c in res.detections.class_ids)
        if on_progress:
            on_progress(len(results))
        watch.check(results)

    if todo:
        device = labeler.model_device  # loads the models before any thread starts
        n_workers = workers or default_workers(device)
        pad_to = batch_size if labeler.compile else None
        segment = labeler.mode == "segment"
        with _thread_pool(n_workers, "decode") as decode_pool, \
                _thread_pool(n_workers if segment else 0, "masks") as mask_pool, \
                _Writer(store, times) as writer:
            prepared = _prefetch(lambda p: _prepare(labeler, p, max_pixels, times), todo, decode_pool,
                                 depth=2 * batch_size + n_workers, times=times)
            inflight = None
            for batch in iter(lambda: list(islice(prepared, batch_size)), []):
                good = [item for item in batch if isinstance(item, PreparedImage)]
                launched = labeler.launch(good, times, pad_to=pad_to)
                with _stage(times, "heads"):
                    kept = labeler.candidates(launched, keep) if keep else None
                if inflight is not None:
                    writer.submit(inflight[0], labeler.finish(inflight[1], times, mask_pool), inflight[2])
                inflight = (batch, launched, kept)
                for results in writer.completed():
                    record(results)
            if inflight is not None:
                writer.submit(inflight[0], labeler.finish(inflight[1], times, mask_pool), inflight[2])
            for results in writer.completed(wait=True):
                record(results)
    summary.seconds = time.perf_counter() - started
    return summary


def remove_outside(paths: list[str], roots: Iterable[str | Path]) -> list[str]:
    """Remove from ``paths`` (resolved, as ``discover_image_paths`` lists them), in place, those not
    inside one of ``roots``; return them. String prefixes of the resolved roots: no system call per path."""
    prefixes = tuple(os.path.realpath(root).rstrip(os.sep) + os.sep for root in roots)
    kept, refused = 0, []
    for path in paths:
        if path.startswith(prefixes):
            paths[kept] = path
            kept += 1
        else:
            refused.append(path)
    del paths[kept:]
    return refused


def remove_done(store: Store, paths: list[str]) -> int:
    """Remove from ``paths``, in place, those ``store`` holds as done; return how many went.

    The store is asked in parts, so neither a second list of millions of paths nor a set of all
    that a resumed run has done is ever held."""
    kept = 0
    for start in range(0, len(paths), _RESUME_QUERY):
        part = paths[start:start + _RESUME_QUERY]  # a copy: the loop below overwrites these slots
        done = store.done_among(part)
        for path in part:
            if path not in done:
                paths[kept] = path
                kept += 1
    removed = len(paths) - kept
    del paths[kept:]
    return removed


def resolve_keep_candidates(labeler: Labeler, store: Store, asked: int | None) -> int:
    """How many candidates to keep per image: ``asked`` when given (0: none); otherwise what the run
    folder recorded (none for runs made before the option) or, for a new run, ``DEFAULT_KEEP`` when
    the detector can rank candidates (OWLv2) and none for other families."""
    from autolabel.candidates import DEFAULT_KEEP

    if asked is not None:
        if isinstance(asked, bool) or asked < 0:
            raise ConfigError(f"--keep-candidates must be 0 (off) or a positive number, got {asked}")
        if asked and not getattr(labeler.detector, "ranks_candidates", False):
            raise ConfigError(f"--keep-candidates needs an OWLv2 detector ({labeler.model} cannot rank candidates); "
                              "use --keep-candidates 0")
        return int(asked)
    if store.config is not None:
        return int(store.config.get("keep_candidates") or 0)
    return DEFAULT_KEEP if getattr(labeler.detector, "ranks_candidates", False) else 0


def run_config(labeler: Labeler, keep_candidates: int) -> dict:
    """The labeler's run configuration plus ``keep_candidates`` when candidates are kept (left out
    when off, so runs made before the option resume unchanged)."""
    config = labeler.run_config()
    if keep_candidates:
        config["keep_candidates"] = int(keep_candidates)
    return config


@contextmanager
def _thread_pool(workers: int, name: str) -> Iterator[ThreadPoolExecutor | None]:
    """A ``ThreadPoolExecutor`` whose threads all exist, each running torch on one core, on entry;
    None for 0 workers. Shut down (pending work cancelled, running work finished) on exit."""
    if workers < 1:
        yield None
        return
    import torch

    saved = torch.get_num_threads()
    pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
    try:
        ready = threading.Barrier(workers + 1)
        try:
            for _ in range(workers):  # one blocking task per worker starts every thread now
                pool.submit(_one_torch_thread, ready)
            ready.wait()
        finally:
            # torch keeps the thread count per thread, but a worker's set also changes the default
            # that threads started later begin with: put that back (the model's thread keeps its own).
            torch.set_num_threads(saved)
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _one_torch_thread(ready: threading.Barrier) -> None:
    import torch

    # get first: torch initialises a thread's count from the process default on its first use,
    # which would undo a set made before it.
    torch.get_num_threads()
    torch.set_num_threads(1)
    ready.wait()


def _prefetch(fn: Callable, items: Iterable, pool: ThreadPoolExecutor, depth: int,
              times: StageTimes | None = None) -> Iterator:
    """``fn`` over ``items`` in ``pool``, yielded in input order, at most ``depth`` results ahead of
    the consumer (bounded memory)."""
    rest = iter(items)
    pending = deque(pool.submit(fn, item) for item in islice(rest, depth))
    while pending:
        with _stage(times, "wait_input"):
            result = pending.popleft().result()
        pending.extend(pool.submit(fn, item) for item in islice(rest, 1))
        yield result


class _Writer:
    """Commits batches in order from one background thread; the model loop never waits for SQLite
    or for mask encoding (results may be futures from the mask pool). At most ``max_pending``
    batches wait, which bounds memory if the disk is slower than the model."""

    def __init__(self, store: Store, times: StageTimes | None, max_pending: int = 2):
        self._store = store
        self._times = times
        self._max_pending = max_pending
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="store")
        self._pending: deque[Future] = deque()

    def submit(self, batch: list, detections: list, candidates: list | None = None) -> None:
        self._pending.append(self._pool.submit(self._write, batch, detections, candidates))

    def _write(self, batch: list, detections: list, candidates: list | None) -> list[ImageResult]:
        by_path = {}
        good = [item for item in batch if isinstance(item, PreparedImage)]
        if candidates is not None:
            from autolabel.candidates import save_candidates

            with _stage(self._times, "store"):
                for item, kept in zip(good, candidates):  # before the commit: a done image has its file
                    save_candidates(self._store.run_dir, item.sha256, kept)
        for item, dets in zip(good, detections):
            if isinstance(dets, Future):
                dets = dets.result()
            by_path[item.path] = ImageResult(item.path, item.sha256, item.size.width, item.size.height, dets)
        results = [item if isinstance(item, ImageResult) else by_path[item.path] for item in batch]
        with _stage(self._times, "store"):
            self._store.write_results(results)
        return results

    def completed(self, wait: bool = False) -> Iterator[list[ImageResult]]:
        """Results of committed batches, oldest first; waits for all when ``wait``, otherwise only
        while more than ``max_pending`` are queued."""
        while self._pending and (wait or self._pending[0].done() or len(self._pending) > self._max_pending):
            yield self._pending.popleft().result()

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        # On an error (or Ctrl-C) in the model loop, still commit the batches already finished.
        try:
            for future in self._pending:
                try:
                    future.result()
                except Exception:
                    if exc_type is None:
                        raise
                    log.debug("write failed while stopping", exc_info=True)
        finally:
            self._pool.shutdown(wait=True)
        return False
