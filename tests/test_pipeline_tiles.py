"""Sliced inference through the engine: a controlled detector whose right answer is known shows the
tile coordinates exact; tiny checkpoints show the real families run tiled."""


import numpy as np
import pytest
from PIL import Image

from autolabel.errors import ConfigError
from autolabel.geometry import Size
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig, Labeler
from autolabel.testing.blob_detector import BlobDetector
from autolabel.tiling import AutoTiling, Tiling


ONT = Ontology.from_prompts(["blob"])
CONFIG = DetectConfig(threshold=0.0)
SMALL = [200, 150, 212, 162]  # 12 px: 3.8 px in the 128 px view of the whole image, unseen there
LARGE = [20, 20, 120, 120]  # seen in the whole image; cut by several tiles' inner edges


def _image(size=(400, 300), squares=(SMALL, LARGE)) -> np.ndarray:
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    for x0, y0, x1, y1 in squares:
        pixels[y0:y1, x0:x1] = 255
    return pixels


def _labeler(tiles, **kwargs):
    detector = BlobDetector(side=128, min_side=6)
    return Labeler(ONT, detector=detector, config=CONFIG, device="cpu", tiles=tiles, **kwargs), detector


def test_tiles_find_small_objects_at_exact_coordinates_and_large_ones_once():
    # 4x4 tiles of 118 x 89 px: no tile is shrunk, so a tile's box is exact to the pixel.
    dets = _labeler(Tiling(4, 4))[0].label_images([_image()])[0]
    assert len(dets) == 2
    small = dets.xyxy[np.argmin(dets.area)]
    np.testing.assert_array_equal(small, SMALL)
    np.testing.assert_allclose(dets.xyxy[np.argmax(dets.area)], LARGE, atol=4)  # from the 0.32x whole view
    untiled = _labeler(None)[0].label_images([_image()])[0]
    assert len(untiled) == 1 and untiled.area[0] > 5000  # without tiles only the large square


def test_objects_on_a_seam_are_found_once_whole():
    # Tiling(1, 2) on 200 x 120: tiles x in [0, 112) and [88, 200), unshrunk; 8 px squares are
    # unseen in the 0.64x whole view. One lies in the overlap (whole in both tiles: merged to one),
    # one crosses the left tile's inner edge at 112 (cut there, dropped; whole in the right tile).
    squares = ([96, 40, 104, 48], [108, 80, 116, 88])
    dets = _labeler(Tiling(1, 2, overlap=0.2))[0].label_images([_image(size=(200, 120), squares=squares)])[0]
    order = np.argsort(dets.xyxy[:, 0])
    np.testing.assert_array_equal(dets.xyxy[order], squares)


def test_a_batch_runs_every_tile_in_one_forward_pass_and_maps_each_image_back(tmp_path):
    from autolabel.pipeline import PreparedImage

    labeler, detector = _labeler(Tiling(4, 4))
    calls = []
    encode = detector.encode_images
    detector.encode_images = lambda x: calls.append(len(x)) or encode(x)
    paths = []
    for name, pixels in (("big.png", _image()), ("shifted.png", _image(squares=([300, 250, 312, 262],)))):
        Image.fromarray(pixels).save(tmp_path / name)
        paths.append(tmp_path / name)
    batch = [labeler.prepare(p) for p in paths]
    assert all(isinstance(p, PreparedImage) and len(p.tile_inputs) == 16 for p in batch)  # made on the CPU
    encoded = labeler.encode(batch)
    assert calls == [2 + 32] and encoded.tiles == [p.tiles for p in batch]
    first, second = labeler.finish(labeler.score(encoded))
    np.testing.assert_array_equal(first.xyxy[np.argmin(first.area)], SMALL)
    np.testing.assert_array_equal(second.xyxy, [[300, 250, 312, 262]])


def test_auto_tiles_only_images_larger_than_the_model_input():
    labeler, _ = _labeler("auto")
    assert labeler.tiles == AutoTiling()
    assert labeler.tile_boxes(Size(120, 100)) == []
    assert len(labeler.tile_boxes(Size(400, 300))) == 3 * 4  # tiles of about the 128 px input
    assert len(labeler.tile_boxes(Size(2000, 1500))) == 4 * 4  # capped
    small = labeler.label_images([_image(size=(120, 100), squares=([10, 10, 30, 30],))])[0]
    np.testing.assert_array_equal(small.xyxy, [[10, 10, 30, 30]])


def test_run_config_records_tiles_only_when_on():
    assert "tiles" not in _labeler(None)[0].run_config()
    assert _labeler("2x3:0.25")[0].run_config()["tiles"] == Tiling(2, 3, 0.25).to_dict()
    assert _labeler("auto")[0].run_config()["tiles"]["auto"] is True


def test_bad_tiles_and_detector_masks_are_refused():
    with pytest.raises(ConfigError, match="tiles must be"):
        _labeler("3")
    detector = BlobDetector()
    detector.yields_masks = True
    with pytest.raises(ConfigError, match="need a segmenter"):
        Labeler(ONT, detector=detector, mode="segment", tiles="auto")


def test_a_cached_encoding_made_without_tiles_is_encoded_again():
    plain, _ = _labeler(None)
    tiled, detector = _labeler(Tiling(4, 4))
    encoded = plain.encode([_prepared(_image())])  # as a UI caches it
    before = detector.forward_images
    dets = tiled.label(encoded)[0]
    assert detector.forward_images - before == 17 and len(dets) == 2


def _prepared(pixels):
    import torch

    from autolabel.pipeline import PreparedImage

    return PreparedImage("<image>", "", Size(pixels.shape[1], pixels.shape[0]), pixels=torch.from_numpy(pixels))


def test_tiled_owlv2_decodes_full_size_and_gives_boxes_in_the_image(tiny_owlv2, tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8)).save(path)
    plain = Labeler(ONT, model=str(tiny_owlv2), device="cpu", config=CONFIG)
    tiled = Labeler(ONT, model=str(tiny_owlv2), device="cpu", config=CONFIG, tiles="auto")
    assert plain.decode_side(Size(400, 300)) is not None and tiled.decode_side(Size(400, 300)) is None
    (dets,) = tiled.finish(tiled.launch([tiled.prepare(path)]))
    assert len(dets) > 0
    assert (dets.xyxy >= 0).all() and (dets.xyxy[:, 2] <= 400).all() and (dets.xyxy[:, 3] <= 300).all()


def test_tiled_segment_mode_masks_the_whole_image(tiny_owlv2, tiny_sam2):
    labeler = Labeler(ONT, model=str(tiny_owlv2), sam_model=str(tiny_sam2), mode="segment", device="cpu",
                      config=DetectConfig(threshold=0.0, max_detections=3), tiles=Tiling(2, 2))
    pixels = np.random.default_rng(1).integers(0, 255, (150, 200, 3), np.uint8)
    (dets,) = labeler.label_images([pixels])
    assert len(dets) == 3 and all(m["size"] == [150, 200] for m in dets.masks)
