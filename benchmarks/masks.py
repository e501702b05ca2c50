#!/usr/bin/env python
"""Mask post-processing on the host: low-res SAM mask logits -> full-resolution COCO RLEs.

Ours (``models.masks.encode_upsampled``: upsampled only inside the region that can pass the
threshold, rows decided per source-row pair, blended only along the mask's edge) against the plain
recipe (``post_process_masks``' full-frame ``F.interpolate``, the threshold, then pycocotools'
``encode`` of each mask), on three kinds of 256x256 logits: SAM-like objects covering about 10% and
1% of the frame (logits +-15 with a sharp edge) and smooth random fields over half of it (the worst
case, what random-weight models give). Both must give the same RLEs; the script checks it. One
torch thread, medians of ``--rounds``, milliseconds per mask.

Example: python benchmarks/masks.py --masks 10 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def objects(n: int, fraction: float, generator: torch.Generator) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 256), torch.linspace(-1, 1, 256), indexing="ij")
    radius = (fraction / np.pi) ** 0.5 * 2
    out = []
    for _ in range(n):
        cx, cy = (torch.rand(2, generator=generator) - 0.5).tolist()
        distance = ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt() - radius
        out.append((-distance * 60).clamp(-15, 15) + torch.randn(256, 256, generator=generator) * 0.3)
    return torch.stack(out)


def recipe(logits: torch.Tensor, height: int, width: int) -> list[dict]:
    from pycocotools import mask as mask_util

    full = torch.nn.functional.interpolate(logits[:, None], (height, width), mode="bilinear", align_corners=False)
    return [mask_util.encode(np.asfortranarray((m[0] > 0).numpy().astype(np.uint8))) for m in full]


def main(argv=None) -> int:
    from autolabel.geometry import Size
    from autolabel.models.masks import encode_upsampled

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--masks", type=int, default=10, help="masks per set")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.randn(args.masks, 1, 16, 16, generator=generator), size=(256, 256),
                                             mode="bilinear")[:, 0] * 5
    sets = {"object 10%": objects(args.masks, 0.10, generator), "object 1%": objects(args.masks, 0.01, generator),
            "random 50%": smooth.contiguous()}
    print(f"{'logits':12s} {'frame':>10s} {'recipe ms/mask':>15s} {'ours ms/mask':>13s} {'ratio':>6s}")
    for name, logits in sets.items():
        for width, height in ((1920, 1080), (4000, 3000)):
            ours = encode_upsampled(logits, Size(width, height))
            ref = recipe(logits, height, width)
            same = all(a["counts"] == b["counts"].decode() for a, b in zip(ours, ref))
            if not same:
                print(f"{name} {width}x{height}: ours differs from the recipe")
                return 1
            times = {"recipe": [], "ours": []}
            for _ in range(args.rounds):
                for side, run in (("recipe", lambda: recipe(logits, height, width)),
                                  ("ours", lambda: encode_upsampled(logits, Size(width, height)))):
                    start = time.perf_counter()
                    run()
                    times[side].append((time.perf_counter() - start) / len(logits) * 1000)
            r, o = np.median(times["recipe"]), np.median(times["ours"])
            print(f"{name:12s} {f'{width}x{height}':>10s} {r:15.1f} {o:13.1f} {r / o:5.1f}x")
    print("same RLEs as the recipe in every case")
    return 0


if __name__ == "__main__":
    sys.exit(main())
