"""``autolabel relabel`` through click: a run re-prompted into a new folder, its rate printed, and
one-line errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from autolabel.cli.relabel import relabel
from autolabel.labeling import label_into_store
from autolabel.ontology import Ontology
from autolabel.pipeline import DetectConfig, Labeler
from autolabel.store import open_store
from autolabel.testing.photos import synthetic_photo


@pytest.fixture(scope="module")
def runs(tiny_owlv2, tmp_path_factory):
    """Two runs of the same photos: one with kept candidates (the default for OWLv2), one without."""
    root = tmp_path_factory.mktemp("relabel-cli")
    (root / "photos").mkdir()
    for i in range(3):
        synthetic_photo(120, 90, seed=i).save(root / "photos" / f"{i}.jpg")
    labeler = Labeler(Ontology.from_prompts(["car"]), model=str(tiny_owlv2), config=DetectConfig(threshold=0.0))
    for name, keep in (("kept", None), ("plain", 0)):
        with open_store(root / name) as store:
            label_into_store(labeler, [root / "photos"], store, keep_candidates=keep)
    return root


def test_relabel_writes_a_new_run_and_prints_its_rate(runs, tmp_path):
    result = CliRunner().invoke(relabel, [str(runs / "kept"), "--out", str(tmp_path / "new"), "--prompt", "car",
                                          "--prompt", "dog", "--threshold", "0.0", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "3 relabelled" in result.output and "img/s" in result.output and "dog:" in result.output
    with open_store(tmp_path / "new", create=False) as store:
        assert store.counts()["done"] == 3
        assert store.ontology.names == ["car", "dog"]


def test_a_run_without_candidates_gets_one_line_naming_the_option(runs, tmp_path):
    result = CliRunner().invoke(relabel, [str(runs / "plain"), "--out", str(tmp_path / "new"), "--prompt", "car"])
    assert result.exit_code == 1
    assert "--keep-candidates" in result.output and "Traceback" not in result.output


def test_negative_prompts_and_exemplars_reach_the_relabel(runs, tmp_path):
    import json

    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image": str(runs / "photos" / "0.jpg"), "box": [5, 5, 60, 50], "class": "widget"}]))
    result = CliRunner().invoke(relabel, [str(runs / "kept"), "--out", str(tmp_path / "new"), "--prompt",
                                          "car=car;not=toy car", "--exemplars", str(boxes), "--threshold", "0.0",
                                          "--quiet"])
    assert result.exit_code == 0, result.output
    with open_store(tmp_path / "new", create=False) as store:
        classes = store.ontology.classes
        assert [c.name for c in classes] == ["car", "widget"]
        assert classes[0].negatives == ("toy car",) and len(classes[1].exemplars) == 1


def test_classes_are_required(runs, tmp_path):
    result = CliRunner().invoke(relabel, [str(runs / "kept"), "--out", str(tmp_path / "new")])
    assert result.exit_code == 1 and "--prompt" in result.output
