"""The driver of a Ray run: the same resumable run as ``labeling.label_into_store``, with decoding
and the models spread over a cluster.

The driver lists the images and drops those the store already holds; Ray Data then streams them
through decode tasks (``Labeler.prepare``) and a pool of model actors (``Labeler.launch`` +
``finish``, models loaded once per actor). The driver pulls the finished label records with
``iter_batches`` (streaming, with backpressure: neither the driver nor the object store holds the
dataset) and is the only writer of the SQLite store, one transaction per batch. A killed actor is
restarted by Ray Data and its batch retried (the actor pool's default ``max_restarts=-1``,
``max_task_retries=-1``); a killed driver resumes on re-run, since every committed batch is skipped.
"""

from __future__ import annotations

import pickle
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from autolabel.distributed import workers
from autolabel.distributed.cluster import import_ray, ray_cluster
from autolabel.distributed.exemplars import read_exemplar_images
from autolabel.distributed.sources import list_images
from autolabel.errors import ConfigError
from autolabel.failures import FailureWatch
from autolabel.images import DEFAULT_MAX_PIXELS
from autolabel.labeling import RunSummary, remove_done
from autolabel.pipeline import DEFAULT_BATCH_SIZE, Labeler
from autolabel.store import ImageResult, Store


@dataclass(frozen=True)
class RayOptions:
    """address: ``local`` (a private cluster on this machine), ``auto`` or ``ray://host:port``.
    actors: model actors in the pool. gpus_per_actor: None takes 1 when the cluster has GPUs, else
    0. cpus_per_actor: CPUs each actor reserves (leave some for the decode tasks, one CPU each).
    batch_size: images per model call. local_cpus: CPUs of a local cluster (None: all)."""

    address: str = "local"
    actors: int = 1
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    batch_size: int = DEFAULT_BATCH_SIZE
    max_pixels: int = DEFAULT_MAX_PIXELS
    local_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ConfigError(f"--actors must be at least 1, got {self.actors}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.cpus_per_actor <= 0:
            raise ConfigError(f"--cpus-per-actor must be positive, got {self.cpus_per_actor}")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            raise ConfigError(f"--gpus-per-actor must not be negative, got {self.gpus_per_actor}")


@dataclass
class RaySummary(RunSummary):
    """``RunSummary`` plus the images each actor (``host:pid``) finished, and the driver's own time
    (unpickling, store writes, counting): what bounds a cluster's throughput at the top end."""

    per_actor: Counter = field(default_factory=Counter)
    driver_seconds: float = 0.0


def label_on_ray(
    labeler: Labeler,
    inputs: Iterable[str | Path],
    store: Store,
    options: RayOptions = RayOptions(),
    *,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int, str], None] | None = None,
) -> RaySummary:
    """Label every image under ``inputs`` (local paths or URIs) that the store does not hold yet.

    ``labeler`` must not have loaded its models (it is shipped to the workers, which load them).
    ``on_total(n)``: once, the number of images to process. ``on_progress(k, actor)``: after each
    committed batch, with its size and the actor that labelled it.
    """
    import_ray()  # fail with the install hint before any work
    started = time.perf_counter()
    if (store.config or {}).get("keep_candidates"):
        raise ConfigError(f"{store.run_dir} keeps detector candidates (--keep-candidates), which the Ray engine "
                          "does not save: continue it with --engine local")
    store.bind_config(labeler.run_config())
    exemplar_images = read_exemplar_images(labeler.ontology)  # the workers need no access to them
    paths = list_images(inputs)
    summary = RaySummary(skipped=remove_done(store, paths))
    todo = paths
    if on_total:
        on_total(len(todo))
    watch = FailureWatch.for_batch_size(options.batch_size)
    if todo:
        # closing: a run stopped part way (FailureWatch, Ctrl-C) also stops the pipeline on a shared cluster
        with ray_cluster(options.address, options.local_cpus), \
                closing(_labelled_batches(labeler, todo, options, exemplar_images)) as batches:
            for batch in batches:
                ingest_started = time.perf_counter()
                results = [pickle.loads(r) for r in batch["result"]]
                actors = [str(a) for a in batch["actor"]]
                store.write_results(results)
                _record(summary, results, actors, labeler.ontology.names)
                summary.driver_seconds += time.perf_counter() - ingest_started
                if on_progress:
                    for actor, count in Counter(actors).items():
                        on_progress(count, actor)
                watch.check(results)
    summary.seconds = time.perf_counter() - started
    return summary


def _labelled_batches(labeler: Labeler, todo: list[str], options: RayOptions,
                      exemplar_images: dict[str, bytes]) -> Iterator[dict]:
    """Batches ``{"result": [pickled ImageResult], "actor": [host:pid]}`` as the actors finish them."""
    ray = import_ray()
    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().enable_progress_bars = False  # the driver shows its own
    gpus = options.gpus_per_actor
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    fused = not gpus and options.cpus_per_actor == 1  # Ray Data then decodes inside the actors
    spare = ray.cluster_resources().get("CPU", 0) - options.actors * options.cpus_per_actor
    if not fused and spare < 1:
        raise ConfigError(f"{options.actors} actors x {options.cpus_per_actor:g} CPUs leave {max(spare, 0):g} of the "
                          "cluster's CPUs to the decode tasks, which need 1: lower --actors or --cpus-per-actor")
    device = labeler.device if labeler.device != "auto" else ("cuda" if gpus else "cpu")
    actor_labeler = workers.on_device(labeler, device)
    model_inputs = ray.get(ray.remote(num_cpus=1)(workers.load_model_inputs).remote(actor_labeler))
    decoder = workers.decoding_labeler(labeler, model_inputs, device)

    ds = ray.data.from_items([{"path": p} for p in todo])
    ds = ds.map_batches(workers.decode_batch, fn_kwargs={"decoder": decoder, "max_pixels": options.max_pixels},
                        batch_size=options.batch_size, num_cpus=1)
    ds = ds.map_batches(workers.LabelingActor, fn_constructor_args=(actor_labeler, exemplar_images),
                        batch_size=options.batch_size, compute=ActorPoolStrategy(size=options.actors),
                        num_cpus=options.cpus_per_actor, num_gpus=gpus)
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def _record(summary: RaySummary, results: list[ImageResult], actors: list[str], names: list[str]) -> None:
    for res, actor in zip(results, actors):
        summary.per_actor[actor] += 1
        if res.error:
            summary.failed += 1
            summary.failures.append((res.path, res.error))
        else:
            summary.done += 1
            summary.per_class.update(names[int(c)] for c in res.detections.class_ids)
