"""Mask propagators: follow objects from frame to frame, forward in time.

``Propagator`` is what the tracker needs; ``Sam2VideoPropagator`` implements it with transformers'
SAM2-video models in streaming mode (frames are fed one at a time and released once processed, so
a session's memory stays bounded however long the clip): ``Sam2VideoModel``, and
``EdgeTamVideoModel`` and ``Sam3TrackerVideoModel``, which share its session and streaming API
(``VIDEO_FAMILIES``: the checkpoint's ``model_type`` picks the classes). Masks are ``(h, w)`` bool arrays at the
frame's size; an empty mask means the object is not visible (SAM2's object score says absent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from autolabel.errors import ModelLoadError

if TYPE_CHECKING:  # a type only: models/ does not import the video package
    from autolabel.video.decode import Frame

#: model_type -> (model class, processor class, name in messages) of the video models with
#: SAM2-video's streaming API. Image checkpoints of these families carry the memory weights too (the
#: released ones do).
VIDEO_FAMILIES = {
    **dict.fromkeys(("sam2_video", "sam2"), ("Sam2VideoModel", "Sam2VideoProcessor", "SAM2 video")),
    **dict.fromkeys(("edgetam_video", "edgetam"), ("EdgeTamVideoModel", "Sam2VideoProcessor", "EdgeTAM video")),
    **dict.fromkeys(("sam3_tracker_video", "sam3_tracker", "sam3_video"),
                    ("Sam3TrackerVideoModel", "Sam3TrackerVideoProcessor", "SAM 3 tracker video")),
}


@runtime_checkable
class Propagator(Protocol):
    """Follows objects through a stream of frames; object ids are the caller's (track ids)."""

    def propagate(self, frame: Frame) -> dict[int, np.ndarray]:
        """Advance to ``frame`` (the next frame of the stream): the mask of every followed object."""

    def add(self, frame: Frame, boxes: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Start following new objects from their ``xyxy`` boxes on ``frame`` (the frame last given to
        ``propagate``); their masks there."""

    def forget(self, object_ids) -> None:
        """Stop following these objects (their tracks ended)."""


class Sam2VideoPropagator:
    """A SAM2-video model (SAM2, EdgeTAM or SAM 3 tracker, ``VIDEO_FAMILIES``) in streaming mode
    behind ``Propagator``.

    Session frame numbers count the frames given to ``propagate`` (the selected frames, consecutive
    for SAM2's memory). After each frame the session keeps only what the next ones can read: the
    current frame's pixels, each object's conditioning output and the last
    ``max_object_pointers_in_encoder`` outputs (which cover the ``num_maskmem`` memory frames).
    """

    def __init__(self, model, processor, name: str = "sam2-video", device: str = "cpu", dtype=None):
        import torch

        self.model = model
        self.processor = processor
        self.name = name
        self.device = device
        self.dtype = dtype or torch.float32
        self._keep = max(int(model.config.max_object_pointers_in_encoder), int(model.config.num_maskmem))
        self._session = None
        self._position = -1
        self._pixels = None  # the current frame's model input (``add`` runs on it again)
        self._size = None

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str = "cpu", precision: str = "auto"):
        """Load a SAM2, EdgeTAM or SAM 3 tracker video checkpoint (by its ``model_type``) through
        the project's one load path."""
        import transformers

        from autolabel.models.loading import load_checkpoint
        from autolabel.models.precision import resolve_precision
        from autolabel.models.registry import checkpoint_model_type

        try:
            model_type = checkpoint_model_type(str(name_or_path))
        except ModelLoadError:
            model_type = "sam2_video"  # unreadable here: the load below says why, in SAM2's terms
        if model_type not in VIDEO_FAMILIES:
            raise ModelLoadError(f"{name_or_path} is a {model_type!r} checkpoint, not a video model that can track "
                                 f"(use SAM2, EdgeTAM or SAM 3: {', '.join(sorted(VIDEO_FAMILIES))})")
        model_class, processor_class, family = VIDEO_FAMILIES[model_type]
        plan = resolve_precision(precision, device)
        try:
            model, processor = load_checkpoint(getattr(transformers, model_class),
                                               getattr(transformers, processor_class), name_or_path, family, plan)
        except ModelLoadError as exc:
            if model_type.endswith("_video"):
                raise
            # An image-model checkpoint (e.g. one saved for boxes -> masks) usually lacks the memory
            # weights and video processor that tracking needs; say what to give instead.
            raise ModelLoadError(f"{exc}. Tracking needs a video checkpoint, e.g. facebook/sam2.1-hiera-tiny "
                                 "(--video-model; the web UI tracks with its --sam-model)") from exc
        return cls(model.to(device), processor, str(name_or_path), device, plan.dtype)

    def fresh(self) -> "Sam2VideoPropagator":
        """A propagator for another clip on the same loaded model (a session of its own)."""
        return Sam2VideoPropagator(self.model, self.processor, self.name, self.device, self.dtype)

    # -- Propagator -----------------------------------------------------------------------------------

    def propagate(self, frame: Frame) -> dict[int, np.ndarray]:
        import torch

        if self._session is None:
            self._session = self.processor.init_video_session(inference_device=self.device, dtype=self.dtype)
        self._position += 1
        inputs = self.processor(images=frame.pixels, device=self.device, return_tensors="pt")
        self._pixels = inputs.pixel_values[0]
        self._size = tuple(int(v) for v in inputs.original_sizes[0])
        if self._session.get_obj_num() == 0:
            self._session.add_new_frame(self._pixels, self._position)
            self._release()
            return {}
        with torch.inference_mode():
            output = self.model(inference_session=self._session, frame=self._pixels, frame_idx=self._position)
        self._release()
        return self._masks(output)

    def add(self, frame: Frame, boxes: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        import torch

        if not boxes:
            return {}
        if self._pixels is None:
            raise RuntimeError("add() needs a frame given to propagate() first")
        ids = list(boxes)
        self.processor.add_inputs_to_inference_session(
            # a copy: the session keeps the list and empties it as the objects are processed
            self._session, frame_idx=self._position, obj_ids=list(ids),
            input_boxes=[[np.asarray(boxes[i], dtype=np.float64).tolist() for i in ids]],
            original_size=self._size,
        )
        with torch.inference_mode():
            output = self.model(inference_session=self._session, frame=self._pixels, frame_idx=self._position)
        masks = self._masks(output)
        return {i: masks[i] for i in ids}

    def forget(self, object_ids) -> None:
        gone = set(object_ids)
        if self._session is not None and gone & set(self._session.obj_ids):
            _remove_objects(self._session, gone)

    # -- internals ------------------------------------------------------------------------------------

    def _masks(self, output) -> dict[int, np.ndarray]:
        masks = self.processor.post_process_masks([output.pred_masks], original_sizes=[self._size],
                                                  binarize=False)[0]
        present = (output.object_score_logits.reshape(-1) > 0).cpu().numpy()
        binary = (masks[:, 0] > 0).cpu().numpy()
        return {int(obj_id): binary[i] & bool(present[i]) for i, obj_id in enumerate(output.object_ids)}

    def _release(self) -> None:
        """Drop frames and outputs the next frames will not read (bounded memory on long clips)."""
        session, now = self._session, self._position
        for index in [i for i in session.processed_frames if i < now]:
            del session.processed_frames[index]
        oldest = now - self._keep + 1  # the next frame reads back this many frames
        for obj_idx, outputs in session.output_dict_per_obj.items():
            for index in [i for i in outputs["non_cond_frame_outputs"] if i < oldest]:
                del outputs["non_cond_frame_outputs"][index]
            tracked = session.frames_tracked_per_obj[obj_idx]
            for index in [i for i in tracked if i < oldest]:
                del tracked[index]


def _remove_objects(session, gone: set[int]) -> None:
    """Remove objects from a transformers video session: its per-object state is keyed by position
    (0..n-1), so the survivors are renumbered in order."""
    keep = [(idx, obj_id) for idx, obj_id in session._obj_idx_to_id.items() if obj_id not in gone]
    per_object = ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj", "frames_tracked_per_obj")
    renumbered = {name: {new: getattr(session, name)[old] for new, (old, _) in enumerate(keep)} for name in per_object}
    session._obj_id_to_idx.clear()
    session._obj_idx_to_id.clear()
    for new, (_, obj_id) in enumerate(keep):
        session._obj_id_to_idx[obj_id] = new
        session._obj_idx_to_id[new] = obj_id
    session.obj_ids = [obj_id for _, obj_id in keep]
    for name, values in renumbered.items():
        setattr(session, name, values)
    session.obj_with_new_inputs = [i for i in session.obj_with_new_inputs if i not in gone]
