"""``autolabel eval`` in-process: table, report files, and the calibrated ontology that ``label`` and
``export`` accept (the hand-label -> calibrate -> relabel loop)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from autolabel.cli import main
from autolabel.ontology import Ontology
from autolabel.testing.synthetic import Label, SyntheticImage, make_run

SIZE = (160, 120)


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture()
def run_and_gt(tmp_path):
    """A run with scored car/person boxes, and its hand-labelled ground truth imported from COCO."""
    truth = {f"img{i}.jpg": [("car", (10 + 5 * i, 10, 60 + 5 * i, 50)), ("person", (90, 30, 130, 110))]
             for i in range(3)}
    images = []
    for name, labels in truth.items():
        preds = [Label(c, box, 0.9 - 0.1 * k) for k, (c, box) in enumerate(labels)]
        preds.append(Label("car", (100, 5, 150, 25), 0.3))  # a wrong, low-scoring car
        images.append(SyntheticImage(name, SIZE, preds))
    store = make_run(tmp_path / "run", tmp_path / "photos", ["car", "person"], images)
    store.close()
    coco = {"images": [{"id": i + 1, "file_name": n, "width": SIZE[0], "height": SIZE[1]} for i, n in enumerate(truth)],
            "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}],
            "annotations": [{"id": 10 * i + k, "image_id": i + 1, "category_id": 2 if c == "car" else 1,
                             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "iscrowd": 0}
                            for i, labels in enumerate(truth.values()) for k, (c, b) in enumerate(labels)]}
    (tmp_path / "photos" / "gt.json").write_text(json.dumps(coco))
    return tmp_path / "run", tmp_path / "photos" / "gt.json"


def test_eval_prints_the_table_and_writes_the_report(run_and_gt):
    run, gt = run_and_gt
    result = _invoke("eval", run, "--gt", gt, "--target-precision", "0.9")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["class", "gt", "pred", "AP"]
    assert any(line.startswith("car ") for line in lines) and any(line.startswith("all ") for line in lines)
    assert "mAP@[.5:.95] 1.000" in result.output  # the wrong car scores lowest: AP stays 1
    for name in ("report.html", "metrics.json", "thresholds.yaml"):
        assert (run / "eval" / name).is_file()
    calibrated = Ontology.from_file(run / "eval" / "thresholds.yaml")
    car = next(c for c in calibrated.classes if c.name == "car")
    assert car.threshold == pytest.approx((0.9 + 0.3) / 2)  # keeps the three right cars, drops the wrong ones


def test_calibrated_thresholds_feed_export_and_label(run_and_gt, tmp_path, tiny_owlv2):
    run, gt = run_and_gt
    assert _invoke("eval", run, "--gt", gt, "--out", tmp_path / "eval").exit_code == 0
    thresholds = tmp_path / "eval" / "thresholds.yaml"
    exported = _invoke("export", run, "--out", tmp_path / "out", "--thresholds", thresholds)
    assert exported.exit_code == 0, exported.output
    coco = json.loads((tmp_path / "out" / "coco_export.json").read_text())
    assert len(coco["annotations"]) == 6  # the three wrong cars are gone
    labelled = _invoke("label", run.parent / "photos", "--out", tmp_path / "relabel", "--ontology", thresholds,
                       "--model", tiny_owlv2, "--quiet")
    assert labelled.exit_code == 0, labelled.output
    from autolabel.store import open_store

    with open_store(tmp_path / "relabel", create=False) as store:
        thresholds_used = {c.name: c.threshold for c in store.ontology.classes}
    assert thresholds_used["car"] == pytest.approx(0.6) and thresholds_used["person"] is not None


def test_no_report_and_errors(run_and_gt, tmp_path):
    run, gt = run_and_gt
    result = _invoke("eval", run, "--gt", gt, "--no-report")
    assert result.exit_code == 0 and not (run / "eval").exists()
    bad = _invoke("eval", run, "--gt", gt, "--iou", "1.5")
    assert bad.exit_code == 1 and "--iou must be in (0, 1]" in bad.output
    empty = tmp_path / "empty-run"
    from autolabel.store import open_store

    with open_store(empty) as store:
        store.bind_config({"mode": "detect", "ontology": {"classes": [{"name": "car"}]}, "detect": {}})
    no_gt = _invoke("eval", run, "--gt", empty)
    assert no_gt.exit_code == 1 and "no reviewed images" in no_gt.output


def test_a_truncated_rle_in_the_ground_truth_is_a_one_line_error(run_and_gt):
    """It used to reach COCOeval, which spins for minutes on it ignoring Ctrl-C."""
    from autolabel.geometry import box_to_rle

    run, gt = run_and_gt
    doc = json.loads(gt.read_text())
    rle = box_to_rle((10, 10, 60, 50), SIZE[1], SIZE[0])
    for ann in doc["annotations"]:
        ann["segmentation"] = rle
    doc["annotations"][1]["segmentation"] = {"size": rle["size"], "counts": rle["counts"][:-1]}
    gt.write_text(json.dumps(doc))
    result = _invoke("eval", run, "--gt", gt, "--no-report")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "annotation 1" in result.output and "img0.jpg" in result.output and "RLE counts" in result.output
