#!/usr/bin/env python
"""What sliced inference (``--tiles``) gains on small objects, and what it costs per image.

Random-weight checkpoints detect nothing, so the gain is measured with a controlled detector whose
right answer is known: ``BlobDetector`` sees the image as a detector does (shrunk so its long side
fits the model's input side, 960 px like OWLv2 B/16) and finds every bright blob at least
``--min-side`` input pixels wide (16: one OWLv2 patch), scored by its mean brightness. Generated
2000x1500 images hold bright targets (mostly 12-32 px, some 40-80 px) and dimmer distractors whose
brightness overlaps the targets'. Printed: recall at a fixed precision (greedy IoU 0.5 matching,
``autolabel.evaluation.calibration``) with tiles off and auto, and the engine's seconds per image
(decode, crops, detector, merge) and forward passes per image. ``--model``: also time a real
checkpoint (e.g. benchmarks/results/cache/owlv2-base-patch16) off and auto on the same images.

Examples:
  python benchmarks/tiles.py
  python benchmarks/tiles.py --images 4 --model benchmarks/results/cache/owlv2-tiny
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from autolabel.geometry import Size  # noqa: E402


from autolabel.testing.blob_detector import BlobDetector  # noqa: E402


def make_image(size: Size, rng, targets: int, distractors: int) -> tuple[np.ndarray, np.ndarray]:
    """A dark noisy image with bright square targets (3 in 4 of 12-32 px, the rest 40-80 px) and
    dimmer distractors, none touching another; returns the pixels and the targets' boxes."""
    width, height = size
    pixels = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    taken = np.zeros((height, width), bool)
    boxes = []
    for k in range(targets + distractors):
        target = k < targets
        side = int(rng.integers(12, 33) if not target or rng.random() < 0.75 else rng.integers(40, 81))
        for _ in range(100):
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            if not taken[max(0, y - 4):y + side + 4, max(0, x - 4):x + side + 4].any():
                break
        else:
            continue
        taken[y:y + side, x:x + side] = True
        level = rng.uniform(0.75, 1.0) if target else rng.uniform(0.55, 0.8)
        pixels[y:y + side, x:x + side] = int(level * 255)
        if target:
            boxes.append([x, y, x + side, y + side])
    return pixels, np.array(boxes, np.float64)


def run(labeler, images: list[np.ndarray], batch_size: int) -> tuple[list, float]:
    """Detections of every image through the engine's batch steps, and the seconds it took."""
    from autolabel.pipeline import PreparedImage

    started = time.perf_counter()
    out = []
    for i in range(0, len(images), batch_size):
        batch = [PreparedImage(f"<image {i + j}>", "", Size(p.shape[1], p.shape[0]), pixels=torch.from_numpy(p))
                 for j, p in enumerate(images[i:i + batch_size])]
        out += labeler.finish(labeler.launch(batch))
    return out, time.perf_counter() - started


def recall_at(dets: list, truth: list[np.ndarray], precision: float) -> tuple[float, float, float]:
    """(recall at the lowest threshold keeping ``precision``, the highest recall and its precision)."""
    from autolabel.evaluation.calibration import Matches, for_precision, match_image, pr_curve

    matches = Matches.merge([match_image(d.xyxy, d.scores, t) for d, t in zip(dets, truth)])
    curve = pr_curve(matches)
    point = for_precision(curve, precision)
    if not len(curve.recall):
        return 0.0, 0.0, 0.0
    return (point.recall if point else 0.0), float(curve.recall[-1]), float(curve.precision[-1])


def main() -> None:
    from autolabel.ontology import Ontology
    from autolabel.pipeline import DetectConfig, Labeler

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--width", type=int, default=2000)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--targets", type=int, default=40, help="targets per image")
    parser.add_argument("--distractors", type=int, default=20, help="distractors per image")
    parser.add_argument("--min-side", type=int, default=16, help="smallest blob the detector sees, in input px")
    parser.add_argument("--precision", type=float, default=0.9, help="report recall at this precision")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--model", default=None, help="also time this detector checkpoint off and auto")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    size = Size(args.width, args.height)
    generated = [make_image(size, rng, args.targets, args.distractors) for _ in range(args.images)]
    images, truth = [g[0] for g in generated], [g[1] for g in generated]
    small = sum(int((np.minimum(t[:, 2] - t[:, 0], t[:, 3] - t[:, 1]) < 32).sum()) for t in truth)
    print(f"{args.images} images {size.width}x{size.height}, {sum(map(len, truth))} targets "
          f"({small} under 32 px), {args.distractors} distractors each")
    ontology = Ontology.from_prompts(["target"])
    config = DetectConfig(threshold=0.0)
    print(f"controlled detector (960 px input, blobs >= {args.min_side} input px):")
    for tiles in (None, "auto"):
        detector = BlobDetector(min_side=args.min_side)
        labeler = Labeler(ontology, detector=detector, config=config, device="cpu", tiles=tiles)
        dets, seconds = run(labeler, images, args.batch_size)
        at, best, best_precision = recall_at(dets, truth, args.precision)
        print(f"  tiles {tiles or 'off':4}  recall@P{args.precision:.2f} {at:.3f}  "
              f"max recall {best:.3f} (precision {best_precision:.3f})  "
              f"{seconds / len(images):.3f} s/img  {detector.forward_images / len(images):.1f} forward images/img")
    if args.model:
        print(f"{args.model} on the same images (random weights: time only):")
        for tiles in (None, "auto"):
            labeler = Labeler(ontology, model=args.model, config=config, device="cpu", tiles=tiles)
            run(labeler, images[:1], 1)  # load and warm up
            _, seconds = run(labeler, images, args.batch_size)
            print(f"  tiles {tiles or 'off':4}  {seconds / len(images):.3f} s/img")


if __name__ == "__main__":
    main()
