"""Boxes land on the right pixels: real JPEGs with every EXIF orientation, a marker painted into
the stored pixels, and OWLv2's heads patched to emit the marker's box as the model sees it.

The expected box comes from the EXIF specification (an explicit table below, not Pillow), so a
wrong orientation, a wrong padding assumption or a wrong scale in any stage shows up as a miss:
in the store (original pixels) and in resized COCO exports.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel.export import ExportOptions, export_dataset
from autolabel.labeling import label_into_store
from autolabel.models.owlv2 import Owlv2Detector
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig, Labeler
from autolabel.store import open_store

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
MARKER_RAW = (300, 150, 700, 450)  # x0, y0, x1, y1 in the file's stored (un-oriented) pixels


def oriented_box(box, orientation: int, raw_w: int, raw_h: int):
    """Map a box from stored pixels to the displayed frame, per the EXIF orientation tag."""
    W, H = raw_w, raw_h
    maps = {
        1: lambda x, y: (x, y), 2: lambda x, y: (W - x, y), 3: lambda x, y: (W - x, H - y),
        4: lambda x, y: (x, H - y), 5: lambda x, y: (y, x), 6: lambda x, y: (H - y, x),
        7: lambda x, y: (H - y, W - x), 8: lambda x, y: (y, W - x),
    }
    f = maps.get(orientation, maps[1])
    x0, y0, x1, y1 = box
    pts = np.array([f(x0, y0), f(x1, y1)], dtype=np.float64)
    return [*pts.min(axis=0), *pts.max(axis=0)]


def _marker_box(pixel_values: torch.Tensor) -> torch.Tensor:
    """Normalised cxcywh of the magenta marker in one preprocessed (3, S, S) image."""
    rgb = pixel_values.float().cpu() * CLIP_STD + CLIP_MEAN
    magenta = (rgb[0] > 0.6) & (rgb[1] < 0.4) & (rgb[2] > 0.6)
    ys, xs = torch.nonzero(magenta, as_tuple=True)
    side = pixel_values.shape[-1]
    x0, x1, y0, y1 = xs.min().item(), xs.max().item() + 1, ys.min().item(), ys.max().item() + 1
    return torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dtype=torch.float32) / side


def patched_detector(checkpoint) -> Owlv2Detector:
    """The real detector with its heads patched: patch 0 carries the marker box and a high score."""
    detector = Owlv2Detector.from_pretrained(str(checkpoint))
    model = detector.model
    seen = {}
    real_embedder, real_boxes, real_classes = model.image_embedder, model.box_predictor, model.class_predictor

    def image_embedder(pixel_values, **kw):
        seen["pixel_values"] = pixel_values
        return real_embedder(pixel_values=pixel_values, **kw)

    def box_predictor(image_feats, feature_map, *a, **kw):
        boxes = real_boxes(image_feats, feature_map, *a, **kw).clone()
        for b, pv in enumerate(seen["pixel_values"]):
            boxes[b, 0] = _marker_box(pv)
        return boxes

    def class_predictor(image_feats, query_embeds=None, query_mask=None):
        logits, embeds = real_classes(image_feats, query_embeds, query_mask)
        logits = torch.full_like(logits, -20.0)
        logits[:, 0, 0] = 20.0
        return logits, embeds

    model.image_embedder, model.box_predictor, model.class_predictor = image_embedder, box_predictor, class_predictor
    return detector


@pytest.fixture(scope="module")
def owlv2_256(tmp_path_factory):
    """Finer model input (256 px) so the marker is located to within a few original pixels."""
    from autolabel.testing.owlv2_checkpoint import build_owlv2_checkpoint

    return build_owlv2_checkpoint(tmp_path_factory.mktemp("owlv2-256"), image_size=256)


@pytest.fixture(scope="module")
def marked_images(exif_dir, tmp_path_factory):
    """Copies of every sample JPEG with a magenta marker painted into the stored pixels."""
    out = tmp_path_factory.mktemp("marked")
    expected = {}
    for src in sorted(exif_dir.glob("*.jpg")):
        with Image.open(src) as im:
            exif = im.info.get("exif", b"")
            orientation = im.getexif().get(0x0112, 1)
            raw = np.array(im.convert("RGB"))
        x0, y0, x1, y1 = MARKER_RAW
        raw[y0:y1, x0:x1] = (255, 0, 255)
        dst = out / src.name
        Image.fromarray(raw).save(dst, quality=95, exif=exif)
        expected[str(dst)] = (oriented_box(MARKER_RAW, orientation, raw.shape[1], raw.shape[0]), orientation)
    return out, expected


def test_marker_box_lands_on_the_oriented_pixels(owlv2_256, marked_images, tmp_path):
    folder, expected = marked_images
    assert {o for _, o in expected.values()} >= set(range(1, 9)), "samples must cover orientations 1-8"
    ontology = Ontology.from_prompts(["marker"])
    labeler = Labeler(ontology, model=str(owlv2_256), config=DetectConfig(threshold=0.5))
    labeler._detector = patched_detector(owlv2_256)
    run = tmp_path / "run"
    with open_store(run) as store:
        summary = label_into_store(labeler, [folder], store, batch_size=3)
        assert (summary.done, summary.failed) == (len(expected), 0)
        stored = {img.path: (img, store.labels(img.id)) for img in store.images()}

    # Model input is 256 px for a 1800 px side: allow 1.5 input pixels of blur at the edges.
    tol = 1.5 * 1800 / 256
    for path, (box, orientation) in expected.items():
        image, dets = stored[path]
        assert len(dets) == 1, path
        landscape = "Landscape" in path
        assert (image.width > image.height) == landscape, f"{path}: oriented size {image.width}x{image.height}"
        np.testing.assert_allclose(dets.xyxy[0], box, atol=tol, err_msg=f"{path} (orientation {orientation})")

    # Resized exports: longest side 640 (aspect kept) and an exact 500x400 stretch.
    with open_store(run, create=False) as store:
        for size, scale_of in [("640", lambda w, h: (640 / max(w, h),) * 2), ("500x400", lambda w, h: (500 / w, 400 / h))]:
            out = tmp_path / f"export-{size}"
            export_dataset(store, out, "coco", ExportOptions.build(image_size=size))
            coco = json.loads((out / "coco_export.json").read_text())
            by_name = {im["id"]: im for im in coco["images"]}
            assert len(coco["annotations"]) == len(expected)
            for ann in coco["annotations"]:
                image = by_name[ann["image_id"]]
                with Image.open(out / "images" / image["file_name"]) as exported:
                    assert exported.size == (image["width"], image["height"])
                    assert exported.getexif().get(0x0112, 1) in (0, 1), "orientation must be baked in"
                source = next(p for p in expected if p.endswith(image["file_name"].replace(".jpg", "") + ".jpg"))
                box, _ = expected[source]
                oriented_w, oriented_h = (1800, 1200) if "Landscape" in source else (1200, 1800)
                sx, sy = scale_of(oriented_w, oriented_h)
                x, y, w, h = ann["bbox"]
                np.testing.assert_allclose([x, y, x + w, y + h], np.array(box) * [sx, sy, sx, sy],
                                           atol=tol * max(sx, sy) + 0.5, err_msg=f"{size}: {source}")
