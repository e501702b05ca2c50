"""Video exports load in their readers: pycocotools, a MOT reader, ElementTree (CVAT 1.1 layout)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from autolabel.errors import ConfigError
from autolabel.testing.video_scenes import label_clip, two_movers, write_clip
from autolabel.video.decode import FrameSelection
from autolabel.video.export import VIDEO_FORMATS, export_video_run
from autolabel.video.store import open_video_store

SCENE = two_movers(frames=12, late_first=5)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Every second frame of a clip, keyframes every 2 labelled frames; the blue track rejected."""
    root = tmp_path_factory.mktemp("video-run")
    clip = write_clip(root / "movers.mp4", SCENE)
    label_clip(clip, root / "run", keyframe_every=2, selection=FrameSelection(every=2))
    return root / "run"


def read_mot(path):
    """A MOT Challenge gt.txt reader: frame, id, left, top, width, height, conf, class, visibility."""
    rows = []
    for line in path.read_text().splitlines():
        frame, tid, x, y, w, h, conf, cls, vis = line.split(",")
        rows.append((int(frame), int(tid), float(x), float(y), float(w), float(h), int(conf), int(cls), float(vis)))
    return rows


def test_mot_gt(run_dir, tmp_path):
    out = export_video_run(run_dir, "mot", tmp_path / "mot")
    rows = read_mot(out / "gt" / "gt.txt")
    assert [(r[0], r[1]) for r in rows] == sorted((r[0], r[1]) for r in rows)
    red = [r for r in rows if r[1] == 1]
    assert [r[0] for r in red] == [1, 3, 5, 7, 9, 11]  # source frames 0, 2, ... counted from 1
    for frame, _, x, y, w, h, _, cls, _ in red:
        x0, y0, x1, y1 = SCENE.shapes[0].box(frame - 1)
        assert (x, y, w, h) == pytest.approx((x0, y0, x1 - x0, y1 - y0), abs=1) and cls == 1
    assert {r[1] for r in rows} == {1, 2, 3}
    assert "frameRate=10" in (out / "seqinfo.ini").read_text()


def test_cvat_video_xml(run_dir, tmp_path):
    out = export_video_run(run_dir, "cvat-video", tmp_path / "cvat")
    root = ET.parse(out / "annotations.xml").getroot()
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    task = root.find("meta/task")
    assert task.findtext("mode") == "interpolation" and task.findtext("frame_filter") == "step=2"
    assert [e.findtext("name") for e in task.find("labels")] == ["red", "green", "blue"]
    tracks = root.findall("track")
    assert [t.get("label") for t in tracks] == ["red", "green", "blue"]
    boxes = tracks[0].findall("box")
    assert [int(b.get("frame")) for b in boxes] == [0, 2, 4, 6, 8, 10]
    assert all(b.get("keyframe") == "1" and b.get("outside") == "0" for b in boxes)
    assert float(boxes[1].get("xtl")) == pytest.approx(SCENE.shapes[0].box(2)[0], abs=1)


def test_cvat_track_end_is_an_outside_box(tmp_path):
    from autolabel.testing.video_scenes import RED, Scene, Shape

    from autolabel.geometry import Size

    scene = Scene(Size(48, 32), (Shape(RED, 2, 2, 8, 8, dx=1, last=2),), 5)
    clip = write_clip(tmp_path / "short.mp4", scene)
    label_clip(clip, tmp_path / "run", keyframe_every=10)
    root = ET.parse(export_video_run(tmp_path / "run", "cvat-video", tmp_path / "cvat") / "annotations.xml").getroot()
    boxes = root.find("track").findall("box")
    assert [(b.get("frame"), b.get("outside")) for b in boxes] == [("0", "0"), ("1", "0"), ("2", "0"), ("3", "1")]


def test_coco_video_loads_in_pycocotools(run_dir, tmp_path):
    from pycocotools.coco import COCO

    with open_video_store(run_dir) as store:
        store.set_track_review(3, "rejected")
    try:
        out = export_video_run(run_dir, "coco-video", tmp_path / "coco")
    finally:
        with open_video_store(run_dir) as store:
            store.set_track_review(3, "pending")
    coco = COCO(str(out / "annotations.json"))
    document = json.loads((out / "annotations.json").read_text())
    assert document["videos"][0]["name"] == "movers.mp4"
    assert [t["id"] for t in document["tracks"]] == [1, 2]  # the rejected track is left out
    images = coco.loadImgs(coco.getImgIds())
    assert [im["frame_index"] for im in images] == [0, 2, 4, 6, 8, 10]
    assert all(im["video_id"] == 1 for im in images)
    for im in images:
        pixels = np.asarray(Image.open(out / im["file_name"]))
        assert pixels.shape == (64, 96, 3)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[images[2]["id"]]))
    assert sorted(a["track_id"] for a in anns) == [1, 2]
    red = next(a for a in anns if a["track_id"] == 1)
    assert coco.annToMask(red).sum() == 16 * 12
    assert red["bbox"] == pytest.approx([12, 8, 16, 12], abs=1)  # source frame 4


def test_yolo_per_frame(run_dir, tmp_path):
    out = export_video_run(run_dir, "yolo-video", tmp_path / "yolo")
    labels = sorted((out / "labels").glob("*.txt"))
    assert [p.stem for p in labels] == [f"movers_{i:06d}" for i in (0, 2, 4, 6, 8, 10)]
    assert sorted(p.stem for p in (out / "images").glob("*.jpg")) == [p.stem for p in labels]
    first = [line.split() for line in labels[0].read_text().splitlines()]
    cls, cx, cy, w, h = first[0]
    assert cls == "0" and float(cx) == pytest.approx(12 / 96, abs=0.01) and float(w) == pytest.approx(16 / 96, abs=0.01)
    assert '0: "red"' in (out / "data.yaml").read_text()


def test_exports_are_deterministic(run_dir, tmp_path):
    for fmt in VIDEO_FORMATS:
        a = export_video_run(run_dir, fmt, tmp_path / f"{fmt}-a")
        b = export_video_run(run_dir, fmt, tmp_path / f"{fmt}-b")
        files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
        assert not any(p.name.startswith(".tmp-") for p in a.rglob("*"))


def test_unknown_format_and_empty_folder(run_dir, tmp_path):
    with pytest.raises(ConfigError):
        export_video_run(run_dir, "pascal", tmp_path / "x")
    with pytest.raises(ConfigError):
        export_video_run(tmp_path / "nothing", "mot", tmp_path / "x")
    assert not (tmp_path / "nothing").exists()
