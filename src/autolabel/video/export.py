"""Exports of a video run: MOT Challenge ``gt.txt``, CVAT for video 1.1 XML, COCO with video fields
(YouTube-VIS / TAO style) and YOLO per frame.

Every format covers the run's labelled frames in order and leaves out rejected tracks. Frame numbers
are the source's: MOT counts from 1 (``frame_index + 1``), CVAT and COCO's ``frame_index`` from 0.
Class ids are ontology index + 1 (MOT, COCO) or the index (YOLO), as in image exports. Files are
written atomically (temp + rename) and deterministically, the index file last; COCO and YOLO carry
JPEGs of the labelled frames, decoded again from the source.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from autolabel.errors import ConfigError
from autolabel.export.package import DirectorySink, json_bytes
from autolabel.geometry import rle_area
from autolabel.ontology import Ontology
from autolabel.video.decode import FrameSelection, VideoSource
from autolabel.video.store import StoredFrame, VideoStore, is_video_run, open_video_store

JPEG_QUALITY = 95


def export_video_run(run_dir: str | Path, fmt: str, out_dir: str | Path) -> Path:
    """Export the video run in ``run_dir`` as ``fmt`` (a key of ``VIDEO_FORMATS``) into ``out_dir``."""
    if fmt not in VIDEO_FORMATS:
        raise ConfigError(f"unknown video export format {fmt!r}: use {', '.join(VIDEO_FORMATS)}")
    if not is_video_run(run_dir):
        raise ConfigError(f"{run_dir} holds no video run")
    with open_video_store(run_dir) as store:
        if store.config is None:
            raise ConfigError(f"{run_dir}: the video run has not started")
        return VIDEO_FORMATS[fmt](store, DirectorySink(Path(out_dir)))


class _Run:
    """What every format reads: names, the clip, frames and their non-rejected labels."""

    def __init__(self, store: VideoStore):
        config = store.config
        self.store = store
        self.names = Ontology.from_data(config["ontology"]).names
        self.video = config["video"]
        self.source_path = Path(self.video["source"])
        self.frames = store.frames()
        self.tracks = [s.track for s in store.tracks(include_rejected=False)]

    def labels(self) -> Iterator[tuple[StoredFrame, object, np.ndarray]]:
        for frame in self.frames:
            dets, track_ids = self.store.labels(frame.position)
            yield frame, dets, track_ids

    def frame_name(self, frame: StoredFrame) -> str:
        return f"{self.source_path.stem}_{frame.index:06d}.jpg"

    def jpegs(self) -> Iterator[tuple[StoredFrame, bytes]]:
        """The labelled frames as JPEG bytes, decoded again with the run's frame selection."""
        from PIL import Image

        wanted = {f.index: f for f in self.frames}
        source = VideoSource(self.source_path)
        for frame in source.frames(FrameSelection(**self.video["selection"])):
            stored = wanted.get(frame.index)
            if stored is None:
                continue
            buffer = io.BytesIO()
            Image.fromarray(frame.pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
            yield stored, buffer.getvalue()
            if frame.index == self.frames[-1].index:
                return


def _xywh(box) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def _num(value: float) -> str:
    """Numbers as short as they are exact (``12`` not ``12.0``)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


# -- MOT Challenge ------------------------------------------------------------------------------------


def export_mot(store: VideoStore, sink: DirectorySink) -> Path:
    """``gt/gt.txt``: ``frame, id, left, top, width, height, conf, class, visibility`` per line, by
    frame then track; ``seqinfo.ini`` beside it."""
    run = _Run(store)
    lines = []
    for frame, dets, track_ids in run.labels():
        for i, tid in enumerate(track_ids.tolist()):
            x, y, w, h = _xywh(dets.xyxy[i])
            lines.append(f"{frame.index + 1},{tid},{_num(x)},{_num(y)},{_num(w)},{_num(h)},1,"
                         f"{int(dets.class_ids[i]) + 1},1")
    size = run.frames[0].size if run.frames else (0, 0)
    rate = _frame_rate(run.frames)
    seqinfo = (f"[Sequence]\nname={run.source_path.stem}\nimDir=img1\nframeRate={_num(rate)}\n"
               f"seqLength={run.frames[-1].index + 1 if run.frames else 0}\nimWidth={size[0]}\nimHeight={size[1]}\n"
               "imExt=.jpg\n")
    sink.write("seqinfo.ini", seqinfo.encode())
    sink.write("gt/gt.txt", "".join(line + "\n" for line in lines).encode())
    return sink.close()


def _frame_rate(frames: list[StoredFrame]) -> float:
    """Source frames per second, from the labelled frames' indices and times."""
    if len(frames) < 2 or frames[-1].timestamp <= frames[0].timestamp:
        return 30.0
    return (frames[-1].index - frames[0].index) / (frames[-1].timestamp - frames[0].timestamp)


# -- CVAT for video 1.1 -------------------------------------------------------------------------------


def export_cvat(store: VideoStore, sink: DirectorySink) -> Path:
    """``annotations.xml``: one ``<track>`` per track, a ``keyframe`` box on each labelled frame and
    an ``outside`` box on the labelled frame after each stretch of its frames (CVAT's end of a track,
    or a gap in a merged one)."""
    run = _Run(store)
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    last_index = run.frames[-1].index if run.frames else 0
    step = run.video["selection"].get("every") or 1
    for tag, text in (("name", run.source_path.name), ("size", str(last_index + 1)), ("mode", "interpolation"),
                      ("overlap", "0"), ("start_frame", "0"), ("stop_frame", str(last_index)),
                      ("frame_filter", f"step={step}" if step > 1 else "")):
        ET.SubElement(task, tag).text = text
    labels = ET.SubElement(task, "labels")
    for name in run.names:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "attributes")
    if run.frames:
        original = ET.SubElement(task, "original_size")
        ET.SubElement(original, "width").text = str(run.frames[0].size.width)
        ET.SubElement(original, "height").text = str(run.frames[0].size.height)
    boxes: dict[int, list[tuple[int, np.ndarray]]] = {}
    for frame, dets, track_ids in run.labels():
        for i, tid in enumerate(track_ids.tolist()):
            boxes.setdefault(tid, []).append((frame.position, dets.xyxy[i]))
    for number, track in enumerate(t for t in run.tracks if t.id in boxes):
        element = ET.SubElement(root, "track", id=str(number), label=run.names[track.class_id], source="auto")
        labelled = {position for position, _ in boxes[track.id]}
        for position, box in boxes[track.id]:
            _cvat_box(element, run.frames[position].index, box, outside=False)
            after = position + 1
            if after < len(run.frames) and after not in labelled:
                _cvat_box(element, run.frames[after].index, box, outside=True)
    ET.indent(root)
    sink.write("annotations.xml", b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8")
               + b"\n")
    return sink.close()


def _cvat_box(track: ET.Element, frame: int, box, *, outside: bool) -> None:
    x0, y0, x1, y1 = (_num(float(v)) for v in box)
    ET.SubElement(track, "box", frame=str(frame), keyframe="1", outside=str(int(outside)), occluded="0",
                  xtl=x0, ytl=y0, xbr=x1, ybr=y1, z_order="0")


# -- COCO (YouTube-VIS / TAO style) ----------------------------------------------------------------------


def export_coco(store: VideoStore, sink: DirectorySink) -> Path:
    """``images/`` (one JPEG per labelled frame) and ``annotations.json``: COCO plus ``videos``,
    ``tracks``, and per image ``video_id`` + ``frame_index``, per annotation ``track_id``."""
    run = _Run(store)
    names = {}
    for stored, data in run.jpegs():
        names[stored.position] = f"images/{run.frame_name(stored)}"
        sink.write(names[stored.position], data)
    size = run.frames[0].size if run.frames else (0, 0)
    images, annotations = [], []
    for frame, dets, track_ids in run.labels():
        image_id = frame.position + 1
        images.append({"id": image_id, "file_name": names.get(frame.position, f"images/{run.frame_name(frame)}"),
                       "width": frame.size.width, "height": frame.size.height, "video_id": 1,
                       "frame_index": frame.index, "frame_id": frame.position, "timestamp": round(frame.timestamp, 6)})
        for i, tid in enumerate(track_ids.tolist()):
            box = _xywh(dets.xyxy[i])
            mask = dets.masks[i] if dets.masks is not None else None
            area = float(rle_area(mask)) if mask else box[2] * box[3]
            annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(dets.class_ids[i]) + 1,
                          "bbox": [round(v, 2) for v in box], "area": area, "iscrowd": 0, "track_id": tid,
                          "video_id": 1}
            if not np.isnan(dets.scores[i]):
                annotation["score"] = round(float(dets.scores[i]), 6)
            if mask is not None:
                annotation["segmentation"] = mask
            annotations.append(annotation)
    document = {
        "info": {"description": f"autolabel video run of {run.source_path.name}"},
        "videos": [{"id": 1, "name": run.source_path.name, "width": size[0], "height": size[1],
                    "length": len(run.frames)}],
        "images": images,
        "annotations": annotations,
        "tracks": [{"id": t.id, "category_id": t.class_id + 1, "video_id": 1} for t in run.tracks],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(run.names)],
    }
    sink.write("annotations.json", json_bytes(document))
    return sink.close()


# -- YOLO per frame ----------------------------------------------------------------------------------------


def export_yolo(store: VideoStore, sink: DirectorySink) -> Path:
    """``images/*.jpg`` and ``labels/*.txt`` per labelled frame (``class cx cy w h``, normalised),
    ``data.yaml`` last."""
    run = _Run(store)
    for stored, data in run.jpegs():
        sink.write(f"images/{run.frame_name(stored)}", data)
    for frame, dets, _ in run.labels():
        width, height = frame.size
        lines = []
        for i in range(len(dets)):
            x, y, w, h = _xywh(dets.xyxy[i])
            lines.append(f"{int(dets.class_ids[i])} {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} "
                         f"{w / width:.6f} {h / height:.6f}")
        sink.write(f"labels/{Path(run.frame_name(frame)).stem}.txt", "".join(line + "\n" for line in lines).encode())
    names = "".join(f"  {i}: {json.dumps(name)}\n" for i, name in enumerate(run.names))  # JSON strings are YAML
    sink.write("data.yaml", f"path: .\ntrain: images\nval: images\nnames:\n{names}".encode())
    return sink.close()


VIDEO_FORMATS: dict[str, Callable[[VideoStore, DirectorySink], Path]] = {
    "mot": export_mot,
    "cvat-video": export_cvat,
    "coco-video": export_coco,
    "yolo-video": export_yolo,
}
