#!/usr/bin/env python
"""Accuracy drift of each model precision against fp32, measured through the inference engine.

- proxy (default): a 128 px OWLv2 whose heads are fine-tuned on the synthetic shapes set
  (``finetune.synthetic``; a couple of minutes on 2 cores, cached), evaluated on held-out shapes
  images: COCO mAP per precision (``finetune.metrics.coco_map``, i.e. ``autolabel.evaluation``) and
  the per-box drift of the raw outputs against fp32 (the same patch in both runs: box corners in
  image pixels, scores), over the patches fp32 scores >= 0.1.
- ``--full-size``: the full-size random OWLv2 B/16 (960 px) on a few generated photos: the box and
  score drift distribution over the top ``--top`` fp32 patches of each image (the boxes a run keeps,
  matched by patch), over all patches, and how many of fp32's top boxes stay in the other precision's
  top (no mAP: random weights detect nothing).

Examples:
  python benchmarks/precision_drift.py                     # proxy; fp32, bf16 (if the CPU has it), int8
  python benchmarks/precision_drift.py --full-size --images 2
  python benchmarks/precision_drift.py --device cuda --precisions fp32,bf16,fp16
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

CACHE = REPO / "benchmarks" / "results" / "cache"
CONFIDENT = 0.1  # per-box drift is measured where fp32 scores at least this
LOGIT_CONFIDENT = math.log(CONFIDENT / (1 - CONFIDENT))


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def trained_proxy(cache: Path, steps: int) -> tuple[str, object, object]:
    """(checkpoint, held-out Dataset, training seconds): heads fine-tuned on 48 shapes images,
    evaluated on 32 others (cached under ``cache``)."""
    from autolabel.finetune import TrainConfig, finetune, load_examples
    from autolabel.finetune.synthetic import build_calibrated_owlv2, make_shapes_dataset

    root = cache / f"precision-proxy-{steps}"
    train = load_examples(make_shapes_dataset(root / "train", n_images=48, seed=0))
    held_out = load_examples(make_shapes_dataset(root / "held-out", n_images=32, seed=1))
    base = root / "base"
    if not (base / "config.json").exists():
        build_calibrated_owlv2(base)
    config = TrainConfig(steps=steps, mode="heads", lr=1e-2, batch_size=4, val_every=0, save_every=0, workers=1)
    result = finetune(train, root / "tuned", base_model=str(base), config=config, device="cpu")
    return str(root / "tuned"), held_out, result.seconds


def full_size_inputs(cache: Path, count: int) -> tuple[str, list[Path]]:
    from autolabel.testing.owlv2_checkpoint import FULL_SIZE_OWLV2, build_owlv2_checkpoint
    from autolabel.testing.photos import synthetic_photo

    target = cache / "owlv2-base-patch16"
    if not (target / "config.json").exists():
        log(f"building the random OWLv2 B/16 in {target} ...")
        build_owlv2_checkpoint(target, **FULL_SIZE_OWLV2["base-patch16"])
    folder = cache / "precision-photos"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo_{i}.jpg"
        if not path.exists():
            synthetic_photo(1600, 1200, seed=i).save(path, quality=90)
        paths.append(path)
    return str(target), paths


def raw_outputs(labeler, paths, batch_size: int):
    """Per image, every patch's best ``logits`` and ``scores`` (P,), ``boxes`` (P, 4) xyxy pixels,
    ``normalised`` boxes (P, 4) as the head gives them and vision ``features`` (P, D); and the final
    Detections."""
    import numpy as np

    from autolabel.models.owlv2 import boxes_to_pixels

    raw, dets = [], []
    for start in range(0, len(paths), batch_size):
        batch = [labeler.prepare(p) for p in paths[start : start + batch_size]]
        launched = labeler.score(labeler.encode(batch))
        logits = launched.scores.logits.float().cpu().numpy().astype(np.float64)
        boxes = launched.scores.pred_boxes.float().cpu().numpy()
        features = launched.encoded.features.image_feats.float().cpu().numpy()
        for i, prepared in enumerate(batch):
            best = logits[i].max(axis=1)
            raw.append({"logits": best, "scores": 0.5 * (1 + np.tanh(best / 2)),  # the sigmoid, without overflow
                        "boxes": boxes_to_pixels(boxes[i], *prepared.size), "normalised": boxes[i],
                        "features": features[i]})
        dets += labeler.finish(launched)
    return raw, dets


QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))


def drift(reference, other, keep) -> dict:
    """Box corner and score differences of the same patches, pooled over images; ``keep(logits)``
    picks the patches from fp32's logits."""
    import numpy as np

    box_err, score_err = [], []
    for r0, r1 in zip(reference, other):
        chosen = keep(r0["logits"])
        box_err.append(np.abs(r1["boxes"][chosen] - r0["boxes"][chosen]).max(axis=1))
        score_err.append(np.abs(r1["scores"][chosen] - r0["scores"][chosen]))
    box_err, score_err = np.concatenate(box_err), np.concatenate(score_err)
    stats = {"patches": int(len(box_err))}
    for name, values in (("box_px", box_err), ("score", score_err)):
        if len(values):
            stats[name] = {q: float(np.quantile(values, p)) for q, p in QUANTILES}
    return stats


def top(logits, k: int):
    """Indices of the ``k`` highest logits (ranked before the sigmoid, which ties saturated scores)."""
    import numpy as np

    return np.argsort(-logits, kind="stable")[:k]


def top_kept(reference, other, k: int) -> float:
    """The fraction of fp32's top ``k`` patches per image that are also in the other run's top ``k``."""
    kept = [len(set(top(r0["logits"], k)) & set(top(r1["logits"], k))) for r0, r1 in zip(reference, other)]
    return sum(kept) / (k * len(kept))


def feature_error(reference, other) -> dict:
    """Per patch, the relative L2 error of the vision features (before any head squashes it)."""
    import numpy as np

    errors = np.concatenate([np.linalg.norm(r1["features"] - r0["features"], axis=1)
                             / np.linalg.norm(r0["features"], axis=1) for r0, r1 in zip(reference, other)])
    return {q: float(np.quantile(errors, p)) for q, p in QUANTILES}


def saturated(raw) -> float:
    """The fraction of normalised box coordinates the box head's sigmoid pins to 0 or 1 in float32
    (random weights do that to most; a pinned coordinate cannot drift)."""
    import numpy as np

    coords = np.concatenate([r["normalised"].ravel() for r in raw])
    return float(np.mean((coords < 1e-6) | (coords > 1 - 1e-6)))


def cells(stats: dict | None) -> list[str]:
    if not stats or "box_px" not in stats:
        return ["(reference)", "(reference)"]
    return [" / ".join(f"{stats[name][q]:.3g}" for q, _ in QUANTILES) for name in ("box_px", "score")]


def main(argv=None) -> int:
    import torch

    from autolabel.models.precision import cpu_supports_bf16
    from autolabel.ontology import Ontology
    from autolabel.pipeline import DetectConfig, Labeler
    from autolabel.settings import resolve_device

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", default=None, help="comma list (default: what the device runs)")
    parser.add_argument("--full-size", action="store_true", help="random OWLv2 B/16 at 960 px instead of the proxy")
    parser.add_argument("--images", type=int, default=2, help="--full-size: generated 1600x1200 photos")
    parser.add_argument("--top", type=int, default=10, help="--full-size: top fp32 patches per image (the kept boxes)")
    parser.add_argument("--steps", type=int, default=400, help="proxy: fine-tuning steps")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    default = ["fp32", "bf16", "fp16"] if device.startswith("cuda") else (
        ["fp32", "bf16", "int8"] if cpu_supports_bf16() else ["fp32", "int8"])
    precisions = args.precisions.split(",") if args.precisions else default
    if precisions[0] != "fp32":
        precisions.insert(0, "fp32")

    if args.full_size:
        model, paths = full_size_inputs(args.cache, args.images)
        ontology, held_out = Ontology.from_prompts(["person", "car=car,van,truck", "dog", "bicycle"]), None
        what = f"random OWLv2 B/16 (960 px), {len(paths)} generated 1600x1200 photos"
    else:
        model, held_out, seconds = trained_proxy(args.cache, args.steps)
        paths, ontology = [e.path for e in held_out.examples], held_out.ontology
        what = (f"OWLv2 128 px, heads fine-tuned {args.steps} steps on 48 synthetic shapes images ({seconds:.0f} s), "
                f"{len(paths)} held-out images")

    from autolabel.finetune.metrics import coco_map

    rows, reference = [], None
    for name in precisions:
        labeler = Labeler(ontology, model=model, device=device, precision=name,
                          config=DetectConfig(threshold=0.0, nms_iou=0.5))
        labeler.prepare(paths[0])  # loads the model outside the timing
        started = time.perf_counter()
        raw, dets = raw_outputs(labeler, paths, args.batch_size)
        seconds = time.perf_counter() - started
        row = {"precision": name, "seconds_per_image": seconds / len(paths)}
        if held_out is not None:
            row["map"] = coco_map(held_out, dets, list(ontology.names))["map"]
        if reference is None:
            reference = raw
            if args.full_size:
                row["saturated"] = saturated(raw)
        elif args.full_size:
            row["features"] = feature_error(reference, raw)
            row["top"] = drift(reference, raw, lambda logits: top(logits, args.top))
            row["all"] = drift(reference, raw, lambda logits: slice(None))
            row["top_kept"] = top_kept(reference, raw, args.top)
        else:
            row["confident"] = drift(reference, raw, lambda logits: logits >= LOGIT_CONFIDENT)
        rows.append(row)
        log(f"{name}: {row}")

    print(f"\n{' '.join([Path(sys.executable).name, *sys.argv])}\n{what}; device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    quantiles = " / ".join(q for q, _ in QUANTILES)
    if args.full_size:
        print(f"fp32 box coordinates pinned to 0 or 1 by the head's sigmoid: {100 * rows[0]['saturated']:.1f}%")
        print(f"| precision | s/image | top {args.top} kept | box drift px {quantiles} (top {args.top} per image) "
              f"| score drift {quantiles} (top {args.top}) | box drift px (all patches) | score drift (all patches) "
              f"| feature rel. error {quantiles} |")
        print("|---|---|---|---|---|---|---|---|")
        for row in rows:
            kept = f"{100 * row['top_kept']:.0f}%" if "top_kept" in row else "-"
            features = " / ".join(f"{row['features'][q]:.3g}" for q, _ in QUANTILES) if "features" in row else "-"
            print("| " + " | ".join([row["precision"], f"{row['seconds_per_image']:.2f}", kept,
                                     *cells(row.get("top")), *cells(row.get("all")), features]) + " |")
        return 0
    print(f"| precision | mAP | mAP drift | s/image | box drift px {quantiles} | score drift {quantiles} "
          f"(patches fp32 scores >= {CONFIDENT}) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join([row["precision"], f"{row['map']:.4f}", f"{row['map'] - rows[0]['map']:+.4f}",
                                 f"{row['seconds_per_image']:.3f}", *cells(row.get("confident"))]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
