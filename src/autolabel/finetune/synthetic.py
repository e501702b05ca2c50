"""A synthetic detection dataset whose right answer is known: coloured shapes with exact boxes.

For tests and quick demos of fine-tuning on a tiny random checkpoint (``build_calibrated_owlv2``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = {"square": (220, 30, 30), "circle": (30, 60, 220)}


def make_shapes_dataset(root: str | Path, n_images: int = 8, seed: int = 0,
                        sizes=((160, 120), (120, 160), (140, 140)), scale: float = 1.0) -> Path:
    """Write ``n_images`` PNGs of red squares and blue circles on grey noise (landscape, portrait and
    square, so the padding to a square matters; ``scale`` multiplies all sizes) and the COCO file
    ``root/gt.json`` with their exact boxes; returns its path."""
    root = Path(root)
    sizes = [(int(w * scale), int(h * scale)) for w, h in sizes]
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    images, annotations = [], []
    names = list(SHAPES)
    for i in range(n_images):
        w, h = sizes[i % len(sizes)]
        pixels = rng.normal(128, 20, (h, w, 3)).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        placed = []
        for _ in range(int(rng.integers(1, 3)) + 1):
            for _attempt in range(20):
                side = int(rng.integers(int(28 * scale), int(52 * scale)))
                x0, y0 = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
                box = (x0, y0, x0 + side, y0 + side)
                if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed):
                    break
            else:
                continue
            placed.append(box)
            name = names[int(rng.integers(len(names)))]
            if name == "square":
                draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=SHAPES[name])
            else:
                draw.ellipse([box[0], box[1], box[2] - 1, box[3] - 1], fill=SHAPES[name])
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": names.index(name) + 1,
                                "bbox": [box[0], box[1], side, side], "area": side * side, "iscrowd": 0})
        file_name = f"img{i:03d}.png"
        image.save(root / "images" / file_name)
        images.append({"id": i + 1, "file_name": file_name, "width": w, "height": h})
    doc = {"images": images, "annotations": annotations,
           "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}
    path = root / "gt.json"
    path.write_text(json.dumps(doc))
    return path


def build_calibrated_owlv2(path: str | Path, seed: int = 0, image_size: int = 128, patch_size: int = 16,
                           **kwargs) -> Path:
    """A random OWLv2 (default 128 px, 16 px patches) whose class head gives logits around -6 (scores
    ~0.003) like a pretrained one, not the random head's +-20, so training starts from "nothing
    detected", as fine-tuning a real model does."""
    import torch
    from transformers import Owlv2ForObjectDetection

    from autolabel.testing.owlv2_checkpoint import build_owlv2_checkpoint

    path = Path(path)
    build_owlv2_checkpoint(path, image_size=image_size, patch_size=patch_size, seed=seed, **kwargs)
    model = Owlv2ForObjectDetection.from_pretrained(path, use_safetensors=True)
    with torch.no_grad():
        for layer, bias in ((model.class_head.logit_shift, -2.0), (model.class_head.logit_scale, 2.0)):
            layer.weight.mul_(0.01)
            layer.bias.fill_(bias)
    model.save_pretrained(path, safe_serialization=True)
    return path
