"""``Sam2VideoPropagator`` equals transformers' own video recipe on tiny random checkpoints of each
family with SAM2-video's streaming API (SAM2, EdgeTAM, SAM 3 tracker)."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.testing.video_scenes import two_movers
from autolabel.video.decode import Frame
from autolabel.models.sam2_video import Propagator, Sam2VideoPropagator

RED_BOX, GREEN_BOX = [4, 8, 20, 20], [60, 4, 72, 16]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from autolabel.testing.sam2_video_checkpoint import build_sam2_video_checkpoint

    return build_sam2_video_checkpoint(tmp_path_factory.mktemp("sam2-video"))


# family -> (builder module, builder, model class, processor class)
FAMILIES = {
    "edgetam": ("edgetam_video_checkpoint", "build_edgetam_video_checkpoint", "EdgeTamVideoModel",
                "Sam2VideoProcessor"),
    "sam3_tracker": ("sam3_tracker_video_checkpoint", "build_sam3_tracker_video_checkpoint",
                     "Sam3TrackerVideoModel", "Sam3TrackerVideoProcessor"),
}


@pytest.fixture(scope="module", params=["edgetam", "sam3_tracker"])
def family_checkpoint(request, tmp_path_factory):
    """(checkpoint folder, plain model class, plain processor class) of each family."""
    import importlib

    import transformers

    module, builder, model_class, processor_class = FAMILIES[request.param]
    build = getattr(importlib.import_module(f"autolabel.testing.{module}"), builder)
    folder = build(tmp_path_factory.mktemp(request.param))
    return folder, getattr(transformers, model_class), getattr(transformers, processor_class)


@pytest.fixture(scope="module")
def loaded(checkpoint):
    """One loaded model for every test (it holds no video state; sessions do)."""
    propagator = Sam2VideoPropagator.from_pretrained(str(checkpoint))
    return propagator.model, propagator.processor


@pytest.fixture(scope="module")
def frames():
    scene = two_movers(frames=4)
    return [scene.pixels(i) for i in range(scene.frames)]


def plain_recipe(model, processor, frames, boxes_at: dict[int, dict[int, list]]):
    """The transformers streaming recipe: per frame, add that frame's new boxes, then run the model."""
    import torch

    session = processor.init_video_session(inference_device="cpu")
    out = []
    for i, pixels in enumerate(frames):
        inputs = processor(images=pixels, return_tensors="pt")
        if i in boxes_at:
            processor.add_inputs_to_inference_session(
                session, frame_idx=i, obj_ids=list(boxes_at[i]), input_boxes=[list(boxes_at[i].values())],
                original_size=inputs.original_sizes[0])
        with torch.inference_mode():
            output = model(inference_session=session, frame=inputs.pixel_values[0])
        masks = processor.post_process_masks([output.pred_masks], original_sizes=inputs.original_sizes)[0]
        present = output.object_score_logits.reshape(-1) > 0
        out.append({oid: (masks[k, 0] & present[k]).numpy() for k, oid in enumerate(output.object_ids)})
    return out


def ours(propagator, frames, boxes_at):
    out = []
    for i, pixels in enumerate(frames):
        frame = Frame(i, i / 10, pixels)
        masks = propagator.propagate(frame)
        masks.update(propagator.add(frame, boxes_at.get(i, {})))
        out.append(masks)
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for masks_a, masks_b in zip(a, b):
        assert sorted(masks_a) == sorted(masks_b)
        for oid in masks_a:
            np.testing.assert_array_equal(masks_a[oid], masks_b[oid])


@pytest.mark.parametrize("boxes_at", [
    {0: {1: RED_BOX, 2: GREEN_BOX}},  # both objects from the first frame
    {0: {1: RED_BOX}, 2: {2: GREEN_BOX}},  # a second object joins mid-stream
], ids=["start", "late"])
def test_equals_the_transformers_video_recipe(checkpoint, frames, boxes_at):
    check_against_recipe(checkpoint, frames, boxes_at)


def test_edgetam_and_sam3_tracker_equal_their_recipes(family_checkpoint, frames):
    """The other families, on the harder case only (a second object joins mid-stream)."""
    folder, model_class, processor_class = family_checkpoint
    check_against_recipe(folder, frames, {0: {1: RED_BOX}, 2: {2: GREEN_BOX}}, model_class, processor_class)


def check_against_recipe(checkpoint, frames, boxes_at, model_class=None, processor_class=None):
    import transformers

    model_class = model_class or transformers.Sam2VideoModel
    processor_class = processor_class or transformers.Sam2VideoProcessor
    propagator = Sam2VideoPropagator.from_pretrained(str(checkpoint))
    assert isinstance(propagator, Propagator) and isinstance(propagator.model, model_class)
    plain_model = model_class.from_pretrained(checkpoint).eval()
    expected = plain_recipe(plain_model, processor_class.from_pretrained(checkpoint), frames, boxes_at)
    assert_same(ours(propagator, frames, boxes_at), expected)
    some = expected[-1][1]
    assert 0 < some.sum() < some.size  # the masks say something


def test_forgetting_an_object_leaves_the_others_unchanged(loaded, frames):
    boxes_at = {0: {1: RED_BOX, 2: GREEN_BOX}}
    full = ours(Sam2VideoPropagator(*loaded), frames, boxes_at)
    propagator = Sam2VideoPropagator(*loaded)
    out = []
    for i, pixels in enumerate(frames):
        frame = Frame(i, i / 10, pixels)
        masks = propagator.propagate(frame)
        masks.update(propagator.add(frame, boxes_at.get(i, {})))
        if i == 1:
            propagator.forget([1])
        out.append(masks)
    assert sorted(out[2]) == [2]
    for i in range(len(frames)):
        np.testing.assert_array_equal(out[i][2], full[i][2])


def test_the_session_stays_bounded(loaded):
    propagator = Sam2VideoPropagator(*loaded)
    propagator._keep = 2  # what a model reading back 2 frames keeps; the default (16) needs a longer clip
    scene = two_movers(frames=5)
    for i in range(scene.frames):
        frame = Frame(i, i / 10, scene.pixels(i))
        propagator.propagate(frame)
        if i == 0:
            propagator.add(frame, {1: np.array(RED_BOX)})
    session = propagator._session
    assert list(session.processed_frames) == [4]
    kept = session.output_dict_per_obj[0]["non_cond_frame_outputs"]
    assert sorted(kept) == [3, 4]


def test_fresh_shares_the_model_and_starts_its_own_session(checkpoint, frames):
    first = Sam2VideoPropagator.from_pretrained(str(checkpoint))
    boxes = {0: {1: RED_BOX}}
    masks = ours(first, frames, boxes)
    second = first.fresh()
    assert second.model is first.model and second._session is None
    assert_same(ours(second, frames, boxes), masks)


def test_a_checkpoint_that_cannot_track_is_refused(tmp_path):
    from autolabel.errors import ModelLoadError
    from autolabel.testing.owlv2_checkpoint import build_owlv2_checkpoint

    with pytest.raises(ModelLoadError, match="not a video model that can track"):
        Sam2VideoPropagator.from_pretrained(str(build_owlv2_checkpoint(tmp_path / "owl")))


def test_an_image_only_sam2_checkpoint_is_refused_with_what_to_give_instead(tmp_path):
    from autolabel.errors import ModelLoadError
    from autolabel.testing.sam2_checkpoint import build_sam2_checkpoint

    with pytest.raises(ModelLoadError, match=r"Tracking needs a video checkpoint, e.g. facebook/sam2.1-hiera-tiny \(--video-model"):
        Sam2VideoPropagator.from_pretrained(str(build_sam2_checkpoint(tmp_path / "sam2")))
