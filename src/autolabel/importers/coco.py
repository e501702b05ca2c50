"""Read a COCO detection/instance-segmentation file with its images: the one COCO reader
(``import``, ``eval --gt`` and fine-tuning).

Categories become classes in id order. ``bbox`` becomes ``xyxy`` (clipped to the image; an empty box
takes its mask's box); segmentations become checked COCO RLEs (``importers.segmentation``); crowd
annotations go to ``DatasetImage.crowd``. Images are looked up under ``images_dir`` or next to the
JSON, in ``images/`` beside it, or in ``../images/<split>/`` for ``annotations/instances_<split>.json``.

Size policy: COCO ``width``/``height`` should be the EXIF-oriented size, and labels are then taken
as they are. When they equal the *stored* size of a file whose orientation swaps the sides (5-8),
the labels were drawn on the stored pixels and are turned. Any other mismatch fails the image
rather than guessing.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from autolabel.detections import Detections
from autolabel.importers.dataset import (Dataset, DatasetImage, ImportFormatError, declared_frame, human_labels,
                                         orient_labels, probe_images, read_json, safe_join)
from autolabel.importers.segmentation import SegmentationError, segmentation_rle


def _load_json(path: Path) -> dict:
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise ImportFormatError(f"{path} is not a COCO file: it needs 'images' and 'categories' lists")
    if not isinstance(data.get("annotations", []), list):
        raise ImportFormatError(f"{path}: 'annotations' must be a list")
    return data


def image_roots(json_path: Path, images_dir: str | Path | None) -> list[Path]:
    """Folders an image's ``file_name`` may be relative to, most likely first."""
    if images_dir is not None:
        return [Path(images_dir).resolve()]
    parent = json_path.resolve().parent
    roots = [parent, parent / "images"]
    match = re.fullmatch(r"instances_(.+)\.json", json_path.name)
    if match:
        roots.append(parent.parent / "images" / match.group(1))
    return roots


def from_coco(annotations: list[dict], width: int, height: int, class_index: dict[int, int],
              where: str = "") -> Detections:
    """COCO annotations of one ``width x height`` image -> human labels in its pixels (crowd flags
    not looked at). ``class_index`` maps category ids to class ids. Annotations without a usable box
    or mask, or wholly outside the image, are left out; a broken one raises ``ImportFormatError``."""
    from autolabel.geometry import rle_area, rle_to_xyxy

    boxes, class_ids, masks = [], [], []
    for ann in annotations:
        what = f"{where}annotation {ann.get('id', '?')}"
        try:
            rle = segmentation_rle(ann.get("segmentation"), height, width)
        except (SegmentationError, TypeError) as exc:
            raise ImportFormatError(f"{what}: invalid segmentation ({exc})") from None
        bbox = ann.get("bbox")
        if isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox) \
                and bbox[2] > 0 and bbox[3] > 0:
            x, y, w, h = map(float, bbox)
            xyxy = np.array([x, y, x + w, y + h])
        elif rle is not None and rle_area(rle) > 0:
            xyxy = rle_to_xyxy(rle)
        else:
            continue
        if not np.isfinite(xyxy).all():
            raise ImportFormatError(f"{what}: bbox {bbox} is not finite")
        xyxy = np.clip(xyxy, 0, [width, height, width, height])
        if xyxy[2] > xyxy[0] and xyxy[3] > xyxy[1]:  # else wholly outside the image
            boxes.append(xyxy)
            class_ids.append(class_index[int(ann["category_id"])])
            masks.append(rle)
    return human_labels(np.array(boxes).reshape(-1, 4), class_ids, masks)


def _read_categories(data: dict, json_path: Path) -> dict[int, str]:
    categories = sorted(data["categories"], key=lambda c: c.get("id", 0) if isinstance(c, dict) else 0)
    name_of: dict[int, str] = {}
    for cat in categories:
        if not isinstance(cat, dict) or "id" not in cat or not str(cat.get("name", "")).strip():
            raise ImportFormatError(f"{json_path}: every category needs an 'id' and a 'name', got {cat!r}")
        if cat["name"] in name_of.values():
            raise ImportFormatError(f"{json_path}: category name {cat['name']!r} is used twice")
        name_of[int(cat["id"])] = str(cat["name"])
    return name_of


def _annotations_by_image(data: dict, json_path: Path, image_ids, category_ids) -> dict[int, list[dict]]:
    by_image: dict[int, list[dict]] = {}
    for index, ann in enumerate(data.get("annotations", [])):
        where = f"{json_path}: annotation {ann.get('id', index) if isinstance(ann, dict) else index}"
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
            raise ImportFormatError(f"{where} needs 'image_id' and 'category_id'")
        image_id, cat_id = int(ann["image_id"]), int(ann["category_id"])
        if image_id not in image_ids:
            raise ImportFormatError(f"{where} refers to image {image_id}, which is not in 'images'")
        if cat_id not in category_ids:
            raise ImportFormatError(f"{where} refers to category {cat_id}, which is not in 'categories'")
        by_image.setdefault(image_id, []).append(ann)
    return by_image


def load_coco(json_path: str | Path, images_dir: str | Path | None = None, *, hash_files: bool = True) -> Dataset:
    """Parse a COCO file and probe its images (oriented size; SHA-256 with ``hash_files``)."""
    json_path = Path(json_path)
    data = _load_json(json_path)
    name_of = _read_categories(data, json_path)
    class_index = {cat_id: i for i, cat_id in enumerate(name_of)}

    roots = image_roots(json_path, images_dir)
    coco_images: dict[int, dict] = {}
    paths: dict[int, Path] = {}
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise ImportFormatError(f"{json_path}: every image needs an 'id' and a 'file_name', got {im!r}")
        candidates = [safe_join(root, str(im["file_name"]), str(json_path)) for root in roots]
        paths[int(im["id"])] = next((c for c in candidates if c.is_file()), candidates[0])
        coco_images[int(im["id"])] = im
    if len(set(paths.values())) != len(paths):
        raise ImportFormatError(f"{json_path}: two image entries name the same file")
    by_image = _annotations_by_image(data, json_path, coco_images, class_index)

    ids = sorted(paths, key=lambda i: str(paths[i]))
    dataset = Dataset("coco", str(json_path.resolve()), list(name_of.values()),
                      probe_images([paths[i] for i in ids], hash_files))
    for image_id, image in zip(ids, dataset.images):
        if image.error:
            continue
        im = coco_images[image_id]
        declared = (int(im.get("width") or image.width), int(im.get("height") or image.height))
        try:
            orientation = declared_frame(image, declared, "COCO")
        except ImportFormatError as exc:
            image.error = str(exc)
            continue
        where = f"{json_path}: image {im['file_name']!r}, "
        anns = by_image.get(image_id, [])
        crowd = [a for a in anns if a.get("iscrowd")]
        plain = [a for a in anns if not a.get("iscrowd")]
        image.labels = orient_labels(from_coco(plain, *declared, class_index, where), orientation, declared)
        image.crowd = orient_labels(from_coco(crowd, *declared, class_index, where), orientation, declared)
        dataset.skipped_invalid += len(anns) - len(image.labels) - len(image.crowd)
    return dataset
