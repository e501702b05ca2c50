"""Read an Ultralytics YOLO detection/segmentation dataset into a :class:`Dataset`.

The source is a ``data.yaml`` (or a folder holding one) with ``names`` (a list, or ``{id: name}``)
and split entries (``train``, ``val``, ``test``...): each a folder of images (searched recursively), a
``.txt`` file listing image paths, or a list of those, relative to ``path`` (itself relative to the
YAML's folder) or to the YAML's folder. As in Ultralytics, an image's label file is found by
replacing the last ``/images/`` in its path with ``/labels/`` and its suffix with ``.txt``; a missing
or empty label file means an image without objects.

Rows are ``class cx cy w h`` (a box) or ``class x1 y1 x2 y2 ...`` (a polygon, at least 3 points),
normalised by the image's EXIF-oriented width and height (Ultralytics applies the orientation too).
A polygon becomes a COCO RLE (pycocotools rasterization) and its box the polygon's extent. Pose
datasets (``kpt_shape``) are refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from autolabel.detections import Detections
from autolabel.importers.dataset import Dataset, ImportFormatError, human_labels, probe_images
from autolabel.images import IMAGE_EXTENSIONS

SPLIT_KEYS = ("train", "val", "test", "minival")


def find_data_yaml(source: str | Path) -> Path:
    source = Path(source)
    if source.is_file():
        return source
    if source.is_dir():
        for name in ("data.yaml", "data.yml", "dataset.yaml"):
            if (source / name).is_file():
                return source / name
        yamls = sorted(source.glob("*.yaml")) + sorted(source.glob("*.yml"))
        if len(yamls) == 1:
            return yamls[0]
        raise ImportFormatError(f"{source} holds no data.yaml; pass the dataset's YAML file")
    raise ImportFormatError(f"{source} does not exist")


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ImportFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ImportFormatError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ImportFormatError(f"{path}: expected a mapping with 'names' and split folders")
    return data


def class_names(data: dict, path: Path) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise ImportFormatError(f"{path}: 'names' keys must be class ids 0..N-1") from None
        if keys != list(range(len(keys))):
            raise ImportFormatError(f"{path}: 'names' must cover class ids 0..{len(keys) - 1} without gaps")
        by_id = {int(k): v for k, v in names.items()}
        names = [by_id[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise ImportFormatError(f"{path}: 'names' must be a non-empty list or {{id: name}} mapping")
    return [str(n) for n in names]


def _images_in(entry: Path) -> list[Path]:
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                      and not any(part.startswith(".") for part in p.relative_to(entry).parts))
    if entry.is_file() and entry.suffix == ".txt":
        out = []
        for line in entry.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                out.append(Path(line) if os.path.isabs(line) else (entry.parent / line))
        return out
    raise ImportFormatError(f"split entry {entry} is neither a folder of images nor a .txt list")


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` becomes ``/labels/``, the suffix ``.txt``."""
    text = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in text:
        text = sb.join(text.rsplit(sa, 1))
    return Path(text).with_suffix(".txt")


def from_yolo(rows: list[str], width: int, height: int, num_classes: int, where: str = "") -> Detections:
    """YOLO label rows of one ``width x height`` image -> human labels in its oriented pixels; boxes
    are clipped to the image and dropped when nothing is left. A malformed row raises ``ImportFormatError``."""
    from autolabel.geometry import polygons_to_rle

    boxes, class_ids, masks = [], [], []
    for number, line in enumerate(rows, start=1):
        values = line.split()
        if not values:
            continue
        at = f"{where}:{number}"
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            raise ImportFormatError(f"{at}: not a list of numbers: {line.strip()!r}") from None
        class_id = numbers[0]
        if not class_id.is_integer() or not 0 <= class_id < num_classes:
            raise ImportFormatError(f"{at}: class id {values[0]} is not one of 0..{num_classes - 1}")
        coords = np.asarray(numbers[1:], dtype=np.float64)
        if not np.isfinite(coords).all():
            raise ImportFormatError(f"{at}: coordinates must be finite")
        if coords.size == 4:
            cx, cy, w, h = coords * [width, height, width, height]
            xyxy = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            rle = None
        elif coords.size >= 6 and coords.size % 2 == 0:
            points = coords.reshape(-1, 2) * [width, height]
            xyxy = (*points.min(axis=0), *points.max(axis=0))
            rle = polygons_to_rle([points.ravel().tolist()], height, width)
        else:
            raise ImportFormatError(f"{at}: expected 'class cx cy w h' or 'class x1 y1 x2 y2 x3 y3 ...', "
                                    f"got {len(values)} values")
        xyxy = np.clip(xyxy, 0, [width, height, width, height])
        if xyxy[2] > xyxy[0] and xyxy[3] > xyxy[1]:
            boxes.append(xyxy)
            class_ids.append(int(class_id))
            masks.append(rle)
    return human_labels(np.array(boxes).reshape(-1, 4), class_ids, masks)


def read_label_file(path: Path, num_classes: int, width: int, height: int) -> Detections:
    """The labels of one image from its label file; a missing file means no objects."""
    rows = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return from_yolo(rows, width, height, num_classes, str(path))


def load_yolo(source: str | Path) -> Dataset:
    """Parse a YOLO dataset and probe its images (oriented size, SHA-256). See the module docstring."""
    yaml_path = find_data_yaml(source).resolve()
    data = _read_yaml(yaml_path)
    if data.get("kpt_shape") is not None:
        raise ImportFormatError(f"{yaml_path}: pose datasets (kpt_shape) are not supported")
    names = class_names(data, yaml_path)
    root = Path(data["path"]) if data.get("path") else yaml_path.parent
    if not root.is_absolute():
        root = yaml_path.parent / root
    found: dict[Path, Path] = {}  # resolved path -> path as listed
    for key in (k for k in SPLIT_KEYS if data.get(k)):
        entries = data[key] if isinstance(data[key], list) else [data[key]]
        for entry in entries:
            for image in _images_in(Path(os.path.normpath(root / str(entry)))):
                found.setdefault(image.resolve(), Path(os.path.abspath(image)))
    if not found:
        raise ImportFormatError(f"{yaml_path}: no images found under its split entries "
                                f"({', '.join(k for k in SPLIT_KEYS if k in data) or 'none given'})")
    paths = sorted(found, key=str)
    images = probe_images(paths)
    for path, image in zip(paths, images):
        if not image.error:
            image.labels = read_label_file(label_path(found[path]), len(names), image.width, image.height)
    return Dataset("yolo", str(yaml_path), names, images)
