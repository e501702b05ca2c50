"""``import`` of Pascal VOC folders: our own export back, labelImg layouts, EXIF frames, broken XML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autolabel.errors import ConfigError
from autolabel.export import ExportOptions, export_dataset
from autolabel.export.voc import voc_box
from autolabel.geometry import mask_iou, rle_to_mask
from autolabel.importers import detect_format, import_dataset, load_dataset
from autolabel.store import open_store
from autolabel.testing.synthetic import CLASSES, detection_images, make_run, segmentation_images, stored_labels


def _image(path, size, orientation=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.new("RGB", size, (90, 120, 200)).save(path, exif=exif)
    return path


def _xml(path, filename, size, objects, extra=""):
    """A VOC annotation; ``objects``: (name, (xmin, ymin, xmax, ymax), difficult)."""
    body = "".join(f"<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox>"
                   + "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
                   + "</bndbox></object>" for name, box, difficult in objects)
    size_xml = "" if size is None else f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation>{extra}<filename>{filename}</filename>{size_xml}{body}</annotation>")
    return path


@pytest.mark.parametrize("make_images", [detection_images, segmentation_images])
def test_our_export_comes_back(tmp_path, make_images):
    store = make_run(tmp_path / "run", tmp_path / "src", CLASSES, make_images())
    export_dataset(store, tmp_path / "voc", "voc", ExportOptions.build())
    original = stored_labels(store)
    store.close()
    assert detect_format(tmp_path / "voc") == "voc"
    summary = import_dataset(tmp_path / "voc", tmp_path / "gt")
    assert summary.failed == 0 and summary.images == len(original)
    with open_store(tmp_path / "gt", create=False) as gt:
        assert gt.ontology.names == CLASSES  # labels.txt keeps the run's order
        imported = stored_labels(gt)
    manifest = json.loads((tmp_path / "voc" / "manifest.json").read_text())
    source_of = {str((tmp_path / "voc" / e["image"]).resolve()): e["source"] for e in manifest["images"]}
    assert sorted(source_of[path] for path in imported) == sorted(original)
    for path, back in imported.items():
        source = source_of[path]
        labels = original[source]
        assert back.class_ids.tolist() == labels.class_ids.tolist()
        width, height = Image.open(source).size
        # The export's integer convention: pixel edges [xmin - 1, xmax) of the rounded box.
        expected = [np.subtract(voc_box(b, width, height), (1, 1, 0, 0)) for b in labels.xyxy]
        np.testing.assert_array_equal(back.xyxy, np.reshape(expected, (-1, 4)))
        np.testing.assert_allclose(back.xyxy, labels.xyxy, atol=0.5)
        if labels.masks is not None:  # the polygons come back as the same masks
            for got, want in zip(back.masks, labels.masks):
                assert mask_iou(rle_to_mask(got), rle_to_mask(want)) > 0.97


def test_xml_beside_images_labelimg_style(tmp_path):
    """labelImg: XMLs next to the images, an absolute <path> from another machine, float coordinates."""
    _image(tmp_path / "a.jpg", (100, 80))
    _image(tmp_path / "b.png", (60, 40))
    _xml(tmp_path / "a.xml", "a.jpg", (100, 80),
         [("dog", (11, 21, 30, 40), False), ("cat", (50.5, 1, 200, 80), True),  # clipped to the image
          ("dog", (150, 90, 160, 95), False)],  # wholly outside: left out
         extra="<path>C:\\Users\\someone\\a.jpg</path>")
    _xml(tmp_path / "b.xml", "/elsewhere/b.png", (0, 0), [("cat", (1, 1, 10, 10), True)])  # size 0: not given
    dataset = load_dataset(tmp_path)  # a folder of XMLs is VOC
    assert dataset.format == "voc" and dataset.classes == ["dog", "cat"]  # first seen
    assert dataset.skipped_invalid == 1 and dataset.notes == [
        "kept 2 objects marked difficult (VOC's evaluation ignores them; here they count like the others)"]
    a, b = dataset.images
    assert a.path.endswith("a.jpg") and b.path.endswith("b.png")
    np.testing.assert_array_equal(a.labels.xyxy, [[10, 20, 30, 40], [49.5, 0, 100, 80]])
    assert a.labels.class_ids.tolist() == [0, 1] and a.labels.masks is None
    np.testing.assert_array_equal(b.labels.xyxy, [[0, 0, 10, 10]])


def test_images_folder_and_missing_images(tmp_path):
    _image(tmp_path / "pics" / "x.jpg", (30, 20))
    _xml(tmp_path / "Annotations" / "x.xml", "x.jpg", (30, 20), [("a", (1, 1, 5, 5), False)])
    _xml(tmp_path / "Annotations" / "gone.xml", "gone.jpg", (30, 20), [])
    summary = import_dataset(tmp_path, tmp_path / "run")
    assert (summary.images, summary.failed) == (0, 2)  # not in JPEGImages/ nor beside the XML
    assert all("not found" in error and "--images" in error for _, error in summary.failures)
    summary = import_dataset(tmp_path, tmp_path / "run2", images_dir=tmp_path / "pics")
    assert (summary.images, summary.failed, summary.labels) == (1, 1, 1)
    assert "'gone.jpg' not found" in summary.failures[0][1]


def test_size_policy_turns_stored_frames_and_fails_other_copies(tmp_path):
    """EXIF orientation 6: stored 100x60, shown 60x100."""
    for name in ("raw", "oriented", "other"):
        _image(tmp_path / "JPEGImages" / f"{name}.jpg", (100, 60), orientation=6)
    box = [("a", (11, 6, 30, 25), False)]  # pixel edges (10, 5, 30, 25)
    _xml(tmp_path / "Annotations" / "raw.xml", "raw.jpg", (100, 60), box)  # the stored frame
    _xml(tmp_path / "Annotations" / "oriented.xml", "oriented.jpg", (60, 100), box)
    _xml(tmp_path / "Annotations" / "other.xml", "other.jpg", (50, 50), box)
    dataset = load_dataset(tmp_path)
    raw, oriented, other = sorted(dataset.images, key=lambda i: ["raw", "oriented", "other"].index(Path(i.path).stem))
    assert raw.labels.xyxy.tolist() == [[35.0, 10.0, 55.0, 30.0]]  # (x, y) -> (H - y, x), H = 60
    assert oriented.labels.xyxy.tolist() == [[10.0, 5.0, 30.0, 25.0]]
    assert "VOC <size> says 50x50 but the image is 60x100" in other.error and "other.xml" in other.error


@pytest.mark.parametrize(
    "content, message",
    [
        ("<annotation><object>", "is not valid XML"),  # truncated
        ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx"><!ENTITY y "&x;&x;">]><annotation>&y;</annotation>',
         "DOCTYPE and ENTITY declarations are not allowed"),  # an entity bomb
        ('<!DOCTYPE a SYSTEM "file:///etc/passwd"><annotation/>', "not allowed"),  # an external reference
        ("<doc/>", "not a VOC annotation"),  # another XML document
        ("<annotation><object><bndbox/></object></annotation>", "object 1 has no <name>"),
        ("<annotation><object><name>a</name><bndbox><xmin>one</xmin></bndbox></object></annotation>",
         "object 1 (a): <xmin> 'one' is not a number"),
        ("<annotation><size><width>10.5</width><height>3</height></size></annotation>", "not whole pixels"),
    ],
)
def test_broken_xml_is_a_one_line_error_naming_the_file(tmp_path, content, message):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "bad.xml").write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        load_dataset(tmp_path, fmt="voc")
    assert "bad.xml" in str(caught.value) and "\n" not in str(caught.value)


def test_a_folder_without_annotations_or_classes_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="holds no .xml annotation files"):
        load_dataset(tmp_path, fmt="voc")
    _xml(tmp_path / "a.xml", "a.jpg", (10, 10), [])
    with pytest.raises(ConfigError, match="no <object> in any annotation and no labels.txt"):
        load_dataset(tmp_path, fmt="voc")
