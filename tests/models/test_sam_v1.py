"""SAM v1 / SAM-HQ: padded, aspect-keeping geometry; masks equal the plain transformers recipe and
land on the right pixels."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel.errors import ModelLoadError
from autolabel.geometry import Size, rle_to_mask
from autolabel.models.base import Segmenter, model_inputs
from autolabel.models.sam_v1 import SamEmbedding, SamSegmenter, reshaped_size


@pytest.fixture(scope="module", params=[False, True], ids=["sam", "sam_hq"])
def sam_dir(request, tmp_path_factory) -> Path:
    """A 128 px SAM v1 or SAM-HQ with random weights (32x32 low-res masks)."""
    from autolabel.testing.sam_v1_checkpoint import build_sam_checkpoint

    return build_sam_checkpoint(tmp_path_factory.mktemp("sam-tiny"), hq=request.param)


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _recipe(path: Path, image: Image.Image, boxes: np.ndarray):
    """processor -> model -> post_process_masks (with reshaped_input_sizes): (N, H, W) masks and the
    processor's pixel values."""
    from transformers import AutoConfig, SamHQModel, SamHQProcessor, SamModel, SamProcessor

    hq = AutoConfig.from_pretrained(path).model_type == "sam_hq"
    processor = (SamHQProcessor if hq else SamProcessor).from_pretrained(path)
    model = (SamHQModel if hq else SamModel).from_pretrained(path).eval()
    inputs = processor(images=image, input_boxes=[boxes.tolist()], return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs, multimask_output=False)
    masks = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])
    return masks[0][:, 0].numpy(), inputs["pixel_values"]


@pytest.mark.parametrize(
    "width, height, exact",
    [
        (200, 120, True),  # landscape: the padding is below the image
        (90, 161, False),  # portrait, odd size: padding on the right; torch preprocessing
    ],
)
def test_masks_equal_plain_recipe(sam_dir, width, height, exact):
    segmenter = SamSegmenter.from_pretrained(str(sam_dir), exact=exact)
    assert isinstance(segmenter, Segmenter)
    image = _image(width, height)
    boxes = np.array([[10, 20, 60, 90], [0, 0, width, height], [0.5 * width, 0.3 * height, 0.9 * width, 0.95 * height],
                      [5, 5, 12, 9]])
    expected, pixel_values = _recipe(sam_dir, image, boxes)
    inputs = model_inputs(segmenter.preprocessor, [image])
    torch.testing.assert_close(inputs, pixel_values, rtol=0, atol=1e-5)
    (embedding,) = segmenter.embed(inputs, [Size(width, height)])
    masks = [rle_to_mask(rle) for rle in segmenter.predict(embedding, boxes)]
    assert len(masks) == len(boxes)
    for mask, ref in zip(masks, expected):
        np.testing.assert_array_equal(mask, ref)


@pytest.mark.parametrize("width, height", [(200, 120), (90, 161)])
def test_points_refine_masks_as_the_plain_recipe(sam_dir, width, height):
    """Boxes with clicks (``input_points`` + ``input_labels``) equal the recipe's masks."""
    from transformers import AutoConfig, SamHQModel, SamHQProcessor, SamModel, SamProcessor

    segmenter = SamSegmenter.from_pretrained(str(sam_dir), exact=True)
    image = _image(width, height)
    boxes = np.array([[10, 20, 60, 90], [0.5 * width, 0.3 * height, 0.9 * width, 0.95 * height]])
    clicks = [[(30, 50, 1), (12, 22, 0)], [(0.7 * width, 0.6 * height, 1), (0.55 * width + 0.5, 0.9 * height, 0)]]
    (embedding,) = segmenter.embed(model_inputs(segmenter.preprocessor, [image]), [Size(width, height)])
    ours = [rle_to_mask(rle) for rle in segmenter.predict(embedding, boxes, clicks)]

    hq = AutoConfig.from_pretrained(sam_dir).model_type == "sam_hq"
    processor = (SamHQProcessor if hq else SamProcessor).from_pretrained(sam_dir)
    model = (SamHQModel if hq else SamModel).from_pretrained(sam_dir).eval()
    inputs = processor(images=image, input_boxes=[boxes.tolist()],
                       input_points=[[[[x, y] for x, y, _ in box] for box in clicks]],
                       input_labels=[[[label for _, _, label in box] for box in clicks]], return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs, multimask_output=False)
    expected = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"],
                                            inputs["reshaped_input_sizes"])[0][:, 0].numpy()
    assert len(ours) == len(boxes)
    for mask, ref in zip(ours, expected):
        np.testing.assert_array_equal(mask, ref)
    box_only = [rle_to_mask(rle) for rle in segmenter.predict(embedding, boxes)]
    assert any(not np.array_equal(a, b) for a, b in zip(ours, box_only))  # the clicks count


@pytest.mark.parametrize("width, height", [(200, 120), (90, 161), (4000, 3000), (37, 1001)])
def test_reshaped_size_matches_the_processor(sam_dir, width, height):
    from transformers import SamImageProcessor

    processor = SamImageProcessor.from_pretrained(sam_dir)
    rh, rw = processor(images=np.zeros((height, width, 3), np.uint8), return_tensors="pt")["reshaped_input_sizes"][0]
    assert reshaped_size(Size(width, height), 128) == (int(rh), int(rw))


# -- known right answer: a decoder whose mask is the prompted box ---------------------------------


def _box_decoder(extent: tuple[int, int] = (128, 128), square: int = 128, cells: int = 32):
    """A stand-in for the decoder: logit +1 in the low-res cells of the padded square whose centres
    lie inside the prompted box (in the model's frame), -1 elsewhere. A box edge on the image's edge
    (``extent``: the reshaped width, height) runs on through the padding, as the mask of an object
    cut by the frame would: otherwise bilinear upsampling rounds the band's corners there."""
    centres = (torch.arange(cells, dtype=torch.float32) + 0.5) * square / cells

    def forward(*, image_embeddings, input_boxes, multimask_output, **kwargs):
        x0, y0, x1, y1 = input_boxes[0].float().cpu().unbind(-1)
        x1 = torch.where(x1 >= extent[0], float(square), x1)
        y1 = torch.where(y1 >= extent[1], float(square), y1)
        inside_x = (centres >= x0[:, None]) & (centres <= x1[:, None])
        inside_y = (centres >= y0[:, None]) & (centres <= y1[:, None])
        logits = torch.where(inside_y[:, :, None] & inside_x[:, None, :], 1.0, -1.0)
        return types.SimpleNamespace(pred_masks=logits[None, :, None])

    return forward


@pytest.mark.parametrize(
    "width, height, box",
    [
        # Landscape 256 x 128 -> reshaped 128 x 64 (scale 1/2): cells are 4 model px = 8 image px.
        (256, 128, [32, 0, 160, 128]),  # a full-height column band: x 32..160
        # Portrait 64 x 256 -> reshaped 32 x 128 (scale 1/2): the padding is to the right.
        (64, 256, [0, 64, 64, 192]),  # a full-width row band: y 64..192
    ],
)
def test_known_mask_lands_on_box_pixels(sam_dir, monkeypatch, width, height, box):
    """Boxes scale by reshaped / original and masks are cut from the padded square before scaling
    back: a decoder returning the prompted box must give back exactly the box's pixels (bands, so
    that bilinear corner rounding does not apply), never anything in the padding."""
    segmenter = SamSegmenter.from_pretrained(str(sam_dir))
    rh, rw = reshaped_size(Size(width, height), 128)
    monkeypatch.setattr(segmenter.model, "forward", _box_decoder((rw, rh)))
    embedding = SamEmbedding(None, (), Size(width, height))
    (rle,) = segmenter.predict(embedding, np.array([box], dtype=float))
    x0, y0, x1, y1 = box
    expected = np.zeros((height, width), dtype=bool)
    expected[y0:y1, x0:x1] = True
    np.testing.assert_array_equal(rle_to_mask(rle), expected)


def test_many_boxes_are_chunked_and_keep_order(sam_dir, monkeypatch):
    segmenter = SamSegmenter.from_pretrained(str(sam_dir))
    segmenter.max_boxes_per_call = 2
    calls = []
    forward = _box_decoder((128, 64))
    monkeypatch.setattr(segmenter.model, "forward",
                        lambda **kw: calls.append(kw["input_boxes"].shape[1]) or forward(**kw))
    boxes = np.array([[0, 8 * i, 256, 8 * i + 16] for i in range(5)], dtype=float)
    masks = [rle_to_mask(r) for r in segmenter.predict(SamEmbedding(None, (), Size(256, 128)), boxes)]
    assert calls == [2, 2, 1]
    for (_, y0, _, y1), mask in zip(boxes.astype(int), masks):
        assert mask[y0:y1].all() and mask.sum() == (y1 - y0) * 256


def test_no_boxes_gives_empty_list(sam_dir):
    segmenter = SamSegmenter.from_pretrained(str(sam_dir))
    (embedding,) = segmenter.embed(model_inputs(segmenter.preprocessor, [_image(64, 48)]), [Size(64, 48)])
    assert segmenter.predict(embedding, np.zeros((0, 4))) == []


# -- loading --------------------------------------------------------------------------------------


def test_other_families_are_refused(tiny_sam2):
    with pytest.raises(ModelLoadError, match="not SAM v1 or SAM-HQ"):
        SamSegmenter.from_pretrained(str(tiny_sam2))


def test_missing_checkpoint_raises_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError):
        SamSegmenter.from_pretrained(str(tmp_path / "no-such-dir"))


@pytest.mark.parametrize("hq", [False, True])
def test_full_size_base_is_the_default_architecture(hq):
    """transformers' SamConfig / SamHQConfig defaults are ViT-B; our builder must match them."""
    from transformers import SamConfig, SamHQConfig

    from autolabel.testing.sam_v1_checkpoint import FULL_SIZE_SAM, sam_config

    default = (SamHQConfig if hq else SamConfig)().to_dict()
    assert sam_config(hq=hq, **FULL_SIZE_SAM["vit-base"]).to_dict() == default
