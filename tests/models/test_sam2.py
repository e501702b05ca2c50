"""SAM2: region-limited masks equal the plain transformers recipe and land on the right pixels."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel import geometry
from autolabel.errors import ModelLoadError
from autolabel.geometry import rle_to_mask
from autolabel.models import masks as masks_module
from autolabel.models import sam2 as sam2_module
from autolabel.geometry import Size
from autolabel.models.base import model_inputs
from autolabel.models.sam2 import Sam2Segmenter
from sam_recipe import recipe_masks


@pytest.fixture(scope="module", autouse=True)
def _offline():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def sam2_dir(tmp_path_factory) -> Path:
    """A 128 px SAM2 with random weights (32x32 low-res masks), saved as a checkpoint directory."""
    from autolabel.testing.sam2_checkpoint import build_sam2_checkpoint

    return build_sam2_checkpoint(tmp_path_factory.mktemp("sam2-tiny"))


@pytest.fixture(scope="module")
def segmenter(sam2_dir) -> Sam2Segmenter:
    return Sam2Segmenter.from_pretrained(str(sam2_dir), exact=True)


def _embed(segmenter, images):
    return segmenter.embed(model_inputs(segmenter.preprocessor, images), [Size(*im.size) for im in images])


def _segment(segmenter, image, boxes):
    (embedding,) = _embed(segmenter, [image])
    return segmenter.predict(embedding, boxes)


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _masks(rles: list[dict]) -> list[np.ndarray]:
    return [rle_to_mask(rle) for rle in rles]


def _recipe_masks(path: Path, image: Image.Image, boxes: np.ndarray, clicks=None) -> np.ndarray:
    """The recipe from the transformers docs: processor -> model -> post_process_masks. (N, H, W)."""
    from transformers import Sam2Model, Sam2Processor

    return recipe_masks(Sam2Model, Sam2Processor, path, image, boxes, clicks)


# -- equality with the recipe ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "width, height",
    [
        (200, 120),  # landscape
        (90, 160),  # portrait, and 90 px is not a multiple of the 32-cell mask grid
    ],
)
def test_masks_equal_plain_recipe(segmenter, sam2_dir, width, height):
    image = _image(width, height)
    boxes = np.array(
        [
            [10, 20, 60, 90],
            [0, 0, width, height],  # whole image
            [0.5 * width, 0.3 * height, 0.9 * width, 0.95 * height],  # fractional pixels
            [5, 5, 12, 9],  # tiny
        ]
    )
    ours = _masks(_segment(segmenter, image, boxes))
    expected = _recipe_masks(sam2_dir, image, boxes)
    assert len(ours) == len(boxes)
    for mask, ref in zip(ours, expected):
        assert mask.shape == (height, width)
        np.testing.assert_array_equal(mask, ref)  # pixel-exact, not just a high IoU


def _clicks(width: int, height: int) -> list[list[tuple[float, float, int]]]:
    """Two boxes' clicks: a positive and a negative point each, at fractional pixels too."""
    return [[(30, 50, 1), (12, 22, 0)], [(0.7 * width, 0.6 * height, 1), (0.55 * width + 0.5, 0.9 * height, 0)]]


@pytest.mark.parametrize("width, height", [(200, 120), (90, 160)])
def test_points_refine_masks_as_the_plain_recipe(segmenter, sam2_dir, width, height):
    image = _image(width, height)
    boxes = np.array([[10, 20, 60, 90], [0.5 * width, 0.3 * height, 0.9 * width, 0.95 * height]])
    (embedding,) = _embed(segmenter, [image])
    ours = _masks(segmenter.predict(embedding, boxes, _clicks(width, height)))
    expected = _recipe_masks(sam2_dir, image, boxes, _clicks(width, height))
    assert len(ours) == len(boxes)
    for mask, ref in zip(ours, expected):
        np.testing.assert_array_equal(mask, ref)
    box_only = _masks(segmenter.predict(embedding, boxes))
    assert any(not np.array_equal(a, b) for a, b in zip(ours, box_only))  # the clicks count


def test_boxes_without_points_keep_their_box_only_masks(segmenter):
    image = _image(200, 120)
    boxes = np.array([[10, 20, 60, 90], [100, 36, 180, 114], [5, 5, 150, 100]])
    clicks = _clicks(200, 120)
    (embedding,) = _embed(segmenter, [image])
    plain, refined, other = segmenter.predict(embedding, boxes, [[], clicks[1], [(20, 30, 1)]])
    assert plain == segmenter.predict(embedding, boxes[:1])[0]
    assert refined == segmenter.predict(embedding, boxes[1:2], clicks[1:])[0]
    assert other == segmenter.predict(embedding, boxes[2:], [[(20, 30, 1)]])[0]
    assert segmenter.predict(embedding, boxes, [[], [], []]) == segmenter.predict(embedding, boxes)


@pytest.mark.parametrize("points, match", [
    ([[(1, 2, 1)]], "points for 1 boxes but 2"),
    ([[(1, 2, 2)], []], "1 .*or 0"),
    ([[(1, np.nan, 1)], []], "NaN"),
    ([[(1, 2)], []], "triples"),
])
def test_bad_points_raise(segmenter, points, match):
    (embedding,) = _embed(segmenter, [_image(64, 64)])
    with pytest.raises(ValueError, match=match):
        segmenter.predict(embedding, np.array([[0, 0, 10, 10], [5, 5, 20, 20]]), points)


# -- known right answer: a decoder whose mask is the prompted box ---------------------------------


def _box_decoder(segmenter: Sam2Segmenter):
    """A stand-in for the model call: logit +1 in the low-res cells whose centres lie inside each
    prompted box (as the model receives it, in the stretched square's pixels), -1 elsewhere."""
    square = segmenter.image_size
    cells = square // 4  # low-res mask side
    centres = (torch.arange(cells, dtype=torch.float32) + 0.5) * square / cells

    def forward(*, image_embeddings, input_boxes, multimask_output, **kwargs):
        assert multimask_output is False
        x0, y0, x1, y1 = input_boxes[0].cpu().unbind(-1)  # each (n,)
        inside_x = (centres >= x0[:, None]) & (centres <= x1[:, None])
        inside_y = (centres >= y0[:, None]) & (centres <= y1[:, None])
        logits = torch.where(inside_y[:, :, None] & inside_x[:, None, :], 1.0, -1.0)
        return types.SimpleNamespace(pred_masks=logits[None, :, None])

    return forward, cells


def _cell_band(axis: str, start: int, stop: int, width: int, height: int, cells: int) -> np.ndarray:
    """A box spanning the whole image along one axis, with its other two edges on the low-res cell
    grid stretched over the image, in whole pixels. Its mask must be exactly the box's pixels.

    (A box limited on both axes would not do: bilinear upsampling of a +-1 rectangle rounds its
    corners, so only bands have an exact pixel answer.)"""
    if axis == "x":
        box = np.array([start * width / cells, 0, stop * width / cells, height])
    else:
        box = np.array([0, start * height / cells, width, stop * height / cells])
    assert np.all(box == np.round(box)), f"cells {start}..{stop} do not map to whole pixels"
    return box


def _box_mask(box: np.ndarray, width: int, height: int) -> np.ndarray:
    x0, y0, x1, y1 = np.round(box).astype(int)
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.mark.parametrize(
    "width, height, x_cells, y_cells",
    [
        (200, 120, (4, 20), (4, 24)),  # landscape: 6.25 x 3.75 px per cell -> x 25..125, y 15..90
        (96, 160, (5, 25), (6, 26)),  # portrait: 3 x 5 px per cell -> x 15..75, y 30..130
    ],
)
def test_known_mask_lands_on_box_pixels(segmenter, monkeypatch, width, height, x_cells, y_cells):
    """Boxes are stretched to the square per axis and masks stretched back per axis: a decoder
    that returns the prompted box as its mask must give back exactly the box's pixels."""
    forward, cells = _box_decoder(segmenter)
    monkeypatch.setattr(segmenter.model, "forward", forward)
    embedding = sam2_module.ImageEmbedding(features=(), size=Size(width, height))
    boxes = np.stack([_cell_band("x", *x_cells, width, height, cells), _cell_band("y", *y_cells, width, height, cells)])
    for box, mask in zip(boxes, _masks(segmenter.predict(embedding, boxes))):
        np.testing.assert_array_equal(mask, _box_mask(box, width, height))


# -- boxes: none, many, order ---------------------------------------------------------------------


def test_no_boxes_gives_empty_list(segmenter):
    (embedding,) = _embed(segmenter, [_image(64, 48)])
    assert segmenter.predict(embedding, np.zeros((0, 4))) == []
    assert segmenter.predict(embedding, []) == []
    assert _segment(segmenter, _image(64, 48), np.zeros((0, 4))) == []


@pytest.mark.parametrize("bad", [np.zeros((3, 5)), np.zeros(4), np.array([[0, 0, np.nan, 1]])])
def test_bad_boxes_raise(segmenter, bad):
    embedding = sam2_module.ImageEmbedding(features=(), size=Size(10, 10))
    with pytest.raises(ValueError, match="boxes_xyxy"):
        segmenter.predict(embedding, bad)


def test_many_boxes_are_chunked_and_keep_order(sam2_dir, monkeypatch):
    width, height = 200, 120
    seg = Sam2Segmenter.from_pretrained(str(sam2_dir))
    seg.max_boxes_per_call = 3
    calls = []
    forward, cells = _box_decoder(seg)

    def counting_forward(**kwargs):
        calls.append(kwargs["input_boxes"].shape[1])
        return forward(**kwargs)

    # Cell edges on multiples of 4 map to whole pixels at 200 x 120 (25 x 15 px per 4 cells).
    rng = np.random.default_rng(1)
    boxes = np.stack([
        _cell_band("xy"[i % 2], *sorted(rng.choice(9, 2, replace=False) * 4), width, height, cells)
        for i in range(10)
    ])
    assert len({tuple(b) for b in boxes}) == 10  # distinct, so order mistakes show
    monkeypatch.setattr(seg.model, "forward", counting_forward)
    embedding = sam2_module.ImageEmbedding(features=(), size=Size(width, height))
    masks = _masks(seg.predict(embedding, boxes))
    assert calls == [3, 3, 3, 1]
    for box, mask in zip(boxes, masks):
        np.testing.assert_array_equal(mask, _box_mask(box, width, height))


def test_chunked_decoding_equals_one_call(sam2_dir, segmenter):
    image = _image(150, 100, seed=3)
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 1, (10, 2, 2)) * [150, 100]
    boxes = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)
    chunked = Sam2Segmenter.from_pretrained(str(sam2_dir))
    chunked.max_boxes_per_call = 4
    (embedding,) = _embed(segmenter, [image])
    for a, b in zip(_masks(segmenter.predict(embedding, boxes)), _masks(chunked.predict(embedding, boxes))):
        np.testing.assert_array_equal(a, b)


def test_batched_embed_equals_one_at_a_time(segmenter):
    images = [_image(200, 120, seed=4), _image(90, 160, seed=5)]
    batched = _embed(segmenter, images)
    single = [_embed(segmenter, [image])[0] for image in images]
    boxes = np.array([[10, 10, 80, 100], [0, 0, 90, 120]])
    for b, s, image in zip(batched, single, images):
        assert b.size == s.size == (image.width, image.height)
        for fb, fs in zip(b.features, s.features):
            torch.testing.assert_close(fb, fs, rtol=1e-4, atol=1e-5)
        for mb, ms in zip(_masks(segmenter.predict(b, boxes)), _masks(segmenter.predict(s, boxes))):
            assert geometry.mask_iou(mb, ms) > 0.999


# -- loading --------------------------------------------------------------------------------------


def test_pickle_only_checkpoint_is_refused(sam2_dir, tmp_path):
    """A directory with a pickled pytorch_model.bin and no safetensors is never unpickled."""
    from safetensors.torch import load_file

    for name in ("config.json", "processor_config.json"):
        (tmp_path / name).write_bytes((sam2_dir / name).read_bytes())
    torch.save(load_file(sam2_dir / "model.safetensors"), tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="SAM2 model"):
        Sam2Segmenter.from_pretrained(str(tmp_path))


def test_missing_checkpoint_raises_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError):
        Sam2Segmenter.from_pretrained(str(tmp_path / "no-such-dir"))


# -- memory on a large image ----------------------------------------------------------------------


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _peak_rss_growth_mib(fn) -> float:
    """Peak resident memory while ``fn`` runs, above what was resident before (Linux only: writing
    5 to /proc/self/clear_refs resets the high-water mark)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("cannot reset the RSS high-water mark here")
    before = _rss_kib("VmRSS")
    fn()
    return (_rss_kib("VmHWM") - before) / 1024


def test_large_image_small_boxes_stay_in_their_regions(segmenter, monkeypatch):
    """4000 x 3000 with small boxes: every mask is computed only in a region about its box (one
    low-res cell of margin), never over the frame."""
    width, height = 4000, 3000  # 125 x 93.75 px per low-res cell
    forward, cells = _box_decoder(segmenter)
    monkeypatch.setattr(segmenter.model, "forward", forward)
    regions = []
    real_region_to_rle = masks_module.region_to_rle

    def recording_region_to_rle(region, *args):
        regions.append(region.shape)
        return real_region_to_rle(region, *args)

    monkeypatch.setattr(masks_module, "region_to_rle", recording_region_to_rle)
    boxes = np.array([[500, 375, 1000, 750], [2500, 1125, 3000, 1500], [0, 2625, 500, 3000]], dtype=float)
    embedding = sam2_module.ImageEmbedding(features=(), size=Size(width, height))
    masks = _masks(segmenter.predict(embedding, boxes))
    cell_h, cell_w = int(np.ceil(height / cells)), int(np.ceil(width / cells))
    for box, mask, (rh, rw) in zip(boxes, masks, regions):
        expected = _box_mask(box, width, height)
        assert not (mask & ~expected).any()
        assert geometry.mask_iou(mask, expected) > 0.97  # bilinear rounds the corners (~2% here)
        assert rh <= box[3] - box[1] + 2 * cell_h and rw <= box[2] - box[0] + 2 * cell_w


def test_large_image_real_model_memory(segmenter):
    """The real decoder on a 12 MP image. Random weights give masks spread over the whole frame, the
    worst case for regions. post_process_masks would hold one float32 full-frame mask per box
    (8 x 46 MiB; it measured ~460 MiB of growth here); predict() must stay far below that."""
    width, height = 4000, 3000
    (embedding,) = _embed(segmenter, [_image(width, height, seed=6)])
    boxes = np.array([[100, 100, 400, 300], [2000, 1500, 2300, 1800]] * 4, dtype=float)
    out = []
    growth = _peak_rss_growth_mib(lambda: out.extend(segmenter.predict(embedding, boxes)))
    assert len(out) == 8 and all(rle["size"] == [height, width] for rle in out)
    full_frame_floats_mib = len(boxes) * height * width * 4 / 2**20
    assert growth < full_frame_floats_mib / 2, f"predict() grew resident memory by {growth:.0f} MiB"


def test_full_size_tiny_config_is_the_released_architecture():
    """transformers' Sam2Config defaults are facebook/sam2.1-hiera-tiny; our builder must match them."""
    from transformers import Sam2Config

    from autolabel.testing.sam2_checkpoint import FULL_SIZE_SAM2, sam2_config

    assert sam2_config(**FULL_SIZE_SAM2["hiera-tiny"]).to_dict() == Sam2Config().to_dict()
