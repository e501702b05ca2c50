"""Fast preprocessing (``models.preprocess``) against the stock transformers processors.

Stated tolerances (normalised pixel units; one grey level is about 0.015 of them):

- OWLv2 on original pixels: |fast - processor| <= 1e-5 everywhere (float32 rounding; the weights
  are the processor's own pad + blur + resize, applied in another order).
- OWLv2 from a JPEG draft-decoded to at least the model size, against the processor on the full
  decode: mean <= 0.015, 99th percentile <= 0.08 (measured on photo-like JPEGs: mean 0.005-0.009,
  p99 0.045-0.05; the largest differences sit on hard edges). At least twice the model size (the
  labelling loop's default): mean <= 0.005, p99 <= 0.025 (measured 0.003 and 0.015).
- SAM2 on the same pixels: bit-exact (the processor's own operations). From a 12 MP JPEG drafted
  at 1/2 (2000 x 1500): mean <= 0.015, p99 <= 0.06 (measured 0.007 and 0.035).
- Detections through the fast path on original pixels equal the plain recipe's within 1e-3 px
  and 1e-5 in score (tests/models/test_owlv2.py holds the stock path to 1e-4 px).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from autolabel.images import load_image, oriented_size
from autolabel.models.owlv2 import Owlv2Detector
from autolabel.models.preprocess import Owlv2Preprocessor, as_hwc_uint8, draft_side, sam2_pixel_values
from autolabel.ontology import Ontology
from autolabel.geometry import Size
from autolabel.pipeline import DetectConfig, Labeler
from autolabel.testing.photos import synthetic_photo


def _random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _owl_processor(size: int):
    from transformers import Owlv2ImageProcessor

    return Owlv2ImageProcessor(size={"height": size, "width": size})


@pytest.mark.parametrize(
    "size, width, height",
    [
        (64, 120, 80),  # landscape: padded at the bottom
        (64, 70, 130),  # portrait: padded on the right
        (64, 97, 61),  # not a multiple of anything
        (64, 40, 30),  # smaller than the model: no blur, bilinear upsampling
        (64, 3, 1),  # degenerate strip
        (960, 1920, 1080),  # 2 MP: blur sigma 0.5
        (960, 1080, 1920),
        (960, 961, 37),  # barely larger than the model
    ],
)
def test_owlv2_fast_equals_processor_on_original_pixels(size, width, height):
    processor = _owl_processor(size)
    fast = Owlv2Preprocessor.from_processor(processor)
    image = _random_image(width, height)
    expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
    ours = fast(as_hwc_uint8(image))
    assert ours.shape == expected.shape == (3, size, size)
    assert (ours - expected).abs().max().item() <= 1e-5


def _photo_jpeg(tmp_path, width, height, orientation=1):
    """A photo-like JPEG; orientation 6 stores it sideways as phones do."""
    image = synthetic_photo(width, height, seed=width + height)
    exif = Image.Exif()
    if orientation == 6:
        image = image.transpose(Image.Transpose.ROTATE_90)
        exif[0x0112] = 6
    path = tmp_path / f"photo_{width}x{height}_{orientation}.jpg"
    image.save(path, quality=90, exif=exif.tobytes())
    return path


@pytest.mark.parametrize(
    "width, height, orientation, margin, decoded, mean, p99",
    [
        (4000, 3000, 1, 1, (1000, 750), 0.015, 0.08),  # 12 MP: DCT 1/4
        (3000, 4000, 6, 1, (750, 1000), 0.015, 0.08),  # 12 MP portrait shot, stored sideways
        (1920, 1080, 1, 1, (960, 540), 0.015, 0.08),  # 2 MP: DCT 1/2
        (4000, 3000, 1, 2, (2000, 1500), 0.005, 0.025),  # 12 MP at twice the model size: DCT 1/2
    ],
)
def test_owlv2_from_draft_decode_is_close_to_processor(tmp_path, width, height, orientation, margin, decoded,
                                                       mean, p99):
    path = _photo_jpeg(tmp_path, width, height, orientation)
    processor = _owl_processor(960)
    fast = Owlv2Preprocessor.from_processor(processor)
    assert oriented_size(path) == (width, height)
    loaded = load_image(path, max_side=draft_side(width, height, min_long=960 * margin))
    assert loaded.image.size == decoded and (loaded.width, loaded.height) == (width, height)
    with Image.open(path) as im:
        full = ImageOps.exif_transpose(im).convert("RGB")
    expected = processor(images=full, return_tensors="pt")["pixel_values"][0]
    diff = (fast(as_hwc_uint8(loaded.image), (loaded.width, loaded.height)) - expected).abs().flatten()
    assert diff.mean().item() <= mean
    assert torch.quantile(diff[::7], 0.99).item() <= p99


@pytest.mark.parametrize("size, width, height", [(128, 200, 120), (128, 90, 160), (1024, 1500, 1000), (1024, 700, 300)])
def test_sam2_fast_is_bit_exact(size, width, height):
    from transformers import Sam2ImageProcessor

    processor = Sam2ImageProcessor(size={"height": size, "width": size})
    image = _random_image(width, height, seed=1)
    expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
    assert torch.equal(sam2_pixel_values(processor, as_hwc_uint8(image)), expected)


def test_sam2_from_draft_decode_is_close_to_processor(tmp_path):
    from transformers import Sam2ImageProcessor

    path = _photo_jpeg(tmp_path, 4000, 3000)
    processor = Sam2ImageProcessor()
    loaded = load_image(path, max_side=draft_side(4000, 3000, min_long=1920, min_short=1024))
    assert loaded.image.size == (2000, 1500)
    with Image.open(path) as im:
        expected = processor(images=im.convert("RGB"), return_tensors="pt")["pixel_values"][0]
    diff = (sam2_pixel_values(processor, as_hwc_uint8(loaded.image)) - expected).abs().flatten()
    assert diff.mean().item() <= 0.015
    assert torch.quantile(diff[::7], 0.99).item() <= 0.06


@pytest.mark.parametrize(
    "size, min_long, min_short, expected",
    [
        ((4000, 3000), 960, 0, 1000),  # 1/4
        ((4032, 3024), 960, 0, 1008),  # iPhone 12 MP: 1/4
        ((4032, 3024), 1008, 0, 1008),  # L/14 input
        ((1920, 1080), 960, 0, 960),  # 1/2
        ((1919, 1080), 960, 0, None),  # 1/2 would be 959.5 px: full decode
        ((640, 480), 960, 0, None),  # smaller than the model
        ((4000, 3000), 1024, 1024, 2000),  # SAM2 needs 1024 on the short side too: 1/2
        ((1920, 1080), 1024, 1024, None),
        ((8000, 6000), 960, 0, 1000),  # 48 MP: 1/8
    ],
)
def test_draft_side(size, min_long, min_short, expected):
    assert draft_side(*size, min_long=min_long, min_short=min_short) == expected


def test_draft_decode_needs_no_second_resample(tmp_path, monkeypatch):
    """When the sides divide evenly, load_image returns the DCT output as is (no LANCZOS pass)."""
    path = _photo_jpeg(tmp_path, 4000, 3000)
    calls = []
    real_resize = Image.Image.resize

    def resize(self, size, *args, **kwargs):
        calls.append((self.size, tuple(size)))
        return real_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", resize)
    loaded = load_image(path, max_side=draft_side(4000, 3000, min_long=960))
    assert loaded.image.size == (1000, 750) and loaded.scale == 0.25
    assert all(src == dst for src, dst in calls)  # only same-size "resizes" (a copy)


def test_fast_path_detections_match_recipe(tiny_owlv2):
    """Detections from fast-preprocessed original pixels against the plain recipe (stated bound)."""
    from transformers import Owlv2ForObjectDetection, Owlv2Processor

    ontology = Ontology.from_prompts(["cat=cat,kitten", "dog"])
    detector = Owlv2Detector.from_pretrained(str(tiny_owlv2))
    processor = Owlv2Processor.from_pretrained(tiny_owlv2)
    model = Owlv2ForObjectDetection.from_pretrained(tiny_owlv2).eval()
    config = DetectConfig(threshold=0.0, nms_iou=None)
    images = [_random_image(w, h, seed=i) for i, (w, h) in enumerate([(120, 80), (70, 130), (97, 61)])]
    found = Labeler(ontology, detector=detector, config=config).label_images(images)
    for image, ours in zip(images, found):
        inputs = processor(text=[ontology.queries], images=image, return_tensors="pt", truncation=True)
        with torch.inference_mode():
            outputs = model(**inputs)
        ref = processor.post_process_grounded_object_detection(outputs, threshold=0.0,
                                                               target_sizes=[(image.height, image.width)])[0]
        boxes = np.clip(ref["boxes"].numpy(), 0, [image.width, image.height] * 2)
        inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        order = np.argsort(-ref["scores"].numpy()[inside], kind="stable")
        assert len(ours) == inside.sum()
        np.testing.assert_allclose(ours.xyxy, boxes[inside][order], atol=1e-3)
        np.testing.assert_allclose(ours.scores, ref["scores"].numpy()[inside][order], atol=1e-5)


def test_reduced_images_keep_the_original_frame(tiny_owlv2):
    """Shrunk images with their original sizes: boxes in the original frame, and
    the same as from the originals up to the preprocessing tolerance."""
    ontology = Ontology.from_prompts(["thing"])
    detector = Owlv2Detector.from_pretrained(str(tiny_owlv2))
    original = synthetic_photo(640, 400, seed=3)
    reduced = original.resize((320, 200), Image.Resampling.BOX)  # what a 1/2 draft decode gives
    config = DetectConfig(threshold=0.0, nms_iou=None, max_detections=5)
    labeler = Labeler(ontology, detector=detector, config=config)
    (full,) = labeler.label_images([original])
    (small,) = labeler.label_images([reduced], [Size(*original.size)])
    assert small.xyxy.max() > 200  # original pixels, not the reduced image's
    np.testing.assert_allclose(small.xyxy, full.xyxy, atol=2.0)
    np.testing.assert_allclose(small.scores, full.scores, atol=0.02)


@pytest.mark.parametrize("width, height", [(1, 1), (3, 2), (1001, 777), (4001, 3)])
def test_pil_pixels_equal_numpys_copy(width, height):
    image = _random_image(width, height, seed=3)
    pixels = as_hwc_uint8(image)
    assert pixels.dtype == torch.uint8 and pixels.numpy().flags.writeable
    np.testing.assert_array_equal(pixels.numpy(), np.array(image))
    np.testing.assert_array_equal(as_hwc_uint8(image.convert("L")).numpy(), np.array(image.convert("L").convert("RGB")))
