#!/usr/bin/env python
"""Throughput of ``--engine ray`` on one machine, and the driver's own cost per image.

- images/s of the single-process engine (``labeling.label_into_store``) and of ``label_on_ray``
  with 1 and 2 CPU actors on a local cluster, same checkpoint and images (tiny random checkpoints
  by default: the figures show the engine's overhead, not model speed);
- the driver's ingest rate: a model-free stand-in actor returns ready-made label records (boxes,
  scores, RLE masks) and the driver unpickles, counts and writes them to SQLite. It must stay at
  or above 2,000 records/s so that the driver never limits a cluster.

Short runs only; figures are printed. Examples:
  python benchmarks/ray_throughput.py                      # 24 images, tiny checkpoints
  python benchmarks/ray_throughput.py --images 48 --ingest 4000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _photos(folder: Path, count: int, side: int = 64) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (side, side + 16, 3), dtype=np.uint8)).save(folder / f"{i:05d}.jpg")
    return folder


class StandInActor:
    """Replaces the model actor: per image a record with 10 boxes and 10 small RLE masks."""

    def __init__(self, labeler):
        from autolabel.detections import Detections
        from autolabel.geometry import mask_to_rle

        mask = np.zeros((64, 80), dtype=bool)
        mask[10:30, 20:50] = True
        rles = [mask_to_rle(mask)] * 10
        self.detections = Detections(np.tile([20.0, 10.0, 50.0, 30.0], (10, 1)), np.linspace(0.2, 0.9, 10),
                                     np.arange(10) % 2, np.zeros(10, dtype=int), rles)
        self.name = f"stand-in:{os.getpid()}"
        self.count = 0

    def __call__(self, batch: dict) -> dict:
        import pickle

        from autolabel.store import ImageResult

        records = []
        for _ in batch["item"]:
            self.count += 1
            path = f"/stand-in/{self.name}-{self.count}.jpg"
            records.append(pickle.dumps(ImageResult(path, "0" * 64, 80, 64, self.detections), protocol=5))
        return {"result": np.array(records, dtype=object), "actor": np.array([self.name] * len(records), dtype=object)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24, help="images per throughput run")
    parser.add_argument("--ingest", type=int, default=2000, help="records for the driver measurement")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    import ray

    from autolabel.distributed import RayOptions, label_on_ray, workers
    from autolabel.labeling import label_into_store
    from autolabel.ontology import Ontology
    from autolabel.pipeline import DetectConfig, Labeler
    from autolabel.store import open_store
    from autolabel.testing.owlv2_checkpoint import build_owlv2_checkpoint

    root = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    owlv2 = build_owlv2_checkpoint(root / "owlv2")
    photos = _photos(root / "photos", args.images)

    def labeler() -> Labeler:
        return Labeler(Ontology.from_prompts(["car", "person"]), model=str(owlv2),
                       config=DetectConfig(threshold=0.0), device="cpu")

    rows = []
    with open_store(root / "single") as store:
        summary = label_into_store(labeler(), [photos], store, batch_size=args.batch_size)
    rows.append(("single process", summary.done, summary.seconds))

    cores = os.cpu_count() or 2
    ray.init(num_cpus=cores, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        for actors in (1, 2):
            with open_store(root / f"ray-{actors}") as store:
                options = RayOptions(actors=actors, cpus_per_actor=1.0 if actors == 1 else (cores - 1) / actors,
                                     batch_size=args.batch_size)
                summary = label_on_ray(labeler(), [photos], store, options)
            rows.append((f"ray, {actors} CPU actor(s)", summary.done, summary.seconds))

        ingest_photos = _photos(root / "ingest", args.ingest, side=16)
        workers.LabelingActor = StandInActor  # model-free: what is left is Ray and the driver
        with open_store(root / "ingest-run") as store:
            summary = label_on_ray(labeler(), [ingest_photos], store, RayOptions(batch_size=64))
    finally:
        ray.shutdown()

    print(f"{'engine':<26}{'images':>8}{'seconds':>10}{'img/s':>9}   (including start-up)")
    for name, done, seconds in rows:
        print(f"{name:<26}{done:>8}{seconds:>10.1f}{done / seconds:>9.2f}")
    rate = summary.done / summary.driver_seconds
    print(f"driver ingest: {summary.done} records (10 boxes + 10 RLE masks each) in {summary.driver_seconds:.2f}s "
          f"of driver time = {rate:,.0f} records/s (must be >= 2,000)")
    return 0 if rate >= 2000 else 1


if __name__ == "__main__":
    sys.exit(main())
