"""``import`` of Ultralytics YOLO datasets: data.yaml forms, label rows, negatives, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autolabel.errors import ConfigError
from autolabel.geometry import rle_to_mask
from autolabel.importers import import_dataset, load_dataset
from autolabel.store import open_store


def _image(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 200, 30)).save(path)


def _dataset(root: Path, yaml_text: str, labels: dict[str, str]):
    _image(root / "images" / "train" / "a.jpg", (200, 100))
    _image(root / "images" / "train" / "nested" / "b.png", (50, 50))
    _image(root / "images" / "val" / "c.jpg", (80, 40))
    for rel, text in labels.items():
        (root / "labels" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "labels" / rel).write_text(text)
    (root / "data.yaml").write_text(yaml_text)
    return root / "data.yaml"


LABELS = {
    "train/a.txt": "0 0.5 0.5 0.2 0.4\n1 0.1 0.1 0.3 0.1 0.3 0.5 0.1 0.5\n",  # a box and a polygon
    "train/nested/b.txt": "\n",  # empty: a negative
    # val/c.txt is missing: a negative too
}


@pytest.mark.parametrize(
    "yaml_text",
    [
        "train: images/train\nval: images/val\nnames: [car, person]\n",  # names as a list
        "path: .\ntrain: images/train\nval: images/val\nnames:\n  0: car\n  1: person\n",  # {id: name}, path
        "train: [images/train]\nval: val.txt\nnames: {1: person, 0: car}\n",  # a list and a .txt file list
    ],
)
def test_yaml_forms_and_rows(tmp_path, yaml_text):
    (tmp_path / "val.txt").write_text("./images/val/c.jpg\n")
    data_yaml = _dataset(tmp_path, yaml_text, LABELS)
    summary = import_dataset(tmp_path, tmp_path / "run")  # the folder holding data.yaml works too
    assert (summary.images, summary.failed, summary.labels) == (3, 0, 2)
    with open_store(tmp_path / "run", create=False) as store:
        assert store.ontology.names == ["car", "person"]
        assert store.config["source"] == str(data_yaml.resolve()) and store.config["masks"] is True
        records = {Path(r.path).name: r for r in store.images()}
        assert set(records) == {"a.jpg", "b.png", "c.jpg"}
        labels = store.labels(records["a.jpg"].id)
        car, person = sorted(range(len(labels)), key=lambda i: store.ontology.names[labels.class_ids[i]])
        np.testing.assert_allclose(labels.xyxy[car], (80, 30, 120, 70))  # 0.5 0.5 0.2 0.4 of 200x100
        assert labels.masks[car] is None
        np.testing.assert_allclose(labels.xyxy[person], (20, 10, 60, 50))  # the polygon's extent
        assert rle_to_mask(labels.masks[person]).sum() == 40 * 40
        assert len(store.labels(records["b.png"].id)) == 0 and len(store.labels(records["c.jpg"].id)) == 0


@pytest.mark.parametrize(
    "row, message",
    [
        ("2 0.5 0.5 0.1 0.1", "class id 2 is not one of 0..1"),  # unknown class
        ("0 0.5 0.5 0.1", "got 4 values"),  # too few values
        ("0 0.1 0.1 0.2 0.2 0.3 0.3 0.4", "got 8 values"),  # odd number of polygon coordinates
        ("car 0.5 0.5 0.1 0.1", "not a list of numbers"),  # a name instead of an id
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path, row, message):
    _dataset(tmp_path, "train: images/train\nnames: [car, person]\n", {"train/a.txt": "0 0.5 0.5 0.1 0.1\n" + row})
    with pytest.raises(ConfigError, match=message) as info:
        load_dataset(tmp_path / "data.yaml")
    assert "a.txt:2" in str(info.value)


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("train: images/train\n", "'names' must be"),  # no class names
        ("train: images/train\nnames: {0: a, 2: b}\n", "without gaps"),  # class ids with a gap
        ("train: images/train\nnames: [a]\nkpt_shape: [17, 3]\n", "pose datasets"),  # keypoints
        ("train: nowhere\nnames: [a]\n", "neither a folder"),  # a split that does not exist
        ("names: [a]\n", "no images found"),  # no split at all
    ],
)
def test_bad_yaml_is_a_one_line_error(tmp_path, yaml_text, message):
    _dataset(tmp_path, yaml_text, {})
    with pytest.raises(ConfigError, match=message):
        load_dataset(tmp_path / "data.yaml")


def test_a_folder_without_yaml_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no data.yaml"):
        load_dataset(tmp_path / "empty", fmt="yolo")
