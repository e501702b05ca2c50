"""A detector with known answers for tests and benchmarks of geometry (tiles, coordinates): it finds
bright blobs in the image as a detector sees it, shrunk to its input side."""

from __future__ import annotations

import numpy as np
import torch

from autolabel.geometry import Size


class BlobPreprocessor:
    """``(h, w, 3)`` uint8 -> ``(3, S, S)`` in [0, 1]: shrunk (area average) so the long side fits
    ``side`` when larger, placed top-left, zero padding (as OWLv2 pads bottom/right)."""

    on_device = False

    def __init__(self, side: int):
        self.side = side

    def decode_side(self, size: Size) -> None:
        return None

    def scale(self, size: Size) -> float:
        return min(1.0, self.side / max(size))

    def __call__(self, pixels, size: Size, device="cpu") -> torch.Tensor:
        image = torch.as_tensor(np.asarray(pixels)).permute(2, 0, 1).float() / 255
        scale = self.scale(Size(*size))
        h, w = round(size[1] * scale), round(size[0] * scale)
        if (h, w) != tuple(image.shape[1:]):
            image = torch.nn.functional.interpolate(image[None], size=(h, w), mode="area")[0]
        out = torch.zeros(3, self.side, self.side)
        out[:, :h, :w] = image
        return out.to(device)


class BlobDetector:
    """A ``models.base.Detector`` with known answers: every connected region brighter than ``level``
    in the model input and at least ``min_side`` input pixels on both sides is one box of the first
    prompt, scored by its mean brightness. Boxes map back like OWLv2's (one scale, top-left)."""

    name = "blob-detector"
    device = "cpu"
    yields_masks = False
    compiled = False

    def __init__(self, side: int = 960, min_side: int = 16, level: float = 0.5):
        self.preprocessor = BlobPreprocessor(side)
        self.image_size = side
        self.min_side = min_side
        self.level = level
        self.forward_images = 0  # images through encode_images (full views and tiles)

    def compile_vision(self, **options) -> None:
        pass

    def encode_text(self, queries):
        return tuple(queries)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.forward_images += len(pixel_values)
        return pixel_values

    def score(self, features: torch.Tensor, text) -> list[tuple[np.ndarray, np.ndarray]]:
        from scipy import ndimage

        out = []
        for image in features.mean(dim=1).numpy():
            labels, _ = ndimage.label(image > self.level)
            boxes, scores = [], []
            for index, found in enumerate(ndimage.find_objects(labels), start=1):
                ys, xs = found
                if min(ys.stop - ys.start, xs.stop - xs.start) >= self.min_side:
                    boxes.append([xs.start, ys.start, xs.stop, ys.stop])
                    scores.append(float(image[found][labels[found] == index].mean()))
            out.append((np.array(boxes, np.float32).reshape(-1, 4), np.array(scores)))
        return out

    def postprocess(self, scores, sizes: list[Size], ontology, config) -> list:
        from autolabel.models.postprocess import thresholded

        dets = []
        for (boxes, values), size in zip(scores, sizes):
            pixels = boxes / np.float32(self.preprocessor.scale(Size(*size)))
            dets.append(thresholded(values, np.zeros(len(values), np.int64), pixels, Size(*size), ontology, config))
        return dets

    def detect(self, features, text, sizes, ontology, config) -> list:
        return self.postprocess(self.score(features, text), sizes, ontology, config)
