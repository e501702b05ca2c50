"""The resumable labelling loop: files -> store, one batch at a time.

Images are streamed: a small thread pool decodes the next batch while the model works on the current
one (bounded look-ahead, so memory does not grow with the number of images). Each batch is committed
in one transaction when done; images already in the store are skipped, so a killed run resumes
where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from autolabel.errors import ImageLoadError
from autolabel.images import LoadedImage, discover_images, load_image
from autolabel.pipeline import Labeler
from autolabel.store import ImageResult, Store

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    per_class: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


def _load(path: Path, max_pixels: int) -> LoadedImage | ImageResult:
    try:
        return load_image(path, max_pixels=max_pixels)
    except ImageLoadError as exc:
        return ImageResult(path=str(path), error=str(exc))
    except Exception as exc:  # a decoder bug on one odd file must not end a 10k-image run
        log.debug("unexpected error decoding %s", path, exc_info=True)
        return ImageResult(path=str(path), error=f"{path}: unexpected {type(exc).__name__}: {exc}")


def _batches(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def label_into_store(
    labeler: Labeler,
    inputs: Iterable[str | Path],
    store: Store,
    *,
    batch_size: int = 4,
    max_pixels: int = 178_956_970,
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> RunSummary:
    """Label every image under ``inputs`` that the store does not hold yet.

    ``on_total(n)`` is called once with the number of images to process; ``on_progress(k)`` after
    each batch with the number of images it finished (done or failed).
    """
    started = time.perf_counter()
    store.bind_config(labeler.run_config())
    paths = discover_images(inputs)
    done_before = store.done_among([str(p) for p in paths])
    todo = [p for p in paths if str(p) not in done_before]
    summary = RunSummary(skipped=len(paths) - len(todo))
    if on_total:
        on_total(len(todo))
    names = labeler.ontology.names

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode") as pool:
        batches = list(_batches(todo, batch_size))
        # Keep at most one decoded batch waiting: flat memory however many images there are.
        pending = [pool.submit(_load, p, max_pixels) for p in batches[0]] if batches else []
        for index in range(len(batches)):
            loaded = [f.result() for f in pending]
            pending = ([pool.submit(_load, p, max_pixels) for p in batches[index + 1]]
                       if index + 1 < len(batches) else [])
            results = _label_loaded(labeler, loaded)
            store.write_results(results)
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
    summary.seconds = time.perf_counter() - started
    return summary


def _label_loaded(labeler: Labeler, loaded: list) -> list[ImageResult]:
    good = [item for item in loaded if isinstance(item, LoadedImage)]
    dets = labeler.label_images([g.image for g in good], [(g.width, g.height) for g in good]) if good else []
    by_path = {str(g.path): (g, d) for g, d in zip(good, dets)}
    results = []
    for item in loaded:
        if isinstance(item, ImageResult):
            results.append(item)
            continue
        g, d = by_path[str(item.path)]
        results.append(ImageResult(str(g.path), g.sha256, g.width, g.height, d))
    return results
