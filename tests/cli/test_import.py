"""``autolabel import`` in-process: COCO, YOLO, VOC and Label Studio in, ground-truth runs out, one-line errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from autolabel.cli import main
from autolabel.store import open_store
from autolabel.testing.synthetic import CLASSES, detection_images, make_run


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture()
def exported(tmp_path):
    store = make_run(tmp_path / "run", tmp_path / "src", CLASSES, detection_images())
    store.close()
    for fmt in ("coco", "yolo", "voc", "labelstudio"):
        result = _invoke("export", tmp_path / "run", "--format", fmt, "--out", tmp_path / fmt)
        assert result.exit_code == 0, result.output
    return tmp_path


@pytest.mark.parametrize(
    "source, extra",
    [
        ("coco/coco_export.json", []),  # format from the suffix, images found in images/
        ("yolo/data.yaml", []),  # a data.yaml
        ("yolo", ["--format", "yolo"]),  # the dataset folder
        ("coco/coco_export.json", ["--images", "coco/images"]),  # an explicit image folder
        ("voc", []),  # a VOC folder (Annotations/, JPEGImages/)
        ("voc", ["--format", "voc", "--images", "voc/JPEGImages"]),
    ],
)
def test_import_reports_and_stores_ground_truth(exported, source, extra):
    args = [exported / a if "/" in a else a for a in extra]
    result = _invoke("import", exported / source, "--out", exported / "gt", *args)
    assert result.exit_code == 0, result.output
    assert "imported 5 images, 6 labels" in result.output
    assert "car: 4" in result.output and "person: 2" in result.output
    with open_store(exported / "gt", create=False) as store:
        assert store.config["mode"] == "import" and store.ontology.names == CLASSES
        assert all(r.reviewed for r in store.images())


def test_label_studio_tasks_report_what_was_skipped(exported):
    """Our export's unreviewed images carry predictions only: not ground truth."""
    result = _invoke("import", exported / "labelstudio" / "tasks.json", "--out", exported / "gt")
    assert result.exit_code == 0, result.output
    assert "imported 1 images, 1 labels" in result.output  # the one human label
    assert "skipped 4 tasks without a submitted annotation" in result.output


def test_help_and_errors(exported, tmp_path):
    help_text = _invoke("import", "--help").output
    assert "Examples" in help_text and "[coco|yolo|voc|labelstudio]" in help_text
    (tmp_path / "bad.json").write_text("{}")
    result = _invoke("import", tmp_path / "bad.json", "--out", tmp_path / "gt")
    assert result.exit_code == 1 and "is not a COCO file" in result.output
    assert len(result.output.strip().splitlines()) == 1
    (tmp_path / "x.txt").write_text("")
    result = _invoke("import", tmp_path / "x.txt", "--out", tmp_path / "gt2")
    assert result.exit_code == 1 and "cannot tell the format" in result.output
    (tmp_path / "bad-voc" / "Annotations").mkdir(parents=True)
    (tmp_path / "bad-voc" / "Annotations" / "bomb.xml").write_text(
        '<!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]><annotation>&y;</annotation>')
    result = _invoke("import", tmp_path / "bad-voc", "--out", tmp_path / "gt3")
    assert result.exit_code == 1 and "bomb.xml: DOCTYPE and ENTITY declarations are not allowed" in result.output
    assert len(result.output.strip().splitlines()) == 1
    (tmp_path / "tasks.json").write_text('[{"id": 3}]')
    result = _invoke("import", tmp_path / "tasks.json", "--out", tmp_path / "gt4")
    assert result.exit_code == 1 and "task 0 is not a Label Studio task" in result.output
    assert len(result.output.strip().splitlines()) == 1
    # Importing into a labelling run's folder is refused (a run holds one configuration).
    result = _invoke("import", exported / "coco" / "coco_export.json", "--out", exported / "run")
    assert result.exit_code == 1 and "another configuration" in result.output


def test_a_truncated_rle_is_a_one_line_error(exported, tmp_path):
    """pycocotools would read past a mask whose runs stop short; the reader refuses it first."""
    import json

    path = exported / "coco" / "coco_export.json"
    doc = json.loads(path.read_text())
    ann = doc["annotations"][0]
    width, height = next((im["width"], im["height"]) for im in doc["images"] if im["id"] == ann["image_id"])
    ann["segmentation"] = {"size": [height, width], "counts": "0" * 3}  # three zero runs: 0 pixels
    path.write_text(json.dumps(doc))
    result = _invoke("import", path, "--out", tmp_path / "gt")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert f"annotation {ann['id']}" in result.output and "RLE counts cover 0 pixels" in result.output
