#!/usr/bin/env python
"""Throughput of ``autolabel relabel``: re-scoring a finished run from its kept candidates.

Builds a source run the way labelling leaves it, through the public store API: ``--images`` image
rows (sizes like photos, a few model labels each, a few images reviewed with a human label) and
one candidates file per image (``autolabel.candidates``: K=``--keep`` records, class embeddings of
``--dim`` in fp16). Then times ``relabel_run`` end to end -- reading the source run, loading the
files, scoring, post-processing, linking the files and writing the new store -- and prints images/s
and the seconds per stage (summed over threads, so they can exceed the wall time).

Candidates are synthetic but shaped like OWLv2 B/16's: unit-length class embeddings (D=512),
``logit_scale`` in [8, 16] and ``logit_shift`` around -0.5, so a background patch scores about
sigmoid(-6); ``--objects`` of them (2% by default, ~6 per image) are shifted so they score about
0.3-0.98 and crowd around two objects, so thresholding keeps a few and NMS has work. Only the
prompts' text embeddings come from a model: a tiny random OWLv2 whose class head and text
projection are 512 wide. The full-size B/16 is not needed: its text tower runs once per relabel
(it would add its load time, ~1-2 s, and a few tens of ms of encoding, not a cost per image).

Files are read from the page cache (they were just written); a cold disk adds ~310 KB of reads per
image. A small relabel runs first (lazy imports and first calls: a cost per process, not per
image). The load average and the CPU time are printed: other work on the machine slows the
wall-clock figures.

Examples:
  python benchmarks/relabel.py                         # 1000 images, K=300, D=512
  python benchmarks/relabel.py --images 5000 --rounds 2
  python benchmarks/relabel.py --profile 30            # also cProfile's top 30 functions
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402 -- after the path set-up above

from autolabel.candidates import Candidates, save_candidates  # noqa: E402
from autolabel.detections import Detections  # noqa: E402
from autolabel.ontology import Ontology  # noqa: E402
from autolabel.pipeline import DetectConfig, StageTimes  # noqa: E402
from autolabel.relabel import relabel_run  # noqa: E402
from autolabel.store import ImageResult, open_store  # noqa: E402

CACHE = REPO / "benchmarks" / "results" / "cache"
SOURCE_PROMPTS = ["car", "person"]
NEW_PROMPTS = ["car=car,van,truck;not=toy car", "person", "dog", "bicycle"]
SIZES = [(4000, 3000), (3000, 4000), (1920, 1080), (640, 480)]


def text_checkpoint(dim: int, cache: Path = CACHE) -> Path:
    """A tiny random OWLv2 whose class embeddings and text embeddings are ``dim`` wide (cached)."""
    from autolabel.testing.owlv2_checkpoint import build_owlv2_checkpoint

    path = cache / f"owlv2-tiny-d{dim}"
    if not (path / "config.json").exists():
        build_owlv2_checkpoint(path, text_hidden=dim, text_heads=8, projection_dim=dim)
    return path


def synthetic_candidates(rng: np.random.Generator, keep: int, dim: int, objects: float) -> Candidates:
    """One image's K candidates with OWLv2-like statistics (see the module docstring)."""
    embeds = rng.standard_normal((keep, dim), dtype=np.float32)
    embeds /= np.linalg.norm(embeds, axis=1, keepdims=True)
    shift = rng.normal(-0.5, 0.05, keep).astype(np.float32)
    scale = rng.uniform(8, 16, keep).astype(np.float32)
    boxes = np.column_stack([rng.uniform(0.05, 0.95, (keep, 2)), rng.uniform(0.02, 0.3, (keep, 2))]).astype(np.float32)
    hits = rng.random(keep) < objects
    shift[hits] = rng.uniform(0.0, 0.2, int(hits.sum())).astype(np.float32)
    centres = rng.uniform(0.2, 0.8, (2, 2))  # two objects: the hits crowd around them (work for NMS)
    boxes[hits, :2] = centres[rng.integers(0, 2, int(hits.sum()))] + rng.normal(0, 0.01, (int(hits.sum()), 2))
    patches = np.sort(rng.choice(3600, keep, replace=False)).astype(np.int32)
    return Candidates(patches, boxes, embeds.astype(np.float16), shift, scale)


def build_source_run(run: Path, n: int, keep: int, dim: int, objects: float, reviewed: float, model: Path) -> None:
    """A finished labelling run with kept candidates, as ``autolabel label`` leaves it."""
    ontology = Ontology.from_prompts(SOURCE_PROMPTS)
    rng = np.random.default_rng(0)
    with open_store(run) as store:
        store.bind_config({"model": str(model), "sam_model": None, "mode": "detect", "ontology": ontology.to_dict(),
                           "detect": DetectConfig().to_dict(), "keep_candidates": keep})
        results = []
        for i in range(n):
            sha = hashlib.sha256(f"image {i}".encode()).hexdigest()
            width, height = SIZES[i % len(SIZES)]
            save_candidates(run, sha, synthetic_candidates(rng, keep, dim, objects))
            m = int(rng.integers(0, 6))
            corner = rng.uniform(0, 0.7, (m, 2)) * [width, height]
            boxes = np.hstack([corner, corner + rng.uniform(0.05, 0.3, (m, 2)) * [width, height]]).astype(np.float32)
            dets = Detections(boxes, rng.uniform(0.1, 0.9, m).astype(np.float32), rng.integers(0, 2, m),
                              rng.integers(0, 2, m))
            results.append(ImageResult(f"/photos/{i // 1000:03d}/img_{i:06d}.jpg", sha, width, height, dets))
        for start in range(0, n, 256):
            store.write_results(results[start:start + 256])
        for image in store.images():
            if rng.random() < reviewed:  # a person checked it: one box drawn, the image marked reviewed
                store.add_detection(image.id, "person", [10, 10, 200, 300])
                store.set_image_reviewed(image.id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--keep", type=int, default=300, help="candidates per image (K)")
    parser.add_argument("--dim", type=int, default=512, help="class embedding width (512: OWLv2 B/16)")
    parser.add_argument("--objects", type=float, default=0.02, help="fraction of candidates that score high")
    parser.add_argument("--reviewed", type=float, default=0.01, help="fraction of images a person reviewed")
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=1, help="relabel this many times (fresh --out each)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch (default: relabel's)")
    parser.add_argument("--profile", type=int, default=0, help="print cProfile's top N functions (slower)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to build the runs (default: a temp dir)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where the tiny checkpoint is kept")
    args = parser.parse_args(argv)

    model = text_checkpoint(args.dim, args.cache)
    started = time.perf_counter()
    from autolabel.models.registry import load_detector

    load_detector(str(model), "cpu", "fp32")  # imports torch and transformers: a one-off cost of any command
    print(f"imports and a first model load: {time.perf_counter() - started:.1f}s (not counted below)")
    root = Path(tempfile.mkdtemp(prefix="relabel-bench-", dir=args.workdir))
    try:
        started = time.perf_counter()
        build_source_run(root / "source", args.images, args.keep, args.dim, args.objects, args.reviewed, model)
        size = sum(f.stat().st_size for f in (root / "source" / "candidates").rglob("*.npy")) / args.images
        print(f"built {args.images} images (K={args.keep}, D={args.dim}, {size / 1024:.0f} KiB per file) "
              f"in {time.perf_counter() - started:.1f}s")
        ontology, config = Ontology.from_prompts(NEW_PROMPTS), DetectConfig(threshold=args.threshold)
        started = time.perf_counter()
        build_source_run(root / "small", min(16, args.images), args.keep, args.dim, args.objects, 0.0, model)
        relabel_run(root / "small", root / "small-out", ontology, config)
        print(f"a first small relabel (first calls and lazy imports, once per process): "
              f"{time.perf_counter() - started:.1f}s (not counted below)")
        for round_ in range(args.rounds):
            out = root / f"out{round_}"
            times = StageTimes()
            profiler = None
            if args.profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            started, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
            batching = {"batch_size": args.batch_size} if args.batch_size else {}
            summary = relabel_run(root / "source", out, ontology, config, times=times, **batching)
            wall, cpu, main = time.perf_counter() - started, time.process_time() - cpu, time.thread_time() - main
            if profiler is not None:
                import pstats

                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
            boxes = sum(summary.per_class.values())
            print(f"round {round_ + 1}: {summary.done} images, {boxes} boxes ({boxes / max(summary.done, 1):.1f}"
                  f" per image); load average {os.getloadavg()[0]:.2f}")
            print(f"  end to end {wall:.2f}s: {summary.done / wall:.0f} images/s; after the model is loaded "
                  f"{summary.seconds:.2f}s: {summary.images_per_second:.0f} images/s")
            n = max(summary.done, 1)
            print(f"  CPU time {1e3 * cpu / n:.3f} ms/image in all threads, {1e3 * main / n:.3f} in the main one "
                  f"(less sensitive to other work than the wall time): two idle cores would do about "
                  f"{n / max(main, cpu / 2):.0f} images/s")
            for stage, seconds in sorted(times.as_dict().items(), key=lambda kv: -kv[1]):
                print(f"  {stage:>12}: {seconds:6.3f}s  {1e3 * seconds / max(summary.done, 1):.3f} ms/image")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
